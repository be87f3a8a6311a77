"""Files the page offers for download (the results' CSV), kept bounded for an app that runs for weeks.

Every Recommend, slider release and race offers a fresh CSV; one new folder for each would grow a Space's disk
without end. Here a file lives in a folder named by its content's hash (the same results asked again are the same
file, nothing new written), and folders unused for `max_age_s` are removed. Gradio copies each offered file into its
own cache (one copy per content); the app's `gr.Blocks(delete_cache=...)` removes those copies `max_age_s` after
they were made, so a link to results offered again near the end of that hour may stop working a minute later.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

from recsys.forking import renew_after_fork

MAX_AGE_S = 3600.0  # an offered file is kept this long after its last offer (the page's link works that long)
PRUNE_EVERY_S = 60.0  # old folders are looked for at most this often


class Downloads:
    """A folder of offered files, one sub-folder per content; thread-safe."""

    def __init__(self, root: str | Path | None = None, max_age_s: float = MAX_AGE_S):
        """`root`: where the files go (default: a fresh temporary folder, inside the folders Gradio serves from)."""
        self.root = Path(root) if root is not None else Path(tempfile.mkdtemp(prefix="llamarec-downloads-"))
        self.root.mkdir(parents=True, exist_ok=True)
        self.max_age_s = max_age_s
        self._lock = threading.Lock()  # a prune never removes a folder that a write is handing out
        self._pruned_at = 0.0
        renew_after_fork(self, Downloads._renew_lock)

    def _renew_lock(self) -> None:
        self._lock = threading.Lock()

    def write(self, name: str, data: bytes) -> Path:
        """The path of `data` saved as `name`: in the folder of its SHA-256, written once (atomically: a reader never
        sees half a file) and marked as used again on every later offer. Removes old folders first (`prune`)."""
        self.prune()
        folder = self.root / hashlib.sha256(data).hexdigest()[:24]
        path = folder / name
        with self._lock:
            if path.is_file():
                os.utime(folder)
            else:
                folder.mkdir(exist_ok=True)
                partial = folder / f".{name}.partial"
                partial.write_bytes(data)
                partial.replace(path)
        return path

    def prune(self, now: float | None = None, force: bool = False) -> int:
        """Remove the folders not offered for `max_age_s` seconds (at most once every PRUNE_EVERY_S unless `force`);
        returns how many were removed."""
        now = time.time() if now is None else now
        removed = 0
        with self._lock:
            if not force and now - self._pruned_at < PRUNE_EVERY_S:
                return 0
            self._pruned_at = now
            for folder in self.root.iterdir():
                try:
                    if now - folder.stat().st_mtime > self.max_age_s:
                        shutil.rmtree(folder)
                        removed += 1
                except OSError:  # removed meanwhile, or not ours to remove: never fails a download
                    continue
        return removed
