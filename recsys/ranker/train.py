"""Train the verbalizer ranker: LoRA (QLoRA on CUDA) on "history + 20 candidates -> answer letter".

`python -m recsys.ranker.train` (paper recipe: every training prefix, ~88k examples; on a CPU use
`--max-examples` and shorter prompt budgets). Uses the HF Trainer, so `accelerate launch -m
recsys.ranker.train ...` trains on several GPUs. Validation NDCG@10 on the retriever's candidates
of validation users keeps the best adapter; afterwards the fusion weight is chosen on validation
and the best adapter is evaluated on the test users.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
from tqdm.auto import tqdm

from recsys.data import load_dataset
from recsys.ranker.evaluate import (RANKER_CONFIG_FILE, choose_weight, print_report, score_subset, subset_rows,
                                    two_stage_metrics)
from recsys.ranker.examples import RankingExample, make_examples
from recsys.ranker.model import (DEFAULT_ADAPTER, RankerLoadConfig, add_lora, load_adapter, load_base_model,
                                 load_tokenizer, pick_device, use_4bit)
from recsys.ranker.prompt import LETTERS, PromptConfig, build_prompt
from recsys.ranker.verbalizer import encode_example
from recsys.retriever.candidates import load_candidates
from recsys.retriever.checkpoint import DEFAULT_CHECKPOINT, load_model


TRAINING_LOG_FILE = "training_log.json"


@dataclass
class RankerTrainConfig:
    """Ranker training recipe (defaults: the paper's, with the SmolLM2 base)."""

    base_model: str | None = None
    retriever: str = str(DEFAULT_CHECKPOINT)
    data_dir: str | None = None
    output: str = str(DEFAULT_ADAPTER)
    max_examples: int | None = None  # None = every training prefix (paper)
    hard_negatives: int = 0  # how many of the 19 negatives come from the retriever's top-k
    max_history: int = 20
    max_title_tokens: int = 32
    max_prompt_tokens: int = 1536
    lr: float = 1e-4
    batch_size: int = 16  # effective batch (gradient accumulation over single examples on CPU)
    per_device_batch_size: int = 1
    epochs: float = 1.0
    warmup_steps: int = 100
    eval_every: int = 100  # optimizer steps between validations
    val_users: int | None = None  # validate on a seeded sample of the valid-retrieval subset
    quantization: str = "auto"
    seed: int = 42


class ExampleDataset(torch.utils.data.Dataset):
    """Tokenized examples: (input_ids, labels) with the loss on the answer letter + EOS only."""

    def __init__(self, examples: list[RankingExample], tokenizer, catalog, prompt_config: PromptConfig):
        self.items = []
        for example in tqdm(examples, desc="tokenize examples", leave=False):
            prompt = build_prompt(tokenizer, catalog.titles(example.history), catalog.titles(example.candidates),
                                  prompt_config)
            self.items.append(encode_example(tokenizer, prompt.text, LETTERS[example.answer_index]))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        input_ids, labels = self.items[index]
        return {"input_ids": input_ids, "labels": labels}


def collate(pad_id: int):
    """A collator that right-pads input_ids (pad_id), labels (-100) and builds the attention mask."""
    def pad(batch: list[dict]) -> dict[str, torch.Tensor]:
        length = max(len(b["input_ids"]) for b in batch)
        ids = [b["input_ids"] + [pad_id] * (length - len(b["input_ids"])) for b in batch]
        labels = [b["labels"] + [-100] * (length - len(b["labels"])) for b in batch]
        mask = [[1] * len(b["input_ids"]) + [0] * (length - len(b["input_ids"])) for b in batch]
        return {"input_ids": torch.tensor(ids), "labels": torch.tensor(labels), "attention_mask": torch.tensor(mask)}
    return pad


def build_trainer(model, tokenizer, train_set: torch.utils.data.Dataset, config: RankerTrainConfig,
                  load_config: RankerLoadConfig, callbacks=()):
    """An HF Trainer for the label-only loss: paged AdamW + bf16 + gradient checkpointing when 4-bit on CUDA."""
    from transformers import Trainer, TrainingArguments

    device = pick_device(load_config.device)
    quantized = use_4bit(load_config, device)
    accumulation = max(1, config.batch_size // config.per_device_batch_size)
    arguments = TrainingArguments(
        output_dir=str(Path(config.output) / "trainer"), per_device_train_batch_size=config.per_device_batch_size,
        gradient_accumulation_steps=accumulation, learning_rate=config.lr, num_train_epochs=config.epochs,
        warmup_steps=config.warmup_steps, logging_steps=max(1, config.eval_every // 4), save_strategy="no",
        report_to=[], seed=config.seed, use_cpu=device.type == "cpu", bf16=device.type == "cuda",
        optim="paged_adamw_32bit" if quantized else "adamw_torch", gradient_checkpointing=quantized,
        remove_unused_columns=False, dataloader_num_workers=0, disable_tqdm=False)
    return Trainer(model=model, args=arguments, train_dataset=train_set, data_collator=collate(tokenizer.pad_token_id),
                   callbacks=list(callbacks))


def train(config: RankerTrainConfig) -> dict:
    """Train, validate, keep the best adapter, choose the fusion weight, evaluate on test; returns the metrics."""
    from transformers import TrainerCallback

    started = time.time()
    torch.manual_seed(config.seed)
    output = Path(config.output)
    prompt_config = PromptConfig(config.max_history, config.max_title_tokens, config.max_prompt_tokens)
    load_config = RankerLoadConfig(base_model=config.base_model, quantization=config.quantization)
    dataset = load_dataset("ml-latest-small", config.data_dir)
    candidates = load_candidates(config.retriever)
    val_rows = subset_rows(candidates["val"], config.val_users, config.seed)
    hard = None
    if config.hard_negatives:
        retriever = load_model(config.retriever)
        hard = lambda histories: [ids.tolist() for batch in range(0, len(histories), 256)  # noqa: E731
                                  for ids in retriever.retrieve(histories[batch:batch + 256], 50)[0]]
    examples = make_examples(dataset, config.max_examples, config.seed, hard, config.hard_negatives)
    tokenizer = load_tokenizer(config.base_model)
    model = add_lora(load_base_model(load_config, for_training=True), load_config.lora)
    model.print_trainable_parameters()
    train_set = ExampleDataset(examples, tokenizer, dataset.catalog, prompt_config)
    print(f"{len(train_set)} training examples; {len(val_rows)} validation users in the valid-retrieval subset")

    history: list[dict] = []
    log = {"examples": len(train_set), "batch_size": config.batch_size, "validation_history": history}

    def validate(step: int) -> float:
        scored = score_subset(model, tokenizer, dataset.catalog, dataset, "val", candidates["val"], prompt_config,
                              val_rows, progress=False)
        ndcg = two_stage_metrics(scored, 0.0)["subset"]["two_stage"]["N@10"]
        best = max([h["val_N@10"] for h in history], default=-1.0)
        history.append({"step": step, "examples_seen": step * config.batch_size, "val_N@10": round(ndcg, 4),
                        "elapsed_s": round(time.time() - started, 1)})
        if ndcg > best:
            model.save_pretrained(output)
        (output / TRAINING_LOG_FILE).write_text(json.dumps(log, indent=2) + "\n")
        tqdm.write(f"step {step}: validation subset NDCG@10 {ndcg:.4f} (best {max(best, ndcg):.4f})")
        return ndcg

    class ValidateEvery(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step % config.eval_every == 0:
                validate(state.global_step)

    trainer = build_trainer(model, tokenizer, train_set, config, load_config, [ValidateEvery()])
    validate(0)
    trainer.train()
    if trainer.state.global_step % config.eval_every:
        validate(trainer.state.global_step)
    shutil.rmtree(output / "trainer", ignore_errors=True)
    return finalize(config)


def finalize(config: RankerTrainConfig) -> dict:
    """Evaluate the best saved adapter: choose the fusion weight on all validation users of the subset, then
    score the test users; writes metrics.json and ranker_config.json next to the adapter.

    Also callable on its own (`--finalize-only`) after an interrupted training run.
    """
    output = Path(config.output)
    prompt_config = PromptConfig(config.max_history, config.max_title_tokens, config.max_prompt_tokens)
    load_config = RankerLoadConfig(base_model=config.base_model, quantization=config.quantization)
    dataset = load_dataset("ml-latest-small", config.data_dir)
    candidates = load_candidates(config.retriever)
    log = json.loads((output / TRAINING_LOG_FILE).read_text())
    history = log["validation_history"]
    best = max(history, key=lambda h: (h["val_N@10"], -h["step"]))
    tokenizer = load_tokenizer(config.base_model)
    model = load_adapter(load_base_model(load_config), output).eval()
    val_scored = score_subset(model, tokenizer, dataset.catalog, dataset, "val", candidates["val"], prompt_config,
                              subset_rows(candidates["val"]))
    weight, weights = choose_weight(val_scored)
    test_scored = score_subset(model, tokenizer, dataset.catalog, dataset, "test", candidates["test"], prompt_config,
                               subset_rows(candidates["test"]))
    test = two_stage_metrics(test_scored, weight)
    print_report(test, f"test, fusion weight {weight} (chosen on validation)")
    metrics = {"training_examples": log["examples"], "best_step": best["step"],
               "examples_seen_at_best": best["examples_seen"], "examples_seen": history[-1]["examples_seen"],
               "train_wall_time_s": history[-1]["elapsed_s"], "device": str(pick_device(load_config.device)),
               "validation_history": history, "val_ndcg10_by_fusion_weight": weights, "fusion_weight": weight,
               "val": two_stage_metrics(val_scored, weight), "test": test,
               "test_llm_only": two_stage_metrics(test_scored, 0.0),
               "test_users_in_subset": len(test_scored.rows), "test_users": test_scored.total_users}
    (output / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    (output / RANKER_CONFIG_FILE).write_text(json.dumps(
        {"fusion_weight": weight, "prompt": asdict(prompt_config), "training": asdict(config)}, indent=2) + "\n")
    return metrics


def parse_args(argv=None) -> tuple[RankerTrainConfig, bool]:
    """Flags: one per RankerTrainConfig field, plus --finalize-only."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for field in fields(RankerTrainConfig):
        kind = {"int": int, "float": float, "int | None": int}.get(field.type, str)
        parser.add_argument("--" + field.name.replace("_", "-"), type=kind, default=field.default)
    parser.add_argument("--finalize-only", action="store_true",
                        help="skip training: evaluate the adapter already saved in --output")
    args = vars(parser.parse_args(argv))
    return RankerTrainConfig(**{k: v for k, v in args.items() if k != "finalize_only"}), args["finalize_only"]


if __name__ == "__main__":
    train_config, finalize_only = parse_args()
    finalize(train_config) if finalize_only else train(train_config)
