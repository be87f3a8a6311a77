"""Catalog pretraining: LoRA on the base model as a language model of users' title sequences.

`python -m recsys.ranker.catalog_lm --max-minutes 60` (resumable with `--resume`)

The text is title likelihood's format (`recsys.ranker.title_likelihood`): a header, then one title a
line; every title token (and each line's newline) is a target, the header is not. The sequences are
each user's training items without the held-out last ones of the widest held-out cut
(`recsys.ranker.heldout`), so no validation or test item and no held-out position (whose rows choose
the fusion weights) is ever read: windows of `window` consecutive titles, a fresh seeded order.

Held-out next-title perplexity (per title token) is measured on windows of the held-out positions of
the held-out validation users, before training and at every evaluation; the adapter with the lowest
one is kept in `--output`. The loop is plain torch: bf16 base weights where the CPU computes bf16
(fp32 otherwise), fp32 LoRA weights, AdamW; its state is saved as safetensors at every evaluation.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from recsys.cli import add_dataclass_flags, dataclass_from_args
from recsys.data import SequenceDataset, load_dataset
from recsys.machine import machine_record
from recsys.ranker.heldout import HeldOutConfig, held_out_counts, is_validation_user
from recsys.ranker.model import LoraSettings, RankerLoadConfig, add_lora, load_base_model, load_tokenizer
from recsys.ranker.title_likelihood import TitleConfig, history_ids, title_ids, title_texts

REPO_ROOT = Path(__file__).resolve().parents[2]
LOG_FILE = "catalog_lm_log.json"
STATE_FILE = "optimizer_state.safetensors"
ALL_LINEAR = "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"


@dataclass
class CatalogLMConfig:
    """Catalog pretraining recipe."""

    base_model: str | None = None
    data_dir: str | None = None
    output: str = str(REPO_ROOT / "runs" / "catalog-lm")
    window: int = 16  # titles a training sequence
    max_title_tokens: int = 32
    years: bool = False
    lora_r: int = 16
    lora_alpha: int = 32
    lora_targets: str = ALL_LINEAR
    lr: float = 3e-4
    batch_size: int = 8
    epochs: float = 1.0
    warmup_steps: int = 20
    eval_every: int = 50  # optimizer steps between held-out evaluations (and saves)
    eval_windows: int = 120  # held-out windows scored at each evaluation (seeded sample)
    max_minutes: float | None = None  # stop (saved, resumable) once this much training time has passed
    cpu_precision: str = "auto"
    resume: bool = False
    seed: int = 0


def kept_sequences(dataset: SequenceDataset) -> dict[int, list[int]]:
    """Each user's training items without the held-out last ones of the widest cut (what pretraining may read)."""
    counts = held_out_counts(dataset, max(HeldOutConfig().cuts))
    return {u: dataset.train(u)[: len(dataset.train(u)) - counts[u]] for u in sorted(dataset.sequences)}


def held_out_sequences(dataset: SequenceDataset) -> dict[int, list[int]]:
    """The held-out validation users' held-out training positions (never read by pretraining)."""
    counts = held_out_counts(dataset, max(HeldOutConfig().cuts))
    users = torch.tensor(sorted(dataset.sequences))
    validation = users[is_validation_user(users)].tolist()
    return {u: dataset.train(u)[len(dataset.train(u)) - counts[u]:] for u in validation if counts[u]}


def windows(sequences: dict[int, list[int]], size: int) -> list[list[int]]:
    """Consecutive non-overlapping windows of `size` items (the last one of a user may be shorter, >= 2 items)."""
    chunks = []
    for items in sequences.values():
        chunks += [items[i:i + size] for i in range(0, len(items), size) if len(items[i:i + size]) >= 2]
    return chunks


def epochs_of(chunks: list[list[int]], epochs: float, seed: int) -> list[list[int]]:
    """`epochs` passes over `chunks` (a fraction of a pass at the end), each pass in its own seeded order."""
    rng, order = random.Random(seed), list[list[int]]()
    while len(order) < int(len(chunks) * epochs):
        shuffled = list(chunks)
        rng.shuffle(shuffled)
        order += shuffled
    return order[: int(len(chunks) * epochs)]


