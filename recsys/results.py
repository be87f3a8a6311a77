"""Writing benchmark and evaluation results."""

import json
from pathlib import Path


def write_json(path: str | Path | None, payload: dict) -> None:
    """Write `payload` as indented JSON to `path` (parent folders created); nothing when `path` is None."""
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(payload, indent=2) + "\n")
