"""Loading the ranker: any causal LM by name or path, 4-bit NF4 or 8-bit for big models on CUDA, LoRA adapters (peft).

Quantization is a choice (`RankerLoadConfig.quantization`): "auto" quantizes to 4-bit NF4 only on CUDA
and only models of QUANTIZE_FROM_PARAMETERS and more (a 135M model needs none, and bitsandbytes has no
kernels for some GPUs); "none", "4bit" and "8bit" ask for one. A quantized load that fails on CUDA
falls back to bf16 with one line that says so.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

from recsys.data.errors import one_line as _one_line
from recsys.errors import CheckpointError
from recsys.folders import MOVIELENS, served_folder
from recsys.machine import native_cpu_bf16
from recsys.ranker.attention import register as register_attention
from recsys.ranker.base_model import resolve_base_model

REPOSITORY = Path(__file__).resolve().parents[2]
DEFAULT_ADAPTER = served_folder(MOVIELENS)
# Library notices that read like errors at every start but change nothing here: bitsandbytes' CPU backend looks
# for an optional `kernels` package (only its 4-bit path, which CPUs do not use) and, offline, that package says
# it skips a hub check for that same kernel; peft reads a transformers attribute deprecated in favour of another.
# Only these three messages are hidden.
KNOWN_HARMLESS = ("Failed to load CPU gemm_4bit_forward from kernels-community",
                  "`is_gradient_checkpointing` is deprecated",
                  "Skipping publisher trust check for 'kernels-community/quantization-bitsandbytes'")
NOTICE_LOGGERS = ("bitsandbytes.backends.cpu.ops", "kernels._internals.hf_hub")


def _quiet_known_harmless_notices() -> None:
    """Hide the KNOWN_HARMLESS library messages (a logging filter and a warnings filter); nothing else."""
    class DropKnown(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            return not any(record.getMessage().startswith(text) for text in KNOWN_HARMLESS)

    for name in NOTICE_LOGGERS:
        logging.getLogger(name).addFilter(DropKnown())
    warnings.filterwarnings("ignore", message=re.escape(KNOWN_HARMLESS[1]), category=FutureWarning)


_quiet_known_harmless_notices()
TRAIN_COMMAND = "python -m recsys.ranker.train"
# What an adapter load that failed on the device says (torch, CUDA, bitsandbytes), as opposed to weights that do not
# fit the base model (peft's "size mismatch", "Target modules ... not found")
DEVICE_PROBLEMS = ("cuda", "device", "pin_memory", "pinned", "accelerator", "out of memory")
ADAPTER_CONFIG_FILE = "adapter_config.json"
ADAPTER_WEIGHTS_FILE = "adapter_model.safetensors"


@dataclass
class LoraSettings:
    """LoRA as in the paper: r=8, alpha=32, dropout 0.05 on the query and value projections."""

    r: int = 8
    alpha: int = 32
    dropout: float = 0.05
    target_modules: tuple[str, ...] = ("q_proj", "v_proj")
    top_layers: int | None = None  # adapt only the last N decoder layers (the backward pass stops below them)


@dataclass
class RankerLoadConfig:
    """How to load the ranker's language model."""

    base_model: str | None = None  # None = the default SmolLM2-135M-Instruct; else a hub name or a folder
    adapter: str | Path | None = None  # a peft adapter folder (adapter_config.json + adapter_model.safetensors)
    device: str = "auto"  # "auto" = cuda when available, else cpu
    quantization: str = "auto"  # "auto": 4-bit NF4 for big models on CUDA, else none; or "none" / "4bit" / "8bit"
    cpu_precision: str = "fp32"  # unquantized weights on CPU: "fp32", "bf16" or "auto" (bf16 where the CPU has it)
    lora: LoraSettings = field(default_factory=LoraSettings)


def cpu_dtype(precision: str) -> torch.dtype:
    """The dtype of an unquantized ranker on CPU for a precision setting: "fp32", "bf16" or "auto"."""
    if precision not in ("auto", "fp32", "bf16"):
        raise ValueError(f"cpu precision must be auto, fp32 or bf16, got {precision!r}")
    if precision == "auto":
        precision = "bf16" if native_cpu_bf16() else "fp32"
    return torch.bfloat16 if precision == "bf16" else torch.float32


def pick_device(device: str = "auto") -> torch.device:
    """"auto" -> this process's GPU when CUDA is available (cuda:$LOCAL_RANK, which `accelerate launch` sets: one GPU
    a process), else cpu."""
    if device == "auto":
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if torch.cuda.is_available() \
            else torch.device("cpu")
    return torch.device(device)


