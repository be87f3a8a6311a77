"""The GPU paths, checked on a CPU: GPU durations and refusals, quantization as a choice, where a model serves.

The app under the real `spaces` package is tested in tests/test_zerogpu.py. Here `ZeroGPURules`, a stand-in for the
package in its ZeroGPU mode, covers what a whole app cannot show quickly: the event wrapper's handling of refusals
of every kind, and that nothing computes outside a GPU call (any module's forward pass or a CUDA device query
outside a `spaces.GPU` call raises, as computation on offloaded "cuda" tensors and `torch._C._cuda_init` do there).
"""

from __future__ import annotations

import inspect
import sys
import types

import pytest
import torch

import app
from recsys.demo.gpu import (VISITOR_MAX_S, WORKER_FAILURE, gpu_event, is_refusal, on_zerogpu, race_seconds)
from recsys.ranker import model as ranker_model
from recsys.ranker.model import RankerLoadConfig, load_base_model, quantization_of


class ZeroGPURules:
    """A stand-in `spaces` module with ZeroGPU's rules (see the module docstring)."""

    def __init__(self):
        self.inside = 0  # decorated calls running now (ZeroGPU runs them in a worker where every thread has the GPU)
        self.durations: list[int] = []
        self.refuse: str | None = None  # a refusal message for the next requests, as ZeroGPU raises it
        self.module = types.ModuleType("spaces")
        self.module.GPU = self.gpu

    def gpu(self, function=None, duration=60):
        if function is None:
            return lambda f: self.gpu(f, duration)

        def requested(args, kwargs) -> int:
            seconds = duration(*args, **kwargs) if callable(duration) else duration
            self.durations.append(seconds)
            if self.refuse:
                raise RuntimeError(self.refuse)
            return seconds

        if inspect.isgeneratorfunction(function):
            def run_generator(*args, **kwargs):
                requested(args, kwargs)
                self.inside += 1
                try:
                    yield from function(*args, **kwargs)
                finally:
                    self.inside -= 1
            return run_generator

        def run(*args, **kwargs):
            requested(args, kwargs)
            self.inside += 1
            try:
                return function(*args, **kwargs)
            finally:
                self.inside -= 1
        return run

    def guard(self, what: str):
        if not self.inside:
            raise RuntimeError(f"ZeroGPU: {what} outside a spaces.GPU call (CUDA exists only inside one)")

    def install(self, monkeypatch) -> None:
        """Make this process look like a ZeroGPU Space until the test ends."""
        monkeypatch.setitem(sys.modules, "spaces", self.module)
        monkeypatch.setenv("SPACES_ZERO_GPU", "true")
        monkeypatch.setattr(app, "spaces", self.module)
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        for name in ("get_device_name", "current_device", "synchronize", "get_device_properties", "mem_get_info"):
            monkeypatch.setattr(torch.cuda, name, lambda *a, _name=name, **k: self.guard(f"torch.cuda.{_name}"))
        # bitsandbytes, imported with CUDA reported available, binds its CUDA stream getter at import (a CPU build
        # of torch lacks it); calling it outside a GPU call is refused like any other CUDA use.
        monkeypatch.setattr(torch._C, "_cuda_getCurrentRawStream",
                            lambda *a: self.guard("torch._C._cuda_getCurrentRawStream"), raising=False)
        hook = torch.nn.modules.module.register_module_forward_pre_hook(lambda module, args: self.guard("a forward"))
        monkeypatch.setattr(self, "_hook", hook, raising=False)


@pytest.fixture
def zerogpu(monkeypatch):
    rules = ZeroGPURules()
    rules.install(monkeypatch)
    # Weights go to "cuda" at start-up on ZeroGPU (emulated there); this CPU build keeps them on the CPU.
    import recsys.pipeline

    for module in (ranker_model, recsys.pipeline):
        monkeypatch.setattr(module, "pick_device", lambda device="auto": torch.device("cpu"))
    yield rules
    rules._hook.remove()


def test_the_stand_in_refuses_work_outside_a_gpu_call(zerogpu, tiny_llama):
    with pytest.raises(RuntimeError, match="outside a spaces.GPU call"):
        tiny_llama(input_ids=torch.tensor([[1, 2]]))
    with pytest.raises(RuntimeError, match="outside a spaces.GPU call"):
        torch.cuda.get_device_name(0)
    inside = zerogpu.module.GPU(lambda: tiny_llama(input_ids=torch.tensor([[1, 2]])).logits.shape, duration=5)
    assert inside() == (1, 2, tiny_llama.config.vocab_size) and zerogpu.durations == [5]
    assert on_zerogpu(zerogpu.module) and not on_zerogpu(None)


