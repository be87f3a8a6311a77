"""Offered files stay bounded: the same content is one file, and folders unused for the maximum age are removed."""

import os
import threading

from recsys.demo.downloads import Downloads


def test_the_same_content_is_one_file_and_other_content_another(tmp_path):
    downloads = Downloads(tmp_path)
    first = downloads.write("results.csv", b"a,b\n1,2\n")
    again = downloads.write("results.csv", b"a,b\n1,2\n")
    other = downloads.write("results.csv", b"a,b\n3,4\n")
    assert first == again and first != other and first.name == other.name == "results.csv"
    assert first.read_bytes() == b"a,b\n1,2\n" and other.read_bytes() == b"a,b\n3,4\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([first.parent.name, other.parent.name])
    assert not list(tmp_path.rglob("*.partial"))


def test_folders_unused_for_the_maximum_age_are_removed_and_a_new_offer_keeps_one(tmp_path):
    downloads = Downloads(tmp_path, max_age_s=100)
    old, kept = downloads.write("r.csv", b"old"), downloads.write("r.csv", b"kept")
    now = old.parent.stat().st_mtime
    os.utime(old.parent, (now - 500, now - 500))
    os.utime(kept.parent, (now - 500, now - 500))
    downloads.write("r.csv", b"kept")  # offered again: used now
    assert downloads.prune(now=now, force=True) == 1
    assert not old.exists() and kept.exists()
    os.utime(kept.parent, (now - 500, now - 500))
    assert downloads.prune(now=now + 30) == 0 and kept.exists()  # not looked for again within a minute
    assert downloads.prune(now=now + 61) == 1 and not kept.exists()
    assert downloads.write("r.csv", b"old").read_bytes() == b"old"  # written again when asked again


def test_many_threads_offering_the_same_results_get_one_whole_file(tmp_path):
    downloads = Downloads(tmp_path)
    data = b"x" * 200_000
    paths = []
    threads = [threading.Thread(target=lambda: paths.append(downloads.write("r.csv", data))) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(paths)) == 1 and paths[0].read_bytes() == data
    assert [p.name for p in paths[0].parent.iterdir()] == ["r.csv"]
