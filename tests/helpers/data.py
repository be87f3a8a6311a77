"""Tests that read the full data sets: skipped, with the reason and the command that gets them, where they are not."""

from __future__ import annotations

import pytest

from recsys.data.sources import find_dataset_dir


def needs_data(*names: str) -> pytest.MarkDecorator:
    """Skip the test where the files of any of `names` are not found (`recsys.data.sources.find_dataset_dir`: a
    fresh clone has only what the repository commits)."""
    missing = []
    for name in names:
        try:
            find_dataset_dir(name)
        except FileNotFoundError:
            missing.append(name)
    commands = "; ".join(f"python -m recsys.data.download {name}" for name in missing)
    return pytest.mark.skipif(bool(missing), reason=f"needs the {', '.join(missing)} files, not found here: {commands}")