def encode_window(tokenizer, titles: list[str]) -> tuple[list[int], list[int]]:
    """(input_ids, labels) of one window: the header is context (-100), every title line's tokens are targets."""
    ids = history_ids(tokenizer, [])
    labels = [-100] * len(ids)
    for title in titles:
        line = title_ids(tokenizer, title)
        ids += line
        labels += line
    return ids, labels


def batches(encoded: list[tuple[list[int], list[int]]], pad_id: int, size: int):
    """Right-padded (input_ids, attention_mask, labels) batches of `size`, in the given order."""
    for start in range(0, len(encoded), size):
        part = encoded[start:start + size]
        length = max(len(ids) for ids, _ in part)
        yield (torch.tensor([ids + [pad_id] * (length - len(ids)) for ids, _ in part]),
               torch.tensor([[1] * len(ids) + [0] * (length - len(ids)) for ids, _ in part]),
               torch.tensor([labels + [-100] * (length - len(labels)) for _, labels in part]))


@torch.no_grad()
def perplexity(model, encoded: list[tuple[list[int], list[int]]], pad_id: int, batch_size: int = 8) -> float:
    """Per-token perplexity of the target tokens of `encoded` windows (exp of the mean negative log-likelihood)."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for input_ids, mask, labels in batches(encoded, pad_id, batch_size):
        logits = model(input_ids=input_ids.to(model.device), attention_mask=mask.to(model.device)).logits.float()
        targets = labels[:, 1:].to(logits.device)
        losses = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), targets, ignore_index=-100,
                                                   reduction="sum")
        total += float(losses)
        count += int((targets != -100).sum())
    model.train(was_training)
    return math.exp(total / max(count, 1))


def learning_rate(step: int, total: int, config: CatalogLMConfig) -> float:
    """Linear warm-up over `warmup_steps`, then linear decay to 0 at `total` steps."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    return config.lr * max(0.0, (total - step) / max(1, total - config.warmup_steps))


def save_optimizer(path: Path, model, optimizer: torch.optim.Optimizer) -> None:
    """AdamW's moments of every trainable parameter, by parameter name, as safetensors."""
    tensors = {}
    for name, parameter in model.named_parameters():
        state = optimizer.state.get(parameter)
        if state:
            tensors[f"{name}::exp_avg"] = state["exp_avg"].contiguous()
            tensors[f"{name}::exp_avg_sq"] = state["exp_avg_sq"].contiguous()
            tensors[f"{name}::step"] = torch.as_tensor(state["step"]).reshape(1).float()
    save_file(tensors, str(path))


def load_optimizer(path: Path, model, optimizer: torch.optim.Optimizer) -> None:
    """Restore what `save_optimizer` wrote into a fresh optimizer over the same parameters."""
    tensors = load_file(str(path))
    for name, parameter in model.named_parameters():
        if f"{name}::exp_avg" in tensors:
            optimizer.state[parameter] = {"exp_avg": tensors[f"{name}::exp_avg"],
                                          "exp_avg_sq": tensors[f"{name}::exp_avg_sq"],
                                          "step": tensors[f"{name}::step"].reshape(())}


