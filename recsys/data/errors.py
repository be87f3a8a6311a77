"""The one error type the data layer raises for bad raw files, and `one_line` for error messages."""


class DataFileError(ValueError):
    """A raw data file is missing or malformed; the message names the file and the line."""

    def __init__(self, path, message: str, line: int | None = None):
        where = f"{path}" if line is None else f"{path}, line {line}"
        super().__init__(f"{where}: {message}")
        self.path = path
        self.line = line


def one_line(error: BaseException, limit: int = 200) -> str:
    """An error's message on one line (its lines joined, whitespace collapsed), cut to `limit` characters."""
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= limit else text[:limit - 3].rstrip() + "..."
