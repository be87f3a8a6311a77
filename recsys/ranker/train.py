"""Train the verbalizer ranker: LoRA (QLoRA on CUDA) on "history + 20 candidates -> answer letter".

`python -m recsys.ranker.train` is the paper's recipe: every training prefix (~88k examples) with
random negatives, loss on letter + EOS over the whole vocabulary. The CPU recipe of the committed
adapter trains on held-out retriever candidates (`recsys.ranker.heldout`) with the loss over the
20 letters:

    python -m recsys.ranker.heldout --holdout 30
    python -m recsys.ranker.train --examples heldout --loss letters --max-history 10 --lr 5e-4 --batch-size 8

Uses the HF Trainer, so `accelerate launch -m recsys.ranker.train ...` trains on several GPUs. On a
CPU with native bf16 the base weights are bf16 and the LoRA weights fp32. Validation NDCG@10 on the
retriever's candidates of validation users keeps the best adapter; afterwards the fusion weight is
chosen on validation and the best adapter is evaluated on the test users. `--resume` continues an
interrupted run from its last validation; `--stop-at-step` ends a run early (same schedule) for a
later `--resume`.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
from tqdm.auto import tqdm

from recsys.data import load_dataset
from recsys.ranker.evaluate import (RANKER_CONFIG_FILE, choose_weight, ndcg_difference_interval, print_report,
                                    score_subset, subset_rows, two_stage_metrics)
from recsys.ranker.examples import RankingExample, make_examples
from recsys.ranker.fusion import RETRIEVER_ORDER
from recsys.ranker.heldout import load_held_out_examples
from recsys.ranker.model import (DEFAULT_ADAPTER, RankerLoadConfig, add_lora, load_adapter, load_base_model,
                                 load_tokenizer, pick_device, use_4bit)
from recsys.ranker.prompt import LETTERS, PromptConfig, build_prompt, item_texts
from recsys.ranker.verbalizer import encode_example, letter_token_ids, position_ids
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
    examples: str = "random"  # "random": training prefixes, random negatives (paper); "heldout": held-out candidates
    heldout_dir: str = "runs/heldout-30"  # written by `python -m recsys.ranker.heldout`
    max_examples: int | None = None  # None = every example
    hard_negatives: int = 0  # "random" examples: how many of the 19 negatives come from the retriever's top-k
    loss: str = "vocab"  # "vocab": letter + EOS over the whole vocabulary (paper); "letters": over the 20 letters
    max_history: int = 20
    max_title_tokens: int = 32
    max_prompt_tokens: int = 1536
    genres: bool = False  # titles followed by their genres (beyond the paper)
    lr: float = 1e-4
    batch_size: int = 16  # effective batch (gradient accumulation over single examples on CPU)
    per_device_batch_size: int = 1
    epochs: float = 1.0
    warmup_steps: int = 100
    eval_every: int = 100  # optimizer steps between validations
    val_users: int | None = None  # validate on a seeded sample of the valid-retrieval subset
    quantization: str = "auto"
    cpu_precision: str = "auto"  # base weights on CPU: bf16 where the CPU has it natively; LoRA weights stay fp32
    stop_at_step: int | None = None  # end this run at this optimizer step (schedule unchanged); continue with --resume
    resume: bool = False  # continue from the last validation of an interrupted run in --output
    seed: int = 42


def prompt_config_of(config: RankerTrainConfig) -> PromptConfig:
    """The prompt budgets a training config asks for."""
    return PromptConfig(config.max_history, config.max_title_tokens, config.max_prompt_tokens, config.genres)


class ExampleDataset(torch.utils.data.Dataset):
    """Tokenized examples for either loss.

    "vocab": (input_ids, labels) with labels -100 except the answer letter + EOS (the paper's loss).
    "letters": the prompt's input_ids and the answer's index among the candidates.
    """

    def __init__(self, examples: list[RankingExample], tokenizer, catalog, prompt_config: PromptConfig,
                 loss: str = "vocab"):
        if loss not in ("vocab", "letters"):
            raise ValueError(f"loss must be 'vocab' or 'letters', got {loss!r}")
        self.items = []
        for example in tqdm(examples, desc="tokenize examples", leave=False):
            prompt = build_prompt(tokenizer, item_texts(catalog, example.history, prompt_config),
                                  item_texts(catalog, example.candidates, prompt_config), prompt_config)
            if loss == "vocab":
                input_ids, labels = encode_example(tokenizer, prompt.text, LETTERS[example.answer_index])
                self.items.append({"input_ids": input_ids, "labels": labels})
            else:
                self.items.append({"input_ids": tokenizer(prompt.text).input_ids, "answer": example.answer_index})

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        return self.items[index]


def collate(pad_id: int):
    """A collator that right-pads input_ids (pad_id), labels (-100) and builds the attention mask."""
    def pad(batch: list[dict]) -> dict[str, torch.Tensor]:
        length = max(len(b["input_ids"]) for b in batch)
        ids = [b["input_ids"] + [pad_id] * (length - len(b["input_ids"])) for b in batch]
        labels = [b["labels"] + [-100] * (length - len(b["labels"])) for b in batch]
        mask = [[1] * len(b["input_ids"]) + [0] * (length - len(b["input_ids"])) for b in batch]
        return {"input_ids": torch.tensor(ids), "labels": torch.tensor(labels), "attention_mask": torch.tensor(mask)}
    return pad


def collate_letters(pad_id: int):
    """A collator that left-pads prompts (so each one's last token sits at -1) and stacks the answer indices."""
    def pad(batch: list[dict]) -> dict[str, torch.Tensor]:
        length = max(len(b["input_ids"]) for b in batch)
        ids = [[pad_id] * (length - len(b["input_ids"])) + b["input_ids"] for b in batch]
        mask = [[0] * (length - len(b["input_ids"])) + [1] * len(b["input_ids"]) for b in batch]
        return {"input_ids": torch.tensor(ids), "attention_mask": torch.tensor(mask),
                "answer": torch.tensor([b["answer"] for b in batch])}
    return pad


def letter_loss(model, batch: dict[str, torch.Tensor], letter_ids: list[int]) -> torch.Tensor:
    """Mean cross-entropy of the answer among the 20 letter logits at the next token after each prompt.

    This is exactly what the verbalizer ranks by; the full-vocabulary loss also spends effort on EOS
    and on keeping other tokens' mass off the letters, which the verbalizer never reads.
    """
    outputs = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                    position_ids=position_ids(batch["attention_mask"]), logits_to_keep=1, use_cache=False)
    logits = outputs.logits[:, -1, :].float()[:, letter_ids]
    return torch.nn.functional.cross_entropy(logits, batch["answer"].to(logits.device))


def build_trainer(model, tokenizer, train_set: torch.utils.data.Dataset, config: RankerTrainConfig,
                  load_config: RankerLoadConfig, callbacks=()):
    """An HF Trainer for the chosen loss: paged AdamW + bf16 + gradient checkpointing when 4-bit on CUDA.

    Saves a resumable trainer checkpoint at every validation (the last one kept).
    """
    from transformers import Trainer, TrainingArguments

    class LetterLossTrainer(Trainer):
        loss_is_scaled_for_ga = False  # a per-batch mean: the Trainer divides it over accumulation steps

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            return letter_loss(model, inputs, letter_ids)

    device = pick_device(load_config.device)
    quantized = use_4bit(load_config, device)
    accumulation = max(1, config.batch_size // config.per_device_batch_size)
    arguments = TrainingArguments(
        output_dir=str(Path(config.output) / "trainer"), per_device_train_batch_size=config.per_device_batch_size,
        gradient_accumulation_steps=accumulation, learning_rate=config.lr, num_train_epochs=config.epochs,
        warmup_steps=config.warmup_steps, logging_steps=max(1, config.eval_every // 4), save_strategy="steps",
        save_steps=config.eval_every, save_total_limit=1, report_to=[], seed=config.seed,
        use_cpu=device.type == "cpu", bf16=device.type == "cuda",
        optim="paged_adamw_32bit" if quantized else "adamw_torch", gradient_checkpointing=quantized,
        remove_unused_columns=False, dataloader_num_workers=0, disable_tqdm=False)
    if config.loss == "letters":
        letter_ids = letter_token_ids(tokenizer)
        return LetterLossTrainer(model=model, args=arguments, train_dataset=train_set,
                                 data_collator=collate_letters(tokenizer.pad_token_id), callbacks=list(callbacks))
    return Trainer(model=model, args=arguments, train_dataset=train_set, data_collator=collate(tokenizer.pad_token_id),
                   callbacks=list(callbacks))


def training_examples(config: RankerTrainConfig, dataset) -> list[RankingExample]:
    """The examples `config.examples` names, a seeded sample of `max_examples` when given."""
    if config.examples == "heldout":
        examples = load_held_out_examples(config.heldout_dir, dataset)
        if config.max_examples is not None and config.max_examples < len(examples):
            examples = random.Random(config.seed).sample(examples, config.max_examples)
        return examples
    if config.examples != "random":
        raise ValueError(f"examples must be 'random' or 'heldout', got {config.examples!r}")
    hard = None
    if config.hard_negatives:
        retriever = load_model(config.retriever)
        hard = lambda histories: [ids.tolist() for batch in range(0, len(histories), 256)  # noqa: E731
                                  for ids in retriever.retrieve(histories[batch:batch + 256], 50)[0]]
    return make_examples(dataset, config.max_examples, config.seed, hard, config.hard_negatives)


def train(config: RankerTrainConfig) -> dict | None:
    """Train, validate, keep the best adapter, choose the fusion weight, evaluate on test; returns the metrics.

    Returns None when `stop_at_step` ended the run early (continue it with `resume`).
    """
    from transformers import TrainerCallback
    from transformers.trainer_utils import get_last_checkpoint

    torch.manual_seed(config.seed)
    output = Path(config.output)
    output.mkdir(parents=True, exist_ok=True)
    prompt_config = prompt_config_of(config)
    load_config = RankerLoadConfig(base_model=config.base_model, quantization=config.quantization,
                                   cpu_precision=config.cpu_precision)
    dataset = load_dataset("ml-latest-small", config.data_dir)
    candidates = load_candidates(config.retriever)
    val_rows = subset_rows(candidates["val"], config.val_users, config.seed)
    examples = training_examples(config, dataset)
    tokenizer = load_tokenizer(config.base_model)
    model = add_lora(load_base_model(load_config, for_training=True), load_config.lora)
    model.print_trainable_parameters()
    train_set = ExampleDataset(examples, tokenizer, dataset.catalog, prompt_config, config.loss)
    print(f"{len(train_set)} training examples; {len(val_rows)} validation users in the valid-retrieval subset")

    checkpoint = get_last_checkpoint(str(output / "trainer")) if config.resume and (output / "trainer").is_dir() else None
    log_path = output / TRAINING_LOG_FILE
    log = {"examples": len(train_set), "batch_size": config.batch_size, "config": asdict(config),
           "validation_history": [], "train_seconds": 0.0}
    if checkpoint and log_path.is_file():
        log.update({k: v for k, v in json.loads(log_path.read_text()).items() if k in ("validation_history",
                                                                                      "train_seconds")})
        print(f"resuming from {checkpoint}")
    history = log["validation_history"]
    clock = {"since": time.time()}  # training time only: validation is not counted in examples per second

    def validate(step: int) -> float:
        log["train_seconds"] += time.time() - clock["since"]
        started = time.time()
        scored = score_subset(model, tokenizer, dataset.catalog, dataset, "val", candidates["val"], prompt_config,
                              val_rows, batch_size=8, progress=False)
        weight, by_weight = choose_weight(scored)  # the checkpoint is kept for its best two-stage ranking
        ndcg = by_weight[weight]
        best = max([h["val_N@10"] for h in history], default=-1.0)
        seen = step * config.batch_size
        history.append({"step": step, "examples_seen": seen, "val_N@10": round(ndcg, 4), "fusion_weight": weight,
                        "val_llm_only_N@10": round(by_weight[0.0], 4),
                        "val_retriever_N@10": round(by_weight[RETRIEVER_ORDER], 4),
                        "train_s": round(log["train_seconds"], 1), "validation_s": round(time.time() - started, 1),
                        "examples_per_s": round(seen / log["train_seconds"], 3) if step else None})
        if ndcg > best:
            model.save_pretrained(output)
        log_path.write_text(json.dumps(log, indent=2) + "\n")
        tqdm.write(f"step {step}: validation subset NDCG@10 two-stage {ndcg:.4f} (w={weight:g}; best "
                   f"{max(best, ndcg):.4f}), LLM alone {by_weight[0.0]:.4f}, retriever {by_weight[RETRIEVER_ORDER]:.4f}; "
                   f"{history[-1]['examples_per_s']} examples/s")
        clock["since"] = time.time()
        return ndcg

    class ValidateEvery(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step % config.eval_every == 0:
                validate(state.global_step)
            if config.stop_at_step and state.global_step >= config.stop_at_step:
                control.should_training_stop = True
                control.should_save = True

    trainer = build_trainer(model, tokenizer, train_set, config, load_config, [ValidateEvery()])
    if not checkpoint:
        validate(0)
    trainer.train(resume_from_checkpoint=checkpoint)
    if trainer.state.global_step % config.eval_every:
        validate(trainer.state.global_step)
    if trainer.state.global_step < trainer.state.max_steps:
        print(f"stopped at step {trainer.state.global_step} of {trainer.state.max_steps}; continue with --resume")
        return None
    shutil.rmtree(output / "trainer", ignore_errors=True)
    return finalize(config)


def finalize(config: RankerTrainConfig) -> dict:
    """Evaluate the best saved adapter: choose the fusion weight on all validation users of the subset, then
    score the test users; writes metrics.json and ranker_config.json next to the adapter.

    Also callable on its own (`--finalize-only`) after an interrupted training run.
    """
    output = Path(config.output)
    prompt_config = prompt_config_of(config)
    load_config = RankerLoadConfig(base_model=config.base_model, quantization=config.quantization,
                                   cpu_precision=config.cpu_precision)
    dataset = load_dataset("ml-latest-small", config.data_dir)
    candidates = load_candidates(config.retriever)
    log = json.loads((output / TRAINING_LOG_FILE).read_text())
    history = log["validation_history"]
    best = max(history, key=lambda h: (h["val_N@10"], -h["step"]))
    tokenizer = load_tokenizer(config.base_model)
    model = load_adapter(load_base_model(load_config), output).eval()
    val_scored = score_subset(model, tokenizer, dataset.catalog, dataset, "val", candidates["val"], prompt_config,
                              subset_rows(candidates["val"]), batch_size=8)
    weight, weights = choose_weight(val_scored)
    test_scored = score_subset(model, tokenizer, dataset.catalog, dataset, "test", candidates["test"], prompt_config,
                               subset_rows(candidates["test"]), batch_size=8)
    test = two_stage_metrics(test_scored, weight)
    interval = [round(x, 4) for x in ndcg_difference_interval(test_scored, weight)]
    print_report(test, f"test, fusion weight {weight} (chosen on validation); subset NDCG@10 two-stage minus "
                       f"retriever, paired-bootstrap 95% interval {interval}")
    metrics = {"training_examples": log["examples"], "best_step": best["step"],
               "examples_seen_at_best": best["examples_seen"], "examples_seen": history[-1]["examples_seen"],
               "train_time_s": history[-1]["train_s"], "device": str(pick_device(load_config.device)),
               "validation_history": history, "val_ndcg10_by_fusion_weight": weights, "fusion_weight": weight,
               "val": two_stage_metrics(val_scored, weight), "test": test,
               "test_llm_only": two_stage_metrics(test_scored, 0.0), "test_ci95_diff_N@10": interval,
               "test_users_in_subset": len(test_scored.rows), "test_users": test_scored.total_users}
    (output / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    (output / RANKER_CONFIG_FILE).write_text(json.dumps(
        {"fusion_weight": weight, "prompt": asdict(prompt_config), "training": asdict(config)}, indent=2) + "\n")
    return metrics


def parse_args(argv=None) -> tuple[RankerTrainConfig, bool]:
    """Flags: one per RankerTrainConfig field, plus --finalize-only."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for field in fields(RankerTrainConfig):
        flag = "--" + field.name.replace("_", "-")
        if field.type == "bool":
            parser.add_argument(flag, action="store_true")
            continue
        kind = {"int": int, "float": float, "int | None": int}.get(field.type, str)
        parser.add_argument(flag, type=kind, default=field.default)
    parser.add_argument("--finalize-only", action="store_true",
                        help="skip training: evaluate the adapter already saved in --output")
    args = vars(parser.parse_args(argv))
    return RankerTrainConfig(**{k: v for k, v in args.items() if k != "finalize_only"}), args["finalize_only"]


if __name__ == "__main__":
    train_config, finalize_only = parse_args()
    finalize(train_config) if finalize_only else train(train_config)
