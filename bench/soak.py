"""A Space that runs for weeks: simulated class traffic on loopback for a long while, watching what grows.

`python bench/soak.py --json bench/results/soak.json` (72 minutes; `--minutes 10` for a shorter look)

`--students` sessions (`common.PageSession`) loop without pause: load a test user, Recommend, type a search; one race
a minute. Every `--every` seconds it samples the app's process group (the server and anything it forked): resident
memory (VmRSS summed over the group), open file descriptors, and the size of its temporary files (Gradio's copies and
the offered CSVs: the app's TMPDIR and GRADIO_TEMP_DIR point at one folder), with Recommend's p95 over that interval.
The table compares the first interval with the last; a quantity that keeps growing through the run is what to fix.

Bounded, here: levels off while the traffic goes on. Memory fills as the shared results and the allocator's arenas do.
The temporary files grow until the first offered files are an hour old (`recsys.demo.downloads.MAX_AGE_S`) and are
pruned, then stay at about the traffic's rate times an hour (a busier Space levels off higher): a run shorter than
about 65 minutes cannot show that plateau, hence the default of 72.
"""

from __future__ import annotations

import argparse
import os
import random
import threading
import time
from pathlib import Path

from app_latency import percentile, served_weights
from common import PageSession, machine_summary, serving

from recsys.data.test_users import load_test_users
from recsys.demo.downloads import MAX_AGE_S
from recsys.machine import machine_record
from recsys.results import write_json
from recsys.retriever.checkpoint import DEFAULT_CHECKPOINT

SEARCHES = ("matrix", "star", "love", "the", "god", "toy", "alien", "day")
DEFAULT_MINUTES = 72.0


def group_pids(pid: int) -> list[int]:
    """`pid` and every process it forked, recursively (Linux /proc)."""
    pids, todo = [], [pid]
    while todo:
        current = todo.pop()
        pids.append(current)
        for task in Path(f"/proc/{current}/task").glob("*"):
            children = (task / "children").read_text().split() if (task / "children").exists() else []
            todo += [int(child) for child in children]
    return pids


def sample(pid: int, files: Path) -> dict:
    """Resident memory (MB) and open descriptors of the group, and its temporary files' size (MB)."""
    rss_kb, fds = 0, 0
    for member in group_pids(pid):
        try:
            status = Path(f"/proc/{member}/status").read_text()
            rss_kb += int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:")))
            fds += len(os.listdir(f"/proc/{member}/fd"))
        except (OSError, StopIteration):  # ended meanwhile
            continue
    size = sum(path.stat().st_size for path in files.rglob("*") if path.is_file() and not path.is_symlink())
    return {"rss_mb": round(rss_kb / 1024, 1), "open_fds": fds, "temp_mb": round(size / 1e6, 2)}


def student(url: str, users: list[int], stop: threading.Event, times: list[tuple[float, float]], errors: list[str],
            seed: int) -> None:
    """One session's loop until `stop`: a test user, Recommend (timed), a search."""
    rng = random.Random(seed)
    session = PageSession(url)
    weights = served_weights(session)
    while not stop.is_set():
        try:
            session.predict(str(rng.choice(users)), api_name="/load_test_user")
            began = time.perf_counter()
            summary = session.predict(*weights, False, False, False, api_name="/recommend")[0]
            times.append((time.monotonic(), time.perf_counter() - began))
            if "verbalizer ranking" not in summary:
                errors.append(summary[:200])
            session.predict(rng.choice(SEARCHES), api_name="/search")
        except RuntimeError as error:
            errors.append(str(error)[:200])


def racer(url: str, stop: threading.Event, errors: list[str]) -> None:
    """One race a minute, on a preset."""
    session = PageSession(url)
    weights = served_weights(session)
    session.predict("Sci-fi fan", api_name="/load_preset")
    while not stop.wait(60):
        try:
            session.predict(*weights, False, api_name="/race")
        except RuntimeError as error:
            errors.append(str(error)[:200])


def main(argv=None) -> dict:
    """Run the class for `--minutes`, sampling every `--every` seconds; print the table and write JSON."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=DEFAULT_MINUTES,
                        help=f"how long (default {DEFAULT_MINUTES:g}: the hour after which offered files are pruned, "
                             "and time to see them pruned)")
    parser.add_argument("--every", type=float, default=60.0, help="seconds between samples")
    parser.add_argument("--students", type=int, default=8)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    machine = machine_record()
    users = load_test_users(DEFAULT_CHECKPOINT).ids()
    started: dict = {}
    samples, times, errors = [], [], []
    with serving([], 300, started=started) as url:
        stop = threading.Event()
        threads = [threading.Thread(target=student, args=(url, users, stop, times, errors, seed), daemon=True)
                   for seed in range(args.students)] + [threading.Thread(target=racer, args=(url, stop, errors),
                                                                         daemon=True)]
        began = time.monotonic()
        samples.append({"t_s": 0.0, **sample(started["pid"], started["files"]), "recommend_p95_s": None})
        for thread in threads:
            thread.start()
        while time.monotonic() - began < args.minutes * 60:
            time.sleep(args.every)
            now = time.monotonic()
            window = [seconds for at, seconds in times if at > now - args.every]
            samples.append({"t_s": round(now - began, 1), **sample(started["pid"], started["files"]),
                            "recommends": len(window),
                            "recommend_p95_s": round(percentile(window, 95), 3) if window else None})
            print(samples[-1], flush=True)
        stop.set()
        for thread in threads:
            thread.join(timeout=120)
    first, last = samples[1], samples[-1]
    result = {"minutes": args.minutes, "students": args.students, "recommends": len(times), "errors": len(errors),
              "error_examples": errors[:5], "first": first, "last": last, "samples": samples}
    print(f"\n{len(times)} Recommends by {args.students} students in {args.minutes:g} min, {len(errors)} errors")
    if args.minutes * 60 < MAX_AGE_S + 5 * args.every:
        print(f"(shorter than the {MAX_AGE_S / 60:g} minutes an offered file is kept, and a few samples more: the "
              "temporary files are still growing toward their plateau, as memory may be)")
    print(f"{'':<16}{'RSS MB':>10}{'open fds':>10}{'temp MB':>10}{'p95 s':>8}")
    for name, row in (("first interval", first), ("last interval", last)):
        print(f"{name:<16}{row['rss_mb']:>10}{row['open_fds']:>10}{row['temp_mb']:>10}{row['recommend_p95_s']!s:>8}")
    print(machine_summary(machine))
    write_json(args.json, result, machine)
    return result


if __name__ == "__main__":
    main()
