"""ZeroGPU on this CPU: the real `spaces` package in its ZeroGPU mode (`sitecustomize.py`, put on PYTHONPATH) and a
loopback device API (`device_api.py`), for the tests and the benchmarks."""

from __future__ import annotations

import os
from pathlib import Path

HARNESS = Path(__file__).resolve().parent
REPO_ROOT = HARNESS.parents[1]


def zerogpu_env(device_api_url: str) -> dict[str, str]:
    """The environment variables that start `python app.py` as on a ZeroGPU Space, with this harness."""
    return {"SPACES_ZERO_GPU": "true", "SPACES_ZERO_DEVICE_API_URL": device_api_url,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(HARNESS), str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
