"""Train LRURec with the paper's recipe; early stopping on validation Recall@10; resumable.

`python -m recsys.retriever.train --dataset ml-latest-small`
"""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from recsys.cli import add_dataclass_flags, dataclass_from_args
from recsys.data import SequenceDataset, load_dataset
from recsys.data.sources import DATASETS
from recsys.folders import retriever_folder, run_folder
from recsys.machine import describe_machine, machine_record
from recsys.paper import RETRIEVER_MAX_LEN
from recsys.retriever.checkpoint import save_checkpoint
from recsys.retriever.evaluate import evaluate_split
from recsys.retriever.model import LRURec, LRURecConfig



@dataclass
class TrainConfig:
    """Training recipe (defaults: the paper's; the history length follows the data set)."""

    dataset: str = "ml-latest-small"  # ml-latest-small, ml-100k, beauty or games
    data_dir: str | None = None  # the data set's folder or its parent (None: $RECSYS_DATA_DIR, data/, ../shared/data)
    output: str | None = None  # default checkpoints/lrurec-<dataset>
    state_dir: str | None = None  # resumable training state; default runs/lrurec-<dataset>
    seed: int = 42
    batch_size: int = 16  # the paper's; the authors' code trains Amazon at 64
    lr: float = 1e-3  # AdamW's, constant
    weight_decay: float = 0.01  # not applied to biases and LayerNorm
    dropout: float = 0.2
    max_len: int | None = None  # None: the paper's for the data set (recsys.paper.RETRIEVER_MAX_LEN)
    grad_clip: float = 5.0
    eval_every: int = 500  # iterations between validations
    patience: int = 20  # validations without a better Recall@10 before stopping
    max_steps: int = 200_000
    select_metric: str = "R@10"
    tie_order: str = "item"  # equal timestamps ordered by item id (the paper) or "hash" (neutral; recsys.data)
    resume: bool = False  # continue from the state in --state-dir


def training_windows(dataset: SequenceDataset, max_len: int) -> list[tuple[list[int], list[int]]]:
    """(inputs, next-item labels) windows of at most `max_len` from each user's training items, newest first."""
    windows = []
    for user in sorted(dataset.sequences):
        items = dataset.train(user)
        inputs, labels = items[:-1], items[1:]
        for end in range(len(inputs), 0, -max_len):
            start = max(0, end - max_len)
            windows.append((inputs[start:end], labels[start:end]))
    return windows