QUANTIZATIONS = ("auto", "none", "4bit", "8bit")
QUANTIZE_FROM_PARAMETERS = 1_000_000_000  # "auto" quantizes models from about 1B parameters on (Llama-2-7B: 6.7B)


@functools.cache
def parameter_count(path: str) -> int:
    """Parameters of the causal LM at `path` (a folder or hub name), counted on meta tensors: no weights read."""
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM

    with init_empty_weights():
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(path))
    model.tie_weights()  # tied input and output embeddings count once, as `parameters()` yields each tensor once
    return sum(p.numel() for p in model.parameters())


def quantization_of(config: RankerLoadConfig, device: torch.device) -> str:
    """"none", "4bit" or "8bit": what `config.quantization` asks for on `device` ("auto": 4-bit on CUDA for models of
    QUANTIZE_FROM_PARAMETERS and more, none otherwise). ValueError for an unknown setting."""
    if config.quantization not in QUANTIZATIONS:
        raise ValueError(f"quantization must be one of {', '.join(QUANTIZATIONS)}, got {config.quantization!r}")
    if config.quantization != "auto":
        return config.quantization
    if device.type != "cuda":
        return "none"
    big = parameter_count(str(resolve_base_model(config.base_model))) >= QUANTIZE_FROM_PARAMETERS
    return "4bit" if big else "none"


def use_4bit(config: RankerLoadConfig, device: torch.device) -> bool:
    """Whether `config` quantizes to 4-bit NF4 on `device` (`quantization_of`)."""
    return quantization_of(config, device) == "4bit"


def loaded_quantization(model) -> str:
    """"4bit", "8bit" or "none": how a loaded model (peft-wrapped or not) holds its weights."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if getattr(base, "is_loaded_in_4bit", False):
        return "4bit"
    return "8bit" if getattr(base, "is_loaded_in_8bit", False) else "none"


def load_tokenizer(base_model: str | None):
    """The base model's tokenizer, left-padded, with a pad token."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(resolve_base_model(base_model))
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_base_model(config: RankerLoadConfig, for_training: bool = False):
    """The causal LM: 4-bit NF4 + double quantization + bf16 compute (or 8-bit) when `quantization_of` says so,
    else bf16 on CUDA and `config.cpu_precision` on CPU.

    A quantized load that fails on CUDA (bitsandbytes missing, or without kernels for the GPU) prints one line and
    loads bf16 weights instead; on CPU it raises. For training a quantized model, gradient checkpointing is
    enabled through peft's k-bit preparation.
    """
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    device = pick_device(config.device)
    path = resolve_base_model(config.base_model)
    quantization = quantization_of(config, device)
    attention = register_attention()
    plain = {"attn_implementation": attention,
             "dtype": torch.bfloat16 if device.type == "cuda" else cpu_dtype(config.cpu_precision)}
    model = None
    if quantization != "none":
        bits = (BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                   bnb_4bit_compute_dtype=torch.bfloat16) if quantization == "4bit"
                else BitsAndBytesConfig(load_in_8bit=True))
        try:
            model = AutoModelForCausalLM.from_pretrained(
                path, attn_implementation=attention, dtype=torch.bfloat16, quantization_config=bits,
                device_map={"": device.index or 0} if device.type == "cuda" else {"": "cpu"})
        except (ImportError, RuntimeError, ValueError, OSError, AttributeError) as error:
            if device.type != "cuda":
                raise
            print(f"{quantization} loading with bitsandbytes failed ({_one_line(error)}); loading bf16 weights "
                  "instead (pass --quantization none to skip the attempt).")
    if model is None:
        model = AutoModelForCausalLM.from_pretrained(path, **plain)
    if loaded_quantization(model) != "none":
        if for_training:
            from peft import prepare_model_for_kbit_training

            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=True)
    else:
        model = model.to(device)  # type: ignore[arg-type]  # transformers' wrapped `to` confuses mypy
    return model


def add_lora(model, settings: LoraSettings = LoraSettings()):
    """Wrap `model` with fresh trainable LoRA adapters (peft); they are fp32 even over bf16 base weights."""
    from peft import LoraConfig, get_peft_model

    layers = None
    if settings.top_layers:
        total = model.config.num_hidden_layers
        layers = list(range(max(0, total - settings.top_layers), total))
    lora = LoraConfig(r=settings.r, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                      target_modules=list(settings.target_modules), layers_to_transform=layers, task_type="CAUSAL_LM")
    return get_peft_model(model, lora)


