"""Model events on a GPU host: as they are on a CPU or a dedicated GPU, or inside `spaces.GPU` on ZeroGPU.

On a Hugging Face ZeroGPU Space (`spaces` importable and SPACES_ZERO_GPU set) CUDA exists only inside
functions decorated with `spaces.GPU`, and each call forks a GPU worker that receives every weight, with the
visitor's daily quota charged for the seconds it asks. `zerogpu_device` decides where a model serves there: a small
one (the default 135M) on the Space's own CPU in the server process, as on any CPU host, asking for no GPU at all;
a big one on the GPU. For the GPU, start-up only loads (no warm-up, no device query) and each model event asks for a
GPU for as long as it needs:

- Recommend: RECOMMEND_S, a few passes of well under a second each on any GPU;
- the race: `race_seconds`, from its token budget (the candidates' title tokens, the paper's rule) at
  GPU_SECONDS_PER_TOKEN, capped at VISITOR_MAX_S.

ZeroGPU checks the requested duration against the visitor's remaining daily quota and against a
maximum, and refuses the request before the function runs ("You have exceeded your GPU quota (60s
requested vs. 44s left)", "ZeroGPU illegal duration"). `gpu_event` turns a refusal into the event's
own message outputs, so the visitor reads one sentence and every other event keeps working.
"""

from __future__ import annotations

import functools
import inspect
import math
import os
from collections.abc import Callable

from recsys.data.errors import one_line

ZEROGPU_ENV = "SPACES_ZERO_GPU"
RECOMMEND_S = 15  # one Recommend: up to 3 forward passes, plus CUDA's first-call start in a fresh worker
# What a visitor who is not logged in can always be granted at once: ZeroGPU's default request. Logged-out
# visitors have had about 120 s a day, logged-in free accounts 210 s, PRO 1,500 s (Hub discussions, 2024-25).
VISITOR_MAX_S = 60
# Greedy decoding, one token a call of the HF forward on the KV cache: ~46 ms a token for the 135M model on
# 2 CPU cores (bench/results/efficiency.json); on a GPU the per-call overhead dominates for small models and a
# 7B model decodes at 20-40 ms a token in bf16. 50 ms leaves margin for both; no GPU figure was measured here.
GPU_SECONDS_PER_TOKEN = 0.05
RACE_OVERHEAD_S = 10  # the race's Recommend and the generation prompt's prefill


PLACEMENTS = ("auto", "cpu", "gpu")
# "auto" serves models below this many parameters on the Space's CPU. For the default 135M model a Recommend on the
# Space's CPU is as fast as one in a GPU worker, which also spends the visitor's daily quota (bench/zerogpu_costs.py,
# under the real `spaces` package emulated on 2 CPU cores); a CPU Recommend grows about linearly with the parameters,
# so from about 1B a GPU's speed outweighs the call's cost and its quota (an estimate: no GPU was measured).
CPU_SERVES_BELOW_PARAMETERS = 1_000_000_000


def zerogpu_device(parameters: int, placement: str = "auto") -> str:
    """Where a model of `parameters` serves on a ZeroGPU Space: "cpu" (the server process; no GPU asked for) or
    "cuda" (a GPU lent for each event). `placement` "cpu" or "gpu" forces one; "auto" serves models below
    CPU_SERVES_BELOW_PARAMETERS on the CPU. ValueError for another placement."""
    if placement not in PLACEMENTS:
        raise ValueError(f"placement must be one of {', '.join(PLACEMENTS)}, got {placement!r}")
    if placement == "auto":
        placement = "cpu" if parameters < CPU_SERVES_BELOW_PARAMETERS else "gpu"
    return "cpu" if placement == "cpu" else "cuda"


def on_zerogpu(spaces_module=None) -> bool:
    """Whether this process runs on a ZeroGPU Space: the `spaces` package is importable and SPACES_ZERO_GPU is set
    (the Space sets it; elsewhere `spaces.GPU` is a no-op decorator)."""
    return spaces_module is not None and os.environ.get(ZEROGPU_ENV, "").lower() in ("1", "t", "true", "yes")


def race_seconds(budget_tokens: int, seconds_per_token: float = GPU_SECONDS_PER_TOKEN,
                 cap: int = VISITOR_MAX_S) -> int:
    """GPU seconds a race asks for: its Recommend and prefill plus `budget_tokens` decoded tokens, at most `cap`."""
    return min(cap, math.ceil(RACE_OVERHEAD_S + budget_tokens * seconds_per_token))


# ZeroGPU's refusals, raised in the Space's own process before the function runs: the titles the `spaces` package
# (0.51, zero/client.py) gives its gr.Error, and what their messages say where a title is lost (Hub reports): the
# duration against the quota left or the maximum, a Space or visitor limit, no GPU free in time. Whole titles and
# phrases, so that a failure of the event that merely mentions a queue or credits is not read as one. An aborted task
# (past its duration, or the worker failed) is the GPU withdrawn mid-call.
REFUSAL_TITLES = ("zerogpu quota exceeded", "zerogpu illegal duration", "zerogpu pending credits exceeded",
                  "zerogpu queue timeout", "zerogpu client error")
