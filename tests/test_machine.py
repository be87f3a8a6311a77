"""The machine record: CPU model and speed flags read from /proc/cpuinfo, dtype, threads, load; JSON results
carry it."""

from __future__ import annotations

import json

import pytest
import torch

from recsys import machine
from recsys.results import write_json

ZEN1 = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7551 32-Core Processor
flags\t\t: fpu sse2 avx fma avx2 bmi2

processor\t: 1
model name\t: AMD EPYC 7551 32-Core Processor
flags\t\t: fpu sse2 avx fma avx2 bmi2
"""
SAPPHIRE_RAPIDS = """processor\t: 0
model name\t: Intel(R) Xeon(R) Platinum 8481C
flags\t\t: fpu avx2 fma avx512f avx512_bf16 amx_bf16 amx_tile amx_int8
"""


@pytest.fixture
def cpu(tmp_path, monkeypatch):
    """Make `read_cpuinfo()` read a given /proc/cpuinfo text."""
    def use(text: str):
        path = tmp_path / "cpuinfo"
        path.write_text(text)
        monkeypatch.setattr(machine, "CPUINFO", path)
    return use


def test_reads_model_and_flags_of_the_first_processor(cpu):
    cpu(ZEN1)
    model, flags = machine.read_cpuinfo()
    assert model == "AMD EPYC 7551 32-Core Processor"
    assert {"avx2", "fma"} <= flags and "avx512_bf16" not in flags


def test_no_cpuinfo_gives_an_unknown_model_and_no_flags(tmp_path):
    model, flags = machine.read_cpuinfo(tmp_path / "missing")
    assert model and flags == set()


@pytest.mark.parametrize("text, native", [(ZEN1, False), (SAPPHIRE_RAPIDS, True)], ids=["avx2-only", "amx"])
def test_native_bf16_and_auto_dtype_follow_the_flags(cpu, text, native):
    cpu(text)
    assert machine.native_cpu_bf16() is native
    assert machine.auto_dtype("cpu") == (torch.bfloat16 if native else torch.float32)
    record = machine.machine_record()
    assert record["native_bf16"] is native and record["dtype"] == ("bfloat16" if native else "float32")
    assert record["cpu_flags"]["avx2"] is True and record["cpu_flags"]["amx_bf16"] is native


def test_record_names_cpu_dtype_threads_and_load_at_the_start(cpu, monkeypatch):
    cpu(ZEN1)
    monkeypatch.setattr(machine.os, "getloadavg", lambda: (3.14159, 2.0, 1.0))
    record = machine.machine_record(torch.bfloat16, threads=7)
    assert record["cpu_model"] == "AMD EPYC 7551 32-Core Processor"
    assert record["dtype"] == "bfloat16" and record["torch_threads"] == 7
    assert record["load_average_1min_at_start"] == 3.14
    assert record["cores"] >= 1 and record["torch"] == torch.__version__
    assert machine.machine_record("4-bit NF4")["dtype"] == "4-bit NF4"
    assert machine.machine_record()["torch_threads"] == torch.get_num_threads()
    json.dumps(record)  # JSON-ready


def test_description_is_one_line_with_cpu_bf16_dtype_and_threads(cpu):
    cpu(ZEN1)
    line = machine.describe_machine(machine.machine_record(torch.float32, threads=1))
    assert "\n" not in line
    for part in ("AMD EPYC 7551", "no native bf16", "avx2", "float32", "1 torch thread"):
        assert part in line, line


def test_write_json_keeps_the_record_taken_at_the_start(tmp_path, cpu, monkeypatch):
    cpu(ZEN1)
    monkeypatch.setattr(machine.os, "getloadavg", lambda: (1.0, 1.0, 1.0))
    at_start = machine.machine_record(torch.float32, threads=1)
    monkeypatch.setattr(machine.os, "getloadavg", lambda: (9.0, 9.0, 9.0))  # busier by the time it is written
    write_json(tmp_path / "a" / "result.json", {"p50_ms": 1.0}, at_start)
    saved = json.loads((tmp_path / "a" / "result.json").read_text())
    assert saved["p50_ms"] == 1.0 and saved["machine"] == at_start
    write_json(tmp_path / "b.json", {"p50_ms": 1.0, "machine": at_start})
    assert json.loads((tmp_path / "b.json").read_text())["machine"] == at_start


def test_write_json_without_a_record_takes_one_and_says_when(tmp_path, cpu):
    cpu(SAPPHIRE_RAPIDS)
    write_json(tmp_path / "result.json", {"N@10": 0.3})
    saved = json.loads((tmp_path / "result.json").read_text())
    assert saved["machine"]["cpu_model"] == "Intel(R) Xeon(R) Platinum 8481C"
    assert saved["machine"]["taken"] == "when the result was written"
    write_json(None, {"N@10": 0.3})  # no path: nothing written, no error


@pytest.mark.parametrize("text, bf16_emulated", [(ZEN1, True), (SAPPHIRE_RAPIDS, False)], ids=["avx2-only", "amx"])
def test_emulation_names_what_the_cpu_cannot_do_natively(cpu, text, bf16_emulated):
    cpu(text)
    assert (machine.emulation("cpu", torch.bfloat16) is not None) is bf16_emulated
    assert machine.emulation("cpu", torch.float32) is None
    assert "4-bit" in machine.emulation("cpu", torch.float32, "4bit")  # no fast 4-bit kernel on any CPU
    assert machine.emulation("cuda", torch.bfloat16, "4bit") is None


def test_the_cpu_quota_caps_the_usable_cores(tmp_path):
    """A 2-vCPU container on a many-core host: the affinity lists the host's cores, cgroup's cpu.max says 2."""
    import os

    from recsys.machine import cpu_quota, usable_cores

    affinity = len(os.sched_getaffinity(0))
    assert cpu_quota(tmp_path) is None and usable_cores(tmp_path)[0] == affinity  # no cgroup files: the affinity
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cpu_quota(tmp_path) is None and usable_cores(tmp_path)[0] == affinity  # unlimited
    (tmp_path / "cpu.max").write_text("50000 100000\n")  # half a CPU: still one thread
    assert cpu_quota(tmp_path) == 0.5 and usable_cores(tmp_path) == (1, usable_cores(tmp_path)[1])
    if affinity > 1:
        assert "CPU quota (0.5 CPUs" in usable_cores(tmp_path)[1]
    (tmp_path / "cpu.max").unlink()
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("150000\n")  # cgroup v1: 1.5 CPUs -> 2 threads
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert cpu_quota(tmp_path) == 1.5 and usable_cores(tmp_path)[0] == min(2, affinity)
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    assert cpu_quota(tmp_path) is None


def test_the_models_threads_can_run_at_a_lower_priority_than_the_web_servers():
    import os
    import threading

    from recsys.machine import lower_priority, process_threads

    ready, done, seen = threading.Event(), threading.Event(), {}

    def worker():
        seen["tid"] = threading.get_native_id()
        ready.set()
        done.wait(timeout=10)

    thread = threading.Thread(target=worker)
    thread.start()
    ready.wait(timeout=10)
    try:
        assert seen["tid"] in process_threads() and threading.get_native_id() in process_threads()
        before = os.getpriority(os.PRIO_PROCESS, seen["tid"])
        assert lower_priority({seen["tid"], 2**22 + 12345}, 5) == 1  # an ended thread is passed over
        assert os.getpriority(os.PRIO_PROCESS, seen["tid"]) == min(19, before + 5)
        assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == before  # only the given threads
    finally:
        done.set()
        thread.join(timeout=10)