def test_the_device_is_not_asked_its_name_on_zerogpu(monkeypatch):
    rules = ZeroGPURules()
    rules.install(monkeypatch)
    rules._hook.remove()
    facts = ranker_model.describe(RankerLoadConfig(device="cuda", quantization="none"), query_device=False)
    assert "ZeroGPU" in facts["device"] and facts["quantization"] == "bf16"


def test_the_race_asks_for_its_budget_and_never_more_than_a_visitor_gets():
    assert race_seconds(200, seconds_per_token=0.05) == 20  # 10 s of Recommend and prefill + 200 tokens
    assert race_seconds(660) == 43  # 20 titles of 32 tokens and their newlines, the default prompt's most
    assert race_seconds(100_000) == VISITOR_MAX_S


def test_a_refused_gpu_request_or_a_failure_in_the_worker_becomes_the_events_message(zerogpu):
    def recommend(history):
        if history == "boom":
            raise ValueError("a bug of the event itself")
        return ("ranked", history)

    def race(history):
        yield "first"
        yield "last"

    event = gpu_event(recommend, zerogpu.module, 7, lambda sentence: ("refused", sentence))
    streamed = gpu_event(race, zerogpu.module, 9, lambda sentence: ("refused", sentence))
    assert event("h") == ("ranked", "h") and list(streamed("h")) == ["first", "last"]
    assert zerogpu.durations == [7, 9]
    assert inspect.signature(event) == inspect.signature(recommend)  # Gradio reads the handler's parameters
    kind, sentence = event("boom")  # a failure of the event itself: what it was, not a refusal
    assert kind == "refused" and sentence.startswith("The request failed on the GPU (ValueError: a bug of the event")
    zerogpu.refuse = "ZeroGPU illegal duration: The requested GPU duration (300s) is larger than the maximum allowed"
    kind, sentence = event("h")
    assert kind == "refused" and "larger than the maximum allowed" in sentence and "must ask for less" in sentence
    assert list(streamed("h"))[0][0] == "refused"
    assert is_refusal(RuntimeError("No GPU was available after 60s")) and not is_refusal(RuntimeError("CUDA OOM"))
    assert gpu_event(recommend, None, 7, print) is recommend  # no spaces package: the handler as it is


class FakeLoads:
    """`AutoModelForCausalLM.from_pretrained` stand-in: records each load's keyword arguments; a quantized load
    raises as bitsandbytes does on a GPU it has no kernels for."""

    def __init__(self, fail_quantized: bool):
        self.calls: list[dict] = []
        self.fail_quantized = fail_quantized

    def __call__(self, path, **kwargs):
        self.calls.append(kwargs)
        if "quantization_config" in kwargs and self.fail_quantized:
            raise RuntimeError("bitsandbytes: no kernel image is available for execution on the device")
        return types.SimpleNamespace(is_loaded_in_4bit="quantization_config" in kwargs, is_loaded_in_8bit=False,
                                     to=lambda device: self.calls[-1].setdefault("placed_on", device))


@pytest.fixture
def fake_cuda(monkeypatch, tmp_path):
    monkeypatch.setattr(ranker_model, "pick_device", lambda device="auto": torch.device("cuda"))
    monkeypatch.setattr(ranker_model, "resolve_base_model", lambda name: tmp_path)

    def install(fail_quantized: bool) -> FakeLoads:
        loads = FakeLoads(fail_quantized)
        monkeypatch.setattr("transformers.AutoModelForCausalLM.from_pretrained", loads)
        return loads
    return install


def test_a_failed_bitsandbytes_load_on_cuda_falls_back_to_bf16(fake_cuda, capsys):
    loads = fake_cuda(fail_quantized=True)
    model = load_base_model(RankerLoadConfig(quantization="4bit"))
    assert len(loads.calls) == 2 and "quantization_config" in loads.calls[0]
    assert "quantization_config" not in loads.calls[1] and loads.calls[1]["dtype"] == torch.bfloat16
    assert ranker_model.loaded_quantization(model) == "none"
    printed = capsys.readouterr().out.strip().splitlines()
    assert len(printed) == 1 and "4bit loading with bitsandbytes failed" in printed[0] and "bf16" in printed[0]