def collate(windows: list[tuple[list[int], list[int]]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad a batch of windows to (B, L) input and label tensors."""
    length = max(len(i) for i, _ in windows)
    inputs = [[0] * (length - len(i)) + i for i, _ in windows]
    labels = [[0] * (length - len(lab)) + lab for _, lab in windows]
    return torch.tensor(inputs), torch.tensor(labels)


def make_optimizer(model: LRURec, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on weight matrices and embeddings only."""
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    for name, param in model.named_parameters():
        (no_decay if "layer_norm" in name or name.endswith("bias") or "params_log" in name else decay).append(param)
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=config.lr)


def train(config: TrainConfig, dataset: SequenceDataset | None = None) -> dict:
    """Train, keep the best validation checkpoint, evaluate it on val and test; returns metrics.json's content.

    `dataset` replaces the one `config` names (e.g. a truncated copy for held-out ranker examples).
    """
    started = time.time()
    torch.manual_seed(config.seed)
    dataset = dataset or load_dataset(config.dataset, config.data_dir, config.tie_order)
    config = replace(config, max_len=config.max_len or RETRIEVER_MAX_LEN[config.dataset])
    assert config.max_len is not None
    # a catalog of titles is saved only where the data's license allows it; elsewhere the app reads the data
    catalog = dataset.catalog if DATASETS[config.dataset].redistributable else None
    print(f"{config.dataset}: {dataset.statistics()}; {describe_machine(machine_record(torch.float32))}")
    output = Path(config.output or retriever_folder(config.dataset))
    state_path = Path(config.state_dir or run_folder("lrurec", config.dataset)) / "train_state.pt"
    model = LRURec(LRURecConfig(num_items=dataset.num_items, dropout=config.dropout, max_len=config.max_len))
    optimizer = make_optimizer(model, config)
    windows = training_windows(dataset, config.max_len)
    if not windows:
        raise ValueError(f"{config.dataset} has no training sequences to learn from ({dataset.statistics()})")
    progress: dict[str, Any] = {"step": 0, "epoch": 0, "batch": 0, "best": -1.0, "best_step": 0, "bad": 0,
                                "elapsed": 0.0}
    best_state = None
    if config.resume and state_path.exists():
        saved = torch.load(state_path, weights_only=True)
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        best_state = saved["best_model"]
        progress = saved["progress"]
        torch.set_rng_state(saved["rng"])
        print(f"resumed at step {progress['step']} (best {config.select_metric} {progress['best']:.4f})")
    extra = {"dataset": config.dataset, "training": asdict(config)}
    batches_per_epoch = (len(windows) + config.batch_size - 1) // config.batch_size
    bar = tqdm(total=config.max_steps, initial=progress["step"], desc="train LRURec")
    model.train()
    while progress["step"] < config.max_steps and progress["bad"] < config.patience:
        order = torch.randperm(len(windows),
                               generator=torch.Generator().manual_seed(config.seed * 100_003 + progress["epoch"]))
        for batch_index in range(progress["batch"], batches_per_epoch):
            picked = order[batch_index * config.batch_size:(batch_index + 1) * config.batch_size]
            inputs, labels = collate([windows[i] for i in picked])
            loss = model.loss(inputs, labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            progress["step"] += 1
            progress["batch"] = batch_index + 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}", best=f"{progress['best']:.4f}", epoch=progress["epoch"])
            if progress["step"] % config.eval_every == 0:
                val = evaluate_split(model, dataset, "val")
                if val[config.select_metric] > progress["best"]:
                    progress.update(best=val[config.select_metric], best_step=progress["step"], bad=0)
                    best_state = {k: v.clone() for k, v in model.state_dict().items()}
                    save_checkpoint(model, output, catalog, {"val": val}, extra)
                else:
                    progress["bad"] += 1
                tqdm.write(f"step {progress['step']}: val R@10 {val['R@10']:.4f} N@10 {val['N@10']:.4f} "
                           f"(best {progress['best']:.4f} at {progress['best_step']}, {progress['bad']} without gain)")
                progress["elapsed"] += time.time() - started
                started = time.time()
                state_path.parent.mkdir(parents=True, exist_ok=True)
                torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "best_model": best_state,
                            "progress": progress, "rng": torch.get_rng_state()}, state_path)
                if progress["bad"] >= config.patience or progress["step"] >= config.max_steps:
                    break
        else:
            progress["epoch"] += 1
            progress["batch"] = 0
    bar.close()
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    wall_time = progress["elapsed"] + time.time() - started
    metrics: dict[str, Any] = {
        "val": evaluate_split(model, dataset, "val"), "test": evaluate_split(model, dataset, "test"),
        "best_step": progress["best_step"], "steps": progress["step"], "wall_time_s": round(wall_time, 1),
        "machine": machine_record(torch.float32), "dataset_statistics": dataset.statistics()}
    save_checkpoint(model, output, catalog, metrics, extra)
    print(f"best step {progress['best_step']}; test R@10 {metrics['test']['R@10']:.4f} "
          f"N@10 {metrics['test']['N@10']:.4f}; {wall_time / 60:.1f} min; saved to {output}")
    return metrics


def parse_args(argv=None) -> TrainConfig:
    """Flags: one per TrainConfig field."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_dataclass_flags(parser, TrainConfig, choices={"dataset": sorted(DATASETS)})
    return dataclass_from_args(TrainConfig, parser.parse_args(argv))


if __name__ == "__main__":
    train(parse_args())
