"""The one error type the data layer raises for bad raw files."""


class DataFileError(ValueError):
    """A raw data file is missing or malformed; the message names the file and the line."""

    def __init__(self, path, message: str, line: int | None = None):
        where = f"{path}" if line is None else f"{path}, line {line}"
        super().__init__(f"{where}: {message}")
        self.path = path
        self.line = line