def test_quantization_none_on_cuda_loads_bf16_once(fake_cuda):
    loads = fake_cuda(fail_quantized=True)
    load_base_model(RankerLoadConfig(quantization="none"))
    assert len(loads.calls) == 1 and "quantization_config" not in loads.calls[0]
    assert loads.calls[0]["dtype"] == torch.bfloat16


def test_auto_quantizes_only_big_models_on_cuda(monkeypatch, tmp_path):
    monkeypatch.setattr(ranker_model, "resolve_base_model", lambda name: tmp_path)
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    monkeypatch.setattr(ranker_model, "parameter_count", lambda path: 134_515_008)  # SmolLM2-135M
    assert quantization_of(RankerLoadConfig(), cuda) == "none"
    monkeypatch.setattr(ranker_model, "parameter_count", lambda path: 6_738_415_616)  # Llama-2-7B
    assert quantization_of(RankerLoadConfig(), cuda) == "4bit"
    assert quantization_of(RankerLoadConfig(), cpu) == "none"
    assert quantization_of(RankerLoadConfig(quantization="8bit"), cpu) == "8bit"
    with pytest.raises(ValueError, match="quantization must be one of"):
        quantization_of(RankerLoadConfig(quantization="3bit"), cuda)


def test_parameter_count_reads_no_weights(tiny_llama, tmp_path):
    tiny_llama.config.save_pretrained(tmp_path)  # a config only: no weights file
    assert ranker_model.parameter_count(str(tmp_path)) == sum(p.numel() for p in tiny_llama.parameters())


def test_app_flag_reaches_the_load_config(monkeypatch):
    seen = {}
    monkeypatch.setattr(app.Pipeline, "load", classmethod(lambda cls, config, start_on_device=True:
                                                          seen.update(config=config, start=start_on_device)))
    app.load_pipeline(app.parse_args(["--quantization", "none"]))
    assert seen["config"].ranker.quantization == "none" and seen["start"] is True


def test_refusals_are_read_from_the_errors_title_and_an_aborted_task_says_so(zerogpu):
    import gradio as gr

    from recsys.demo.gpu import refusal_sentence

    refused = gr.Error("Space app has reached its GPU limit. Retry later.", title="ZeroGPU quota exceeded")
    assert is_refusal(refused) and "sign in" in refusal_sentence(refused)
    aborted = gr.Error("GPU task aborted", title="ZeroGPU worker error")
    assert is_refusal(aborted) and "withdrawn" in refusal_sentence(aborted)
    for title in ("ZeroGPU pending credits exceeded", "ZeroGPU queue timeout"):  # the titles alone say it
        assert is_refusal(gr.Error("Try again later.", title=title))
    failed = gr.Error("Empty: the queue of a batch was empty; no credits left in the cache", title=WORKER_FAILURE)
    assert not is_refusal(failed)  # a failure of the event that mentions a queue is that failure, not a refusal
    assert not is_refusal(RuntimeError("queue.Empty while reading the batch"))


def test_a_history_that_cannot_be_used_asks_for_no_gpu(zerogpu):
    event = gpu_event(lambda session: "ran", zerogpu.module, 7, lambda message: ("message", message),
                      lambda session: None if session else "The watch history is empty")
    assert event([]) == ("message", "The watch history is empty") and zerogpu.durations == []
    assert event([1]) == "ran" and zerogpu.durations == [7]


def test_another_base_model_keeps_the_committed_prior_but_not_its_adapter_weights(monkeypatch):
    seen = {}
    monkeypatch.setattr(app.Pipeline, "load", classmethod(lambda cls, config, start_on_device=True:
                                                          seen.update(config=config)))
    app.load_pipeline(app.parse_args(["--base-model", "meta-llama/Llama-2-7b-hf"]))
    config = seen["config"]  # the weights were trained on SmolLM2-135M; the prior fits any base model
    assert config.ranker.adapter == app.default_adapter() and config.adapter_weights is False
    app.load_pipeline(app.parse_args(["--base-model", "meta-llama/Llama-2-7b-hf", "--adapter", "none"]))
    assert seen["config"].ranker.adapter is None  # asked for: the base model alone
    app.load_pipeline(app.parse_args([]))
    assert seen["config"].adapter_weights is True
    monkeypatch.setenv("LLAMAREC_BASE_MODEL", "some/model")
    monkeypatch.setenv("LLAMAREC_ADAPTER", "runs/zero-shot")
    app.load_pipeline(app.parse_args([]))  # a Space sets variables, not flags
    assert seen["config"].ranker.base_model == "some/model" and seen["config"].ranker.adapter == "runs/zero-shot"