def load_adapter(model, adapter: str | Path, trainable: bool = False, name: str = "default"):
    """Attach a saved peft adapter to `model` as `name`; onto a model that already carries adapters, beside them (the
    active one stays active).

    Raises CheckpointError with a one-line message naming the unusable file (adapter_config.json or
    adapter_model.safetensors) and the training command that re-creates it.
    """
    from peft import PeftConfig, PeftModel
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(adapter)
    config_file, weights_file = folder / ADAPTER_CONFIG_FILE, folder / ADAPTER_WEIGHTS_FILE
    if not config_file.is_file() or not weights_file.is_file():
        raise CheckpointError(f"{folder} is not a ranker adapter ({ADAPTER_CONFIG_FILE} and {ADAPTER_WEIGHTS_FILE} "
                           f"are needed). Create one with: {TRAIN_COMMAND}")
    try:
        config = PeftConfig.from_pretrained(str(folder))  # the subclass its peft_type names, e.g. LoraConfig
        if config.peft_type is None:
            raise ValueError("no peft_type")
        for size in ("r", "lora_alpha"):  # LoRA's sizes: peft would fail on them only deep inside the model
            value = getattr(config, size, 1)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ValueError(f"{size} {value!r}")
    except (ValueError, TypeError, KeyError, AttributeError, OSError) as error:  # ValueError covers bad JSON
        raise CheckpointError.corrupt(config_file, error, TRAIN_COMMAND) from error
    try:
        load_file(str(weights_file), device="cpu")  # the whole file, on the CPU: a corrupt or truncated one fails here
    except (SafetensorError, OSError, RuntimeError) as error:
        raise CheckpointError.corrupt(weights_file, error, TRAIN_COMMAND) from error
    device = next(model.parameters()).device
    try:
        # Read on the CPU, then moved beside the base weights by peft. Reading straight onto "cuda" pins host memory,
        # which fails where CUDA exists only inside GPU calls (a ZeroGPU Space's start-up).
        if isinstance(model, PeftModel):
            model.load_adapter(str(folder), adapter_name=name, is_trainable=trainable, torch_device="cpu")
            return model
        return PeftModel.from_pretrained(model, str(folder), config=config, is_trainable=trainable,
                                         adapter_name=name, torch_device="cpu")
    except (ValueError, TypeError, KeyError, OSError, RuntimeError, SafetensorError) as error:
        text = _one_line(error)
        if any(word in text.lower() for word in DEVICE_PROBLEMS):
            # the file was read whole above: what failed is putting it on the device, and retraining would not help
            raise CheckpointError(f"{weights_file} is intact but could not be placed on {device} ({text})") from error
        raise CheckpointError(f"{weights_file} does not fit this base model ({text}): it was trained for another one; "
                              f"pass that one as --base-model, or train one for this model with: {TRAIN_COMMAND}"
                              ) from error


def load_ranker(config: RankerLoadConfig):
    """(model, tokenizer) in eval mode: the base model plus the adapter when one is given."""
    tokenizer = load_tokenizer(config.base_model)
    model = load_base_model(config)
    if config.adapter:
        model = load_adapter(model, config.adapter)
    return model.eval(), tokenizer


QUANTIZATION_NAMES = {"4bit": "4-bit NF4 (bitsandbytes)", "8bit": "8-bit (bitsandbytes)"}


def describe(config: RankerLoadConfig, model=None, query_device: bool = True) -> dict[str, str]:
    """Human-readable facts about a load config (and the loaded `model`, whose weights say how it was quantized):
    device, base model, quantization, adapter. Without `query_device` (ZeroGPU: no CUDA outside GPU calls) the
    device is not asked its name."""
    device = pick_device(config.device)
    if device.type != "cuda":
        name = "CPU"
    else:
        name = torch.cuda.get_device_name(device) if query_device else "CUDA (ZeroGPU: a GPU is lent for each event)"
    quantization = loaded_quantization(model) if model is not None else quantization_of(config, device)
    return {"device": name, "base_model": config.base_model or "SmolLM2-135M-Instruct (default)",
            "quantization": QUANTIZATION_NAMES.get(quantization, "bf16" if device.type == "cuda" else "fp32"),
            "adapter": shown_path(config.adapter) if config.adapter else "none (base model only)"}


def shown_path(path: str | Path) -> str:
    """`path` as a page shows it: relative to the repository when inside it (a visitor has no business with the
    server's folders), else as given."""
    try:
        return str(Path(path).resolve().relative_to(REPOSITORY))
    except ValueError:
        return str(path)
