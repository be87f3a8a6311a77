"""The real `spaces` package in its ZeroGPU mode on a CPU build of torch, for the app under test (PYTHONPATH=here).

Python imports this module at start-up. With SPACES_ZERO_GPU set it imports `spaces` at once, while torch reports a
CUDA build (the package refuses to import on a CPU build and binds a few CUDA entry points at import), then puts the
CPU build's answer back. Everything else is the package's own: at start-up, tensors moved to "cuda" become fakes
whose data is packed to disk, and CUDA used outside a `spaces.GPU` call fails; each call asks the device API
(SPACES_ZERO_DEVICE_API_URL, `device_api.py`) to schedule it with its duration, forks a worker, pickles arguments
and results across, streams a generator's values and raises refusals as `gr.Error`.

The one change is in the worker, whose GPU is this CPU: its CUDA initialisation is skipped, and instead of copying
the start-up tensors to a GPU, each fake gets its CPU data back (from memory, or from the packs on disk), so a call
computes what the CPU app computes.
"""

import os


def _no_cuda(*args, **kwargs):
    raise RuntimeError("no CUDA on this machine")


def _worker_on_cpu(zero_torch) -> None:
    """Replace the worker's `init` and `move` (looked up on `spaces.zero.torch` at each call) by CPU versions."""
    import torch
    from spaces.zero.torch import patching

    def init(nvidia_uuid: str) -> None:
        """No CUDA to initialise: the worker computes on the CPU."""

    def move(callback=None) -> None:
        """Each fake "cuda" tensor of the start-up gets its CPU data back: from memory, or from the packs."""
        for fake, original in list(patching.cuda_aliases.items()):
            if original is not None:
                fake.data = torch.Tensor(original)  # the plain tensor under the package's subclass
        for pack in patching.tensor_packs:  # written in this order: the batches, then the big tensors
            with open(pack.path(), "rb") as handle:
                for meta, size, aligned in [t for batch in pack.batches for t in batch] + pack.big_tensors:
                    storage = torch.frombuffer(bytearray(handle.read(aligned)[:size]), dtype=torch.uint8)
                    data = torch.tensor([], dtype=meta.dtype).set_(storage.untyped_storage(), 0, meta.shape,
                                                                   meta.stride())
                    for fake in pack.fakes[meta]:
                        fake.data = data

    zero_torch.init, zero_torch.move = init, move


def _import_spaces() -> None:
    import torch

    cpu_build = torch.version.cuda
    torch.version.cuda = "12.8"
    for name in ("_cuda_init", "_cuda_getCurrentRawStream"):
        if not hasattr(torch._C, name):
            setattr(torch._C, name, _no_cuda)
    # The package asks this in a forked process, so it is pickled; `bool()` is False, and a builtin is unpickled
    # without importing this module, which is still importing then (the child would wait for it forever).
    torch.cuda._is_in_bad_fork = bool
    try:
        import spaces  # noqa: F401
        import spaces.zero.torch as zero_torch
    finally:
        torch.version.cuda = cpu_build
    _worker_on_cpu(zero_torch)


if os.environ.get("SPACES_ZERO_GPU", "").lower() in ("1", "t", "true", "yes"):
    _import_spaces()