def train(config: CatalogLMConfig, dataset: SequenceDataset | None = None) -> dict:
    """Pretrain (or continue), keep the adapter with the lowest held-out perplexity; returns the log."""
    torch.manual_seed(config.seed)
    output = Path(config.output)
    output.mkdir(parents=True, exist_ok=True)
    dataset = dataset or load_dataset("ml-latest-small", config.data_dir)
    load = RankerLoadConfig(base_model=config.base_model, device="cpu" if not torch.cuda.is_available() else "auto",
                            cpu_precision=config.cpu_precision)
    tokenizer = load_tokenizer(config.base_model)
    model = load_base_model(load, for_training=True)
    dtype = next(model.parameters()).dtype
    titles = TitleConfig(max_title_tokens=config.max_title_tokens, years=config.years)

    def encode(chunks: list[list[int]]):
        return [encode_window(tokenizer, title_texts(tokenizer, dataset.catalog, c, titles)) for c in chunks]

    train_windows = epochs_of(windows(kept_sequences(dataset), config.window), config.epochs, config.seed)
    eval_windows = windows(held_out_sequences(dataset), config.window)
    random.Random(config.seed + 1).shuffle(eval_windows)
    encoded_eval = encode(eval_windows[: config.eval_windows])
    total_steps = math.ceil(len(train_windows) / config.batch_size)
    pad_id = tokenizer.pad_token_id

    log_path = output / LOG_FILE
    log = json.loads(log_path.read_text()) if config.resume and log_path.is_file() else None
    if log is None:
        log = {"config": asdict(config), "machine": machine_record(dtype), "train_windows": len(train_windows),
               "train_tokens": None, "eval_windows": len(encoded_eval), "total_steps": total_steps,
               "evaluations": [], "seconds": 0.0, "step": 0,
               "perplexity_before": perplexity(model, encoded_eval, pad_id)}
        print(f"held-out perplexity before: {log['perplexity_before']:.2f}")
    elif asdict(config) != log["config"]:  # a resumed run with other settings (e.g. fewer epochs): say from when
        log.setdefault("changes", []).append({"step": log["step"], "config": asdict(config)})
        log.update(train_windows=len(train_windows), total_steps=total_steps)
    lora = LoraSettings(r=config.lora_r, alpha=config.lora_alpha, target_modules=tuple(config.lora_targets.split(",")))
    model = add_lora(model, lora)
    state_dir = output / "last"
    if config.resume and (state_dir / "adapter_model.safetensors").is_file():
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(model, load_file(str(state_dir / "adapter_model.safetensors")))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=config.lr,
                                  weight_decay=0.0)
    if config.resume and (state_dir / STATE_FILE).is_file():
        load_optimizer(state_dir / STATE_FILE, model, optimizer)
    step = log["step"]
    encoded_train = encode(train_windows)
    log["train_tokens"] = sum(sum(1 for x in labels if x != -100) for _, labels in encoded_train)
    model.train()
    started, tokens, evaluating, seconds_before = time.perf_counter(), 0, 0.0, log["seconds"]
    best = min((e["perplexity"] for e in log["evaluations"]), default=math.inf)
    for input_ids, mask, labels in batches(encoded_train[step * config.batch_size:], pad_id, config.batch_size):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, total_steps, config)
        loss = model(input_ids=input_ids.to(model.device), attention_mask=mask.to(model.device),
                     labels=labels.to(model.device)).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        tokens += int(mask.sum())
        elapsed = seconds_before + time.perf_counter() - started  # every run's time, this one's as it goes
        out_of_time = config.max_minutes is not None and elapsed > config.max_minutes * 60
        if step % config.eval_every == 0 or step == total_steps or out_of_time:
            training_seconds = time.perf_counter() - started - evaluating
            value = perplexity(model, encoded_eval, pad_id)
            evaluating = time.perf_counter() - started - training_seconds
            entry = {"step": step, "windows_seen": min(step * config.batch_size, len(train_windows)),
                     "loss": round(loss.item(), 4), "perplexity": round(value, 3), "minutes": round(elapsed / 60, 1),
                     "train_tokens_per_second": round(tokens / max(training_seconds, 1e-9), 1)}
            log["evaluations"].append(entry)
            print(json.dumps(entry), flush=True)
            if value < best:
                best = value
                model.save_pretrained(str(output))
            model.save_pretrained(str(state_dir))
            save_optimizer(state_dir / STATE_FILE, model, optimizer)
            log.update(step=step, seconds=round(elapsed, 1))
            log_path.write_text(json.dumps(log, indent=2) + "\n")
        if out_of_time:
            print(f"stopped after {config.max_minutes} minutes at step {step} of {total_steps}; continue with --resume")
            break
    log.update(step=step, perplexity_best=round(best, 3), finished=step >= total_steps)
    log_path.write_text(json.dumps(log, indent=2) + "\n")
    return log


def parse_args(argv=None) -> CatalogLMConfig:
    """Flags: one per CatalogLMConfig field."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_dataclass_flags(parser, CatalogLMConfig)
    return dataclass_from_args(CatalogLMConfig, parser.parse_args(argv))


if __name__ == "__main__":
    train(parse_args())
