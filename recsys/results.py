"""Writing benchmark and evaluation results, each with the machine that produced them."""

import json
from pathlib import Path

from recsys.machine import machine_record


def write_json(path: str | Path | None, payload: dict, machine: dict | None = None) -> None:
    """Write `payload` as indented JSON to `path` (parent folders created); nothing when `path` is None.

    The file always names its machine under "machine": `machine` (a `recsys.machine.machine_record()`
    taken when the measurement started, with the dtype and threads it used), else the payload's own
    "machine", else a record taken now and marked so (its load average is the one at the end).
    """
    if path:
        record = machine or payload.get("machine") or {**machine_record(), "taken": "when the result was written"}
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps({**payload, "machine": record}, indent=2) + "\n")
