"""What machine a measurement ran on: CPU model, the instruction sets that decide speed, dtype, threads, load.

Every benchmark JSON and training log carries `machine_record()`, so that a figure can be read
beside the machine that produced it: the same command gives 1 s on a CPU with native bf16
(AVX512-BF16 or AMX) and 4 s on an AVX2-only one, and twice as long again when other jobs share
the cores. Take the record when the measurement starts: the load average is the one at that moment.
"""

from __future__ import annotations

import math
import os
import platform
from pathlib import Path

import torch

CPUINFO = Path("/proc/cpuinfo")
SPEED_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16")  # the ones that set matmul speed
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # either one makes bf16 matmuls faster than fp32 instead of emulated
CGROUP = Path("/sys/fs/cgroup")


def cpu_quota(cgroup: Path = CGROUP) -> float | None:
    """CPUs' worth of time the container may use (cgroup v2 `cpu.max`, or v1 `cpu.cfs_quota_us` over
    `cpu.cfs_period_us`); None when unlimited or unreadable. A 2-vCPU container on a 64-core host sees 64 cores
    in its affinity but may use only 2: one torch thread per host core would stall on the quota."""
    try:
        if (cgroup / "cpu.max").is_file():
            quota, period = (cgroup / "cpu.max").read_text().split()[:2]
            return None if quota == "max" else int(quota) / int(period)
        v1 = cgroup / "cpu"
        if (v1 / "cpu.cfs_quota_us").is_file():
            quota_us = int((v1 / "cpu.cfs_quota_us").read_text())
            return None if quota_us <= 0 else quota_us / int((v1 / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return None


def process_threads() -> set[int]:
    """The native ids of this process's threads (Linux; empty elsewhere)."""
    try:
        return {int(tid) for tid in os.listdir("/proc/self/task")}
    except OSError:
        return set()


def lower_priority(thread_ids: set[int], niceness: int) -> int:
    """Raise the nice value of these threads by `niceness` (a lower CPU priority, always allowed on Linux); returns
    how many changed. Threads that have ended, or systems without per-thread priorities, are passed over."""
    changed = 0
    for tid in thread_ids:
        try:
            os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + niceness))
            changed += 1
        except (OSError, AttributeError):
            continue
    return changed


def usable_cores(cgroup: Path = CGROUP) -> tuple[int, str]:
    """(cores this process can keep busy, why): the CPU affinity, capped by the container's CPU quota (rounded up,
    at least 1)."""
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    quota = cpu_quota(cgroup)
    if quota is not None and math.ceil(quota) < affinity:
        return max(1, math.ceil(quota)), f"the container's CPU quota ({quota:g} CPUs of {affinity} cores)"
    return affinity, f"every core this process may use ({affinity})"


def read_cpuinfo(path: Path | None = None) -> tuple[str, set[str]]:
    """(CPU model name, set of CPU flags) from the first processor in `path` (default: /proc/cpuinfo).

    Elsewhere (no such file): (`platform.processor()` or "unknown", empty set).
    """
    try:
        text = (path or CPUINFO).read_text()
    except OSError:
        return platform.processor() or "unknown", set()
    model = "unknown"
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and model == "unknown":
            model = value.strip()
        elif key == "flags" and not flags:
            flags = set(value.split())
    return model, flags


def native_cpu_bf16(flags: set[str] | None = None) -> bool:
    """Whether the CPU computes bf16 natively (AVX512-BF16 or AMX-BF16); `flags` default: this CPU's."""
    flags = read_cpuinfo()[1] if flags is None else flags
    return any(flag in flags for flag in NATIVE_BF16_FLAGS)


def native_bf16(device: torch.device | str = "cpu") -> bool:
    """Whether `device` computes bf16 matmuls natively: CUDA with bf16 support, or a CPU with `native_cpu_bf16`."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return native_cpu_bf16()


def auto_dtype(device: torch.device | str = "cpu") -> torch.dtype:
    """What "auto" precision means on `device`: bfloat16 where `native_bf16`, else float32."""
    return torch.bfloat16 if native_bf16(device) else torch.float32


def emulation(device: torch.device | str, dtype: torch.dtype | None = None, quantization: str = "none") -> str | None:
    """Why `device` could only emulate this setting, or None: 4-bit NF4 on a CPU (bitsandbytes' slow
    fallback), or bf16 on a CPU without `native_cpu_bf16` (slower than fp32 there)."""
    if torch.device(device).type != "cpu":
        return None
    if quantization == "4bit":
        return "4-bit NF4 on a CPU runs bitsandbytes' slow fallback code (no fast CPU kernel); measure it on CUDA"
    if dtype == torch.bfloat16 and not native_cpu_bf16():
        return "this CPU has no AVX512-BF16 or AMX, so bf16 matmuls are emulated (slower than fp32, not faster)"
    return None


def dtype_name(dtype: torch.dtype | str) -> str:
    """"bfloat16" for torch.bfloat16 (and for the string "bfloat16"); the name as JSON records it."""
    return str(dtype).replace("torch.", "")


def machine_record(dtype: torch.dtype | str | None = None, device: torch.device | str = "cpu",
                   threads: int | None = None) -> dict:
    """The machine a measurement runs on, as a JSON-ready dict. Call it when the measurement starts.

    `dtype`: the precision the measured model runs in (a torch dtype or a name such as "4-bit NF4");
    None records what "auto" resolves to on `device`. `threads`: torch's thread count for the
    measurement, when it is not this process's (e.g. a server started with --threads); None reads
    `torch.get_num_threads()`. Keys: cpu_model, cpu_flags (each of SPEED_FLAGS: present or not),
    native_bf16, cores (usable by this process: affinity capped by the CPU quota), torch_threads, dtype, device
    (plus gpu when CUDA is available), load_average_1min_at_start, torch, python, platform.
    """
    model, flags = read_cpuinfo()
    cores = usable_cores()[0]
    device = torch.device(device)
    record = {
        "cpu_model": model,
        "cpu_flags": {flag: flag in flags for flag in SPEED_FLAGS},
        "native_bf16": native_cpu_bf16(flags),
        "cores": cores,
        "torch_threads": torch.get_num_threads() if threads is None else threads,
        "dtype": dtype_name(auto_dtype(device) if dtype is None else dtype),
        "device": str(device),
        "load_average_1min_at_start": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    if torch.cuda.is_available():
        record["gpu"] = torch.cuda.get_device_name(device if device.type == "cuda" else 0)
    return record


def describe_machine(record: dict) -> str:
    """One line for a table caption: CPU, its bf16 support, dtype, threads, cores and load at the start."""
    flags = [flag for flag, present in record["cpu_flags"].items() if present]
    bf16 = "native bf16" if record["native_bf16"] else "no native bf16"
    gpu = f"; GPU {record['gpu']}" if "gpu" in record else ""
    return (f"{record['cpu_model']} ({bf16}; {', '.join(flags) or 'no listed flags'}), {record['dtype']}, "
            f"{record['torch_threads']} torch thread(s) on {record['cores']} core(s), "
            f"load average {record['load_average_1min_at_start']} at the start{gpu}")


def synchronize(device) -> None:
    """Wait for queued CUDA work on `device` (a no-op on CPU)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
