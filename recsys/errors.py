"""The one error a saved file that cannot be used raises, and the one way its message is written."""

from __future__ import annotations

import json
from pathlib import Path

from recsys.data.errors import one_line


class CheckpointError(RuntimeError):
    """A saved file (retriever checkpoint, ranker adapter, prior, co-watch counts, title choice) is missing or
    unusable; the message names the file and the command that re-creates it."""

    @classmethod
    def missing(cls, path: str | Path, command: str, what: str = "") -> CheckpointError:
        """`path` is absent (`what`, e.g. ": not an LRURec checkpoint", follows its name)."""
        return cls(f"{path} not found{what}. Create it with: {command}")

    @classmethod
    def corrupt(cls, path: str | Path, reason: BaseException | str, command: str) -> CheckpointError:
        """`path` exists but cannot be used, for `reason` (an exception's message is put on one line)."""
        text = one_line(reason) if isinstance(reason, BaseException) else reason
        return cls(f"{path} is corrupt ({text}). Re-create it with: {command}")


def read_json_object(path: str | Path, command: str) -> dict:
    """The JSON object saved in `path`. CheckpointError (naming `path` and `command`) when the file is missing, is
    not UTF-8 JSON, or holds something other than an object."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError.missing(path, command)
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, OSError) as error:  # ValueError covers bad JSON and bad UTF-8
        raise CheckpointError.corrupt(path, error, command) from error
    if not isinstance(saved, dict):
        raise CheckpointError.corrupt(path, "not a JSON object", command)
    return saved