REFUSAL_MESSAGES = ("quota exceeded", "gpu quota", "illegal duration", "larger than the maximum allowed",
                    "no gpu was available", "gpu limit", "runs limit", "proxy token")
ABORTED = ("gpu task aborted", "zerogpu worker error")


def error_text(error: BaseException) -> str:
    """An error's title (gr.Error carries the kind of refusal there) and message, on one line."""
    return " ".join(f"{getattr(error, 'title', '') or ''} {error}".split())


def is_refusal(error: BaseException) -> bool:
    """Whether `error` is ZeroGPU refusing or withdrawing the GPU, not a failure of the event itself (a failure inside
    the worker, titled WORKER_FAILURE, never is, whatever its message says)."""
    title = (getattr(error, "title", "") or "").lower()
    if title == WORKER_FAILURE.lower():
        return False
    text = error_text(error).lower()
    return title in REFUSAL_TITLES or any(marker in text for marker in REFUSAL_MESSAGES + ABORTED)


def refusal_sentence(error: BaseException) -> str:
    """The one sentence a visitor reads when the GPU was refused or withdrawn."""
    text = error_text(error)
    if any(marker in text.lower() for marker in ABORTED):
        return (f"The GPU was withdrawn before this request finished ({text}): it ran past the time it asked for, or "
                "the GPU worker failed. Nothing else is affected: try again.")
    lowered = text.lower()
    if "illegal duration" in lowered or "larger than the maximum" in lowered:
        advice = "this request asks for more GPU time at once than ZeroGPU allows here; the Space must ask for less"
    elif "quota" in lowered:
        advice = "try again later, or sign in to Hugging Face for a larger daily GPU quota"
    else:
        advice = "try again in a minute"
    return f"The GPU was not granted for this request ({text}). Nothing else is affected: {advice}."


# The title of the error a failure inside the GPU worker is sent back as: the worker passes a `gr.Error` on whole, but
# any other exception only as "ZeroGPU worker error" and its class name, which would hide what went wrong
WORKER_FAILURE = "The request failed on the GPU"


def _failures_sent_whole(function: Callable) -> Callable:
    """`function`, raising any failure other than a `gr.Error` as a `gr.Error` titled WORKER_FAILURE that carries its
    kind and message (made in the worker, where the exception is)."""
    import gradio as gr

    def sent_whole(error: Exception) -> gr.Error:
        return gr.Error(f"{type(error).__name__}: {one_line(error)}", title=WORKER_FAILURE, print_exception=False)

    if inspect.isgeneratorfunction(function):
        @functools.wraps(function)
        def run_generator(*args, **kwargs):
            try:
                yield from function(*args, **kwargs)
            except gr.Error:
                raise
            except Exception as error:
                raise sent_whole(error) from error
        return run_generator

    @functools.wraps(function)
    def run(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        except gr.Error:
            raise
        except Exception as error:
            raise sent_whole(error) from error
    return run


def answer(error: Exception) -> str | None:
    """The sentence a visitor reads for an error from a GPU call: a failure inside the worker as what it was, a
    refused or withdrawn GPU as a refusal; None for any other error (it passes through)."""
    if getattr(error, "title", None) == WORKER_FAILURE:
        return (f"{WORKER_FAILURE} ({getattr(error, 'message', error)}). Nothing else is affected; if it happens "
                "again, it is a bug of this app: please report it.")
    return refusal_sentence(error) if is_refusal(error) else None


def gpu_event(function: Callable, spaces_module, duration, refused: Callable[[str], object],
              problem: Callable[..., str | None] | None = None) -> Callable:
    """`function` as a model event: decorated with `spaces_module.GPU(duration=...)` when given (`duration`: seconds
    or a callable of the event's arguments). A refused GPU request, or a failure inside the worker, returns
    `refused(answer(error))`, or yields it for a generator event, instead of raising; other errors pass through.
    `problem(*args)`, when given, is checked first, without a GPU: a message it returns is answered as
    `refused(message)` and no GPU is asked for (an empty history needs none). Without `spaces_module`, `function` is
    returned as it is."""
    if spaces_module is None:
        return function
    decorated = spaces_module.GPU(_failures_sent_whole(function), duration=duration)
    if inspect.isgeneratorfunction(function):
        @functools.wraps(function)
        def run_generator(*args, **kwargs):
            if problem is not None and (message := problem(*args)):
                yield refused(message)
                return
            try:
                yield from decorated(*args, **kwargs)
            except Exception as error:
                if (sentence := answer(error)) is None:
                    raise
                yield refused(sentence)
        return run_generator

    @functools.wraps(function)
    def run(*args, **kwargs):
        if problem is not None and (message := problem(*args)):
            return refused(message)
        try:
            return decorated(*args, **kwargs)
        except Exception as error:
            if (sentence := answer(error)) is None:
                raise
            return refused(sentence)
    return run
