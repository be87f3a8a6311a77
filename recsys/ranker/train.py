"""Train the verbalizer ranker: LoRA (QLoRA on CUDA) on "history + 20 candidates -> answer letter".

`python -m recsys.ranker.train` is the paper's recipe: every training prefix (~88k examples) with
random negatives, loss on letter + EOS over the whole vocabulary. The committed adapter learns the
*residual* of a fixed prior on held-out retriever candidates: cross-entropy over
softmax(letter logits + prior), prior = w_r log-softmax(retriever) + w_c co-watch attached to the
films, the candidates shuffled in the prompt so that a letter's position earns nothing, each example's
20 candidates the ones the served pool keeps (`recsys.ranker.pool`; `--pool 20`: the retriever's top-20):

    python -m recsys.ranker.heldout                   # truncated retrievers -> their top-100 at 14,947 positions
    python -m recsys.ranker.prior --write             # co-watch window/span and prior weights
    python -m recsys.ranker.train --examples heldout --loss residual --shuffle ...

On an Amazon data set (leave-one-out, sequences of ~9 items, no truncated retrievers) `--examples served
--over-prior --val-users N` trains on what the app serves at the one position its retriever never trained on: the
served 20 at the validation item of every validation user outside the N that validate (`served_examples`).

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
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from recsys import NUM_CANDIDATES
from recsys.cli import add_dataclass_flags, dataclass_from_args
from recsys.data import load_dataset
from recsys.data.sources import DATASETS
from recsys.folders import RUNS, retriever_folder, run_folder, served_folder
from recsys.distributed import is_main_process, process_share
from recsys.machine import machine_record
from recsys.ranker.cowatch import COUNTS_FILE, CoWatchConfig, CoWatchCounts
from recsys.ranker.artefacts import PRIOR_FILE, TITLE_CONFIG_FILE, TRAINING_CONFIG_FILE, RankerArtefacts
from recsys.ranker.evaluate import (WEIGHT_GRID, ablation, choose_weight, print_ablation, rows_ndcg10, score_llm,
                                    weight_gain)
from recsys.ranker.examples import RankingExample, make_examples
from recsys.ranker.fusion import FusionWeights, llm_opinion, prior_scores
from recsys.ranker.heldout import load_held_out, split_by_user
from recsys.ranker.model import (LoraSettings, RankerLoadConfig, add_lora, load_adapter,
                                 load_base_model, load_tokenizer, pick_device, use_4bit)
from recsys.ranker.prior import pooled_heldout_rows
from recsys.ranker.served import ServedConfig
from recsys.ranker.rows import RankingRows, pool_trade, split_rows
from recsys.ranker.prompt import LETTERS, PromptConfig, evidence_notes, prompt_from_ids
from recsys.ranker.verbalizer import encode_example, forward_letter_logits, letter_token_ids
from recsys.retriever.candidates import load_candidates

TRAINING_LOG_FILE = "training_log.json"
LOSSES = ("vocab", "letters", "residual")
EXAMPLES = ("random", "heldout", "served")


@dataclass
class RankerTrainConfig:
    """Ranker training recipe (defaults: the paper's, with the SmolLM2 base)."""

    base_model: str | None = None  # a hub name or local folder (None: SmolLM2-135M-Instruct, prepared locally)
    dataset: str = "ml-latest-small"  # what the retriever was trained on and the prompt's items are (its domain)
    retriever: str = ""  # the LRURec checkpoint ("": the data set's committed one)
    candidates: str | None = None  # folder of the retriever's candidates.safetensors (None: the retriever's folder)
    data_dir: str | None = None  # the data set's folder or its parent (None: $RECSYS_DATA_DIR, data/, ../shared/data)
    output: str = ""  # where the best adapter, its log and its metrics go ("": runs/ranker-DATASET;
    # a committed folder is replaced by hand, once validation favours the new one)
    examples: str = "random"  # "random": training prefixes, random negatives (paper); "heldout": held-out candidates
    # (MovieLens); "served": the served 20 at the validation position of validation users outside --val-users' sample
    heldout_dir: str = str(RUNS / "heldout")  # written by `python -m recsys.ranker.heldout`
    prior: str = ""  # folder with prior.json, served_config.json and cowatch.safetensors
    # (`recsys.ranker.prior --write`; "": the data set's served folder)
    pool: int | None = None  # "heldout": the 20 the prior keeps of each row's top-`pool` (None: the served pool)
    shuffle: bool = False  # candidates in a random order in each prompt (the prior carries the retriever's order)
    val_examples: int = 400  # "heldout": validation rows scored at every validation (seeded sample)
    max_examples: int | None = None  # None = every example
    loss: str = "vocab"  # "vocab": letter + EOS over the vocabulary (paper); "letters": over the 20 letters;
    # "residual": over the 20 letters' logits plus the fixed prior of each film
    max_history: int = 20  # the history's last N titles in the prompt
    max_title_tokens: int = 32  # each title cut to this many tokens
    max_prompt_tokens: int = 1536  # a longer prompt drops its oldest history titles until it fits
    years: bool = True  # titles keep their year in the prompt
    evidence: bool = False  # each candidate followed by its retriever rank and co-watch count (held-out examples)
    lora_top_layers: int | None = None  # LoRA on the last N decoder layers only (None: all)
    lora_targets: str = "q_proj,v_proj"  # comma-separated module names that get LoRA (paper: q_proj,v_proj)
    lr: float = 1e-4  # peak learning rate, after a linear warm-up (then a linear decay)
    batch_size: int = 16  # effective batch (gradient accumulation over single examples on CPU)
    per_device_batch_size: int = 1  # examples a forward pass; the rest of --batch-size accumulates
    epochs: float = 1.0  # passes over the examples
    warmup_steps: int = 100  # optimizer steps of linear warm-up
    eval_every: int = 100  # optimizer steps between validations
    val_users: int | None = None  # validate on a seeded sample of the valid-retrieval subset
    over_prior: bool = False  # "random" examples validated, and the LLM's weight chosen, on top of --prior's served
    # prior and pool (an Amazon data set's folder: what its app serves); without it the paper's way, on top of the
    # retriever's top-20 alone
    quantization: str = "auto"  # "auto": 4-bit NF4 (QLoRA) on CUDA, none on CPU; or "none", "4bit", "8bit"
    cpu_precision: str = "auto"  # base weights on CPU: bf16 where the CPU has it natively; LoRA weights stay fp32
    stop_at_step: int | None = None  # end this run at this optimizer step (schedule unchanged); continue with --resume
    resume: bool = False  # continue from the last validation of an interrupted run in --output
    seed: int = 42

    def __post_init__(self) -> None:
        """The data set's own folders where none is given: its retriever and served prior, and a run folder that no
        committed one is overwritten by."""
        self.retriever = self.retriever or str(retriever_folder(self.dataset))
        self.prior = self.prior or str(served_folder(self.dataset))
        self.output = self.output or str(run_folder("ranker", self.dataset))


def prompt_config_of(config: RankerTrainConfig) -> PromptConfig:
    """The prompt budgets a training config asks for, its instruction naming the data set's items."""
    return PromptConfig(config.max_history, config.max_title_tokens, config.max_prompt_tokens, config.years,
                        config.evidence, DATASETS[config.dataset].domain)


class ExampleDataset(torch.utils.data.Dataset):
    """Tokenized examples for each loss.

    "vocab": (input_ids, labels) with labels -100 except the answer letter + EOS (the paper's loss).
    "letters": the prompt's input_ids and the answer's index among the candidates (letter order).
    "residual": as "letters", plus each letter's prior (20,): the fixed prior of the film shown at that letter.
    With `shuffle_seed` the candidates appear in a seeded random order per example (answer and prior follow).
    With `prompt_config.evidence` each candidate's line carries its retriever rank and co-watch count
    (`prompt.evidence_notes`), read from `cowatch` (N, 20): the examples' co-watch scores in the retriever's
    order, which must also be the examples' candidate order (held-out examples).
    """

    def __init__(self, examples: list[RankingExample], tokenizer, catalog, prompt_config: PromptConfig,
                 loss: str = "vocab", priors: torch.Tensor | None = None, shuffle_seed: int | None = None,
                 cowatch: torch.Tensor | None = None):
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
        if (loss == "residual") != (priors is not None):
            raise ValueError("the residual loss needs one prior row per example, and only it takes priors")
        if prompt_config.evidence and cowatch is None:
            raise ValueError("prompts with evidence need the examples' co-watch scores")
        rng = random.Random(shuffle_seed)
        self.items = []
        for index, example in enumerate(tqdm(examples, desc="tokenize examples", leave=False)):
            order = list(range(len(example.candidates)))
            if shuffle_seed is not None:
                rng.shuffle(order)
            candidates = [example.candidates[j] for j in order]
            answer = order.index(example.answer_index)
            notes = evidence_notes(cowatch[index], order) if prompt_config.evidence and cowatch is not None else None
            prompt = prompt_from_ids(tokenizer, catalog, example.history, candidates, prompt_config, notes=notes)
            if loss == "vocab":
                input_ids, labels = encode_example(tokenizer, prompt.text, LETTERS[answer])
                self.items.append({"input_ids": input_ids, "labels": labels})
                continue
            item = {"input_ids": tokenizer(prompt.text).input_ids, "answer": answer}
            if priors is not None:
                item["prior"] = priors[index][order].tolist()
            self.items.append(item)

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
    """A collator that left-pads prompts (so each one's last token sits at -1), stacks the answer indices and,
    for the residual loss, the priors (B, 20)."""
    def pad(batch: list[dict]) -> dict[str, torch.Tensor]:
        length = max(len(b["input_ids"]) for b in batch)
        ids = [[pad_id] * (length - len(b["input_ids"])) + b["input_ids"] for b in batch]
        mask = [[0] * (length - len(b["input_ids"])) + [1] * len(b["input_ids"]) for b in batch]
        padded = {"input_ids": torch.tensor(ids), "attention_mask": torch.tensor(mask),
                  "answer": torch.tensor([b["answer"] for b in batch])}
        if "prior" in batch[0]:
            padded["prior"] = torch.tensor([b["prior"] for b in batch], dtype=torch.float32)
        return padded
    return pad


def letter_loss(model, batch: dict[str, torch.Tensor], letter_ids: list[int]) -> torch.Tensor:
    """Mean cross-entropy of the answer among the 20 letters at the next token after each prompt.

    Without a prior this is exactly what the verbalizer ranks by. With `batch["prior"]` (B, 20) it is the
    fused score the app ranks by, `recsys.ranker.fusion` with the LLM's weight 1: the LLM is trained
    through the sum and learns only what the prior lacks (Clark et al., 2019).
    """
    scores = llm_opinion(forward_letter_logits(model, batch, letter_ids))
    if "prior" in batch:  # prior = `fusion.prior_scores`: with it, the fused score at the LLM's weight 1
        scores = scores + batch["prior"].to(scores.device)
    return torch.nn.functional.cross_entropy(scores, batch["answer"].to(scores.device))


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
    if config.loss in ("letters", "residual"):
        letter_ids = letter_token_ids(tokenizer)
        return LetterLossTrainer(model=model, args=arguments, train_dataset=train_set,
                                 data_collator=collate_letters(tokenizer.pad_token_id), callbacks=list(callbacks))
    return Trainer(model=model, args=arguments, train_dataset=train_set, data_collator=collate(tokenizer.pad_token_id),
                   callbacks=list(callbacks))


@dataclass
class TrainingData:
    """What one training run reads: its examples, their priors, the validation rows and the prior it adds to."""

    examples: list[RankingExample]
    priors: torch.Tensor | None  # (N, 20) in the examples' candidate order, for the residual loss
    cowatch: torch.Tensor | None  # (N, 20) the examples' co-watch scores (held-out examples), for prompt evidence
    validation: RankingRows  # scored at every validation
    prior_weights: FusionWeights  # the fusion without the LLM; the LLM's weight is chosen on validation
    cowatch_counts: CoWatchCounts | None  # counts over every training part: validation and test users


def served_examples(rows: RankingRows, validation: RankingRows, max_examples: int | None,
                    rng: random.Random) -> RankingRows:
    """The training rows of served examples: `rows` (a split's rows as served) whose target the served 20 hold, of the
    users `validation` does not hold (a seeded sample of `max_examples` of them when given), in their order.

    On a leave-one-out data set the validation item is the one position of a user the retriever never trained on
    (it only chose the retriever's checkpoint), so these are the candidates the ranker meets when serving, hard
    negatives included, with every user that chooses the LLM's weight and checkpoint kept out.
    """
    if rows.users is None or validation.users is None:
        raise ValueError("served examples are split rows, one per user")
    validating = set(validation.users.tolist())
    index = [i for i, (user, target) in enumerate(zip(rows.users.tolist(), rows.target_index.tolist()))
             if target >= 0 and user not in validating]
    if max_examples is not None and max_examples < len(index):
        index = sorted(rng.sample(index, max_examples))
    return rows.select(index)


def training_data(config: RankerTrainConfig, dataset) -> TrainingData:
    """Examples, priors and validation rows as `config` asks.

    "heldout": held-out examples of ~85% of users train, a seeded sample of `val_examples` rows of the
    other users validates, both with the 20 candidates the served pool keeps (`pooled_heldout_rows`).
    "random": the paper's examples, validated on the paper's validation users (with `over_prior`, the LLM added to
    the prior and pool `config.prior` serves). "served": `served_examples`, validated as "random" with `over_prior`
    on a seeded sample of `val_users` validation users, whose own rows never train.
    Held-out runs read the prior chosen by `recsys.ranker.prior` from `config.prior` (the residual loss trains
    on it; every loss is validated with the LLM added to it).
    """
    if config.examples not in EXAMPLES:
        raise ValueError(f"examples must be one of {', '.join(EXAMPLES)}, got {config.examples!r}")
    if config.over_prior and (config.examples == "heldout" or config.pool is not None):
        raise ValueError("--over-prior is for the paper's examples or the served ones, with the pool --prior serves "
                         "(held-out examples are always validated over the prior; --pool is theirs)")
    if config.examples == "served" and not (config.over_prior and config.val_users):
        raise ValueError("served examples need --over-prior (the stage one they come from) and --val-users (the "
                         "validation sample their users are kept out of)")
    if config.evidence and config.examples == "random":
        raise ValueError("prompt evidence needs the retriever's candidates (--examples heldout or served): random "
                         "negatives have no retriever ranks")
    rng = random.Random(config.seed)
    if config.examples == "heldout" or config.over_prior:  # trained on (residual) or validated with the fitted prior
        saved = RankerArtefacts.load(config.prior)
        prior = saved.require_prior()
        cowatch_config, prior_weights, counts = prior.cowatch, prior.weights, saved.counts
    else:
        cowatch_config, prior_weights, counts = CoWatchConfig(), FusionWeights(retriever=1.0, cowatch=0.0), None
    if config.examples in ("random", "served"):
        if config.loss == "residual" and config.examples == "random":
            raise ValueError("the residual loss needs the retriever's candidates (--examples heldout or served): "
                             "random negatives have no retriever scores")
        val_candidates = load_candidates(config.candidates or config.retriever)["val"]
        pool = saved.pool if config.over_prior else NUM_CANDIDATES
        weights = prior_weights if config.over_prior else None
        validation = split_rows(dataset, "val", val_candidates, counts, config.val_users, config.seed, pool=pool,
                                weights=weights)
        if config.examples == "random":
            return TrainingData(make_examples(dataset, config.max_examples, config.seed), None, None, validation,
                                prior_weights, counts)
        rows = served_examples(split_rows(dataset, "val", val_candidates, counts, pool=pool, weights=weights),
                               validation, config.max_examples, rng)
        priors = prior_scores(rows.retriever_scores, rows.cowatch, prior_weights) if config.loss == "residual" else None
        return TrainingData(rows.ranking_examples(), priors, rows.cowatch, validation, prior_weights, counts)
    train_part, val_part = split_by_user(load_held_out(config.heldout_dir))
    pool = config.pool if config.pool is not None else saved.pool
    rows = pooled_heldout_rows(train_part, dataset, cowatch_config, prior_weights, pool)
    if config.max_examples is not None and config.max_examples < len(rows):
        rows = rows.select(sorted(rng.sample(range(len(rows)), config.max_examples)))
    priors = prior_scores(rows.retriever_scores, rows.cowatch, prior_weights) if config.loss == "residual" else None
    validation = pooled_heldout_rows(val_part, dataset, cowatch_config, prior_weights, pool, misses=True)
    if config.val_examples < len(validation):
        validation = validation.select(sorted(rng.sample(range(len(validation)), config.val_examples)))
    return TrainingData(rows.ranking_examples(), priors, rows.cowatch, validation, prior_weights, counts)


def train(config: RankerTrainConfig) -> dict | None:
    """Train, validate, keep the best adapter, choose the LLM's fusion weight, evaluate on test; returns the metrics.

    Returns None when `stop_at_step` ended the run early (continue it with `resume`).
    """
    from transformers import TrainerCallback
    from transformers.trainer_utils import get_last_checkpoint

    torch.manual_seed(config.seed)
    output = Path(config.output)
    output.mkdir(parents=True, exist_ok=True)
    prompt_config = prompt_config_of(config)
    load_config = RankerLoadConfig(base_model=config.base_model, quantization=config.quantization,
                                   cpu_precision=config.cpu_precision,
                                   lora=LoraSettings(target_modules=tuple(config.lora_targets.split(",")),
                                                     top_layers=config.lora_top_layers))
    dataset = load_dataset(config.dataset, config.data_dir)
    data = training_data(config, dataset)
    tokenizer = load_tokenizer(config.base_model)
    model = add_lora(load_base_model(load_config, for_training=True), load_config.lora)
    model.print_trainable_parameters()
    train_set = ExampleDataset(data.examples, tokenizer, dataset.catalog, prompt_config, config.loss, data.priors,
                               config.seed if config.shuffle else None, data.cowatch)
    print(f"{len(train_set)} training examples; {len(data.validation)} validation rows")

    checkpoint = (get_last_checkpoint(str(output / "trainer"))
                  if config.resume and (output / "trainer").is_dir() else None)
    log_path = output / TRAINING_LOG_FILE
    log: dict[str, Any] = {"examples": len(train_set), "validation_rows": len(data.validation),
                           "batch_size": config.batch_size, "config": asdict(config),
                           "machine": machine_record(next(model.parameters()).dtype),
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
        rows = score_llm(model, tokenizer, dataset.catalog, data.validation, prompt_config, progress=False)
        # the checkpoint is chosen with the LLM in the sum (weight > 0): at weight 0 every checkpoint ties
        weights, by_weight = choose_weight(rows, data.prior_weights, "llm", [w for w in WEIGHT_GRID if w > 0])
        ndcg = by_weight[weights.llm]
        best = max([h["val_N@10"] for h in history], default=-1.0)
        seen = step * config.batch_size * process_share(0)[2]  # each process adds its own batch (data-parallel)
        history.append({"step": step, "examples_seen": seen, "val_N@10": round(ndcg, 4), "llm_weight": weights.llm,
                        "val_trained_sum_N@10": round(by_weight[1.0], 4),
                        "val_prior_N@10": round(by_weight[0.0], 4),
                        "val_llm_alone_N@10": round(rows_ndcg10(rows, FusionWeights(0.0, 0.0, 1.0)), 4),
                        "val_retriever_N@10": round(rows_ndcg10(rows, FusionWeights(1.0, 0.0, 0.0)), 4),
                        "train_s": round(log["train_seconds"], 1), "validation_s": round(time.time() - started, 1),
                        "examples_per_s": round(seen / log["train_seconds"], 3) if step else None})
        if is_main_process():  # under `accelerate launch` every process validates (sharded); one writes
            if ndcg > best:
                model.save_pretrained(output)
            log_path.write_text(json.dumps(log, indent=2) + "\n")
        h = history[-1]
        tqdm.write(f"step {step}: validation NDCG@10 {ndcg:.4f} (LLM weight {weights.llm:g}; "
                   f"best {max(best, ndcg):.4f}); prior {h['val_prior_N@10']:.4f}, "
                   f"LLM alone {h['val_llm_alone_N@10']:.4f}, retriever "
                   f"{h['val_retriever_N@10']:.4f}; {h['examples_per_s']} examples/s")
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


def finalize(config: RankerTrainConfig, zero_shot: bool = False) -> dict:
    """Evaluate the best saved adapter: choose the LLM's fusion weight on all validation rows (over a saved prior,
    zero-shot or `over_prior`: a seeded `val_users` sample of the served stage one's rows, reported as "val"),
    confirm on the paper's validation users, score the test users once; writes metrics.json, training_config.json,
    served_config.json (`recsys.ranker.served`: what the app serves; title likelihood's weight 0 until
    `bench/llm_rankers.py --write-choice` chooses it with a catalog-pretrained adapter, or
    `recsys.ranker.title_weight` with the base model's title likelihood) and the prior's files next to the adapter.
    metrics.json also holds the best weight above 0's validation gain over none, with its interval.

    Also callable on its own (`--finalize-only`) after an interrupted training run. With `zero_shot` (`--zero-shot`)
    the base model ranks with no adapter, and `config.output` becomes a ranker folder without adapter weights: the
    app (`--adapter FOLDER`) then serves the base model at the LLM weight validation chose, never an unvalidated one.
    """
    output = Path(config.output)
    prompt_config = prompt_config_of(config)
    load_config = RankerLoadConfig(base_model=config.base_model, quantization=config.quantization,
                                   cpu_precision=config.cpu_precision)
    dataset = load_dataset(config.dataset, config.data_dir)
    saved = RankerArtefacts.load(config.prior)
    # zero-shot beside a saved prior, or `over_prior` (an Amazon data set's): the served stage one, the LLM's weight
    # chosen on a seeded sample of `val_users` of the validation users' rows, which are then the "val" rows reported
    served_prior = (zero_shot or config.over_prior) and config.examples != "heldout" and saved.prior is not None
    served_pool = saved.pool if config.examples == "heldout" or served_prior else NUM_CANDIDATES
    candidates = load_candidates(config.candidates or config.retriever)
    if served_prior:
        prior = saved.require_prior()
        prior_weights, counts = prior.weights, saved.counts
        validation_rows = split_rows(dataset, "val", candidates["val"], counts, config.val_users, config.seed,
                                     pool=served_pool, weights=prior_weights)
    else:  # every validation row, with the candidates the served pool keeps: the LLM's weight is chosen for serving
        data = training_data(replace(config, val_examples=10**9, pool=served_pool), dataset)
        prior_weights, counts, validation_rows = data.prior_weights, data.cowatch_counts, data.validation
    tokenizer = load_tokenizer(config.base_model)
    model = load_base_model(load_config) if zero_shot else load_adapter(load_base_model(load_config), output)
    model.eval()
    validation = score_llm(model, tokenizer, dataset.catalog, validation_rows, prompt_config)
    weights, by_weight = choose_weight(validation, prior_weights, "llm")
    # the best weight above 0 (the chosen one, unless that is 0) against none: its gain with its interval
    best_positive = min((w for w in WEIGHT_GRID if w > 0), key=lambda w: (-by_weight[w], w))
    on_validation = weight_gain(validation, prior_weights, "llm", best_positive)
    print(f"validation NDCG@10 gain of the LLM at weight {best_positive:g} over none: {on_validation['diff']:+.4f} "
          f"{on_validation['ci95_diff']} (chosen: {weights.llm:g})", flush=True)
    scored = {split: validation if served_prior and split == "val" else
              score_llm(model, tokenizer, dataset.catalog,
                        split_rows(dataset, split, candidates[split], counts, pool=served_pool, weights=weights),
                        prompt_config)
              for split in ("val", "test")}
    results = {split: ablation(rows, weights) for split, rows in scored.items()}
    print_ablation(results["val"], f"paper's validation users ({len(scored['val'])}), fusion {weights}")
    print_ablation(results["test"], f"test users ({int(scored['test'].subset().sum())} of {scored['test'].total_users} "
                                    f"in the subset), fusion {weights}")
    metrics: dict = {"zero_shot": True} if zero_shot else training_summary(output)
    metrics.update({"machine": machine_record(next(model.parameters()).dtype), "validation_rows": len(validation),
               "val_ndcg10_by_llm_weight": by_weight, "val_at_best_positive_weight": on_validation,
               "fusion": asdict(weights),
               "heldout_validation": ablation(validation, weights), "val": results["val"], "test": results["test"],
               "test_users_in_subset": int(scored["test"].subset().sum()), "test_users": scored["test"].total_users,
               "pool": served_pool, "pool_trade": {split: pool_trade(rows) for split, rows in scored.items()}})
    output.mkdir(parents=True, exist_ok=True)
    (output / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    (output / TRAINING_CONFIG_FILE).write_text(json.dumps(asdict(config), indent=2) + "\n")
    # what the app serves is what was just scored: this pool, these counts, the chosen weights, this prompt
    if counts is None and (output / COUNTS_FILE).is_file():  # counts beside it, unused by this run: described
        counts = CoWatchCounts.load(output)
    ServedConfig(served_pool, counts.config if counts is not None else CoWatchConfig(), weights,
                 prompt_config).save_pretrained(output)
    # title likelihood is at 0 again until chosen for these weights: an earlier choice's form would say otherwise
    (output / TITLE_CONFIG_FILE).unlink(missing_ok=True)
    if (config.examples == "heldout" or served_prior) and Path(config.prior).resolve() != output.resolve():  # the
        # prior it fuses with
        for name in (COUNTS_FILE, PRIOR_FILE):
            shutil.copyfile(Path(config.prior) / name, output / name)
    return metrics


def training_summary(output: Path) -> dict:
    """What the training log says of the run: examples, the best validation step, time, the validation history."""
    log = json.loads((output / TRAINING_LOG_FILE).read_text())
    history = log["validation_history"]
    best = max(history, key=lambda h: (h["val_N@10"], -h["step"]))
    return {"training_examples": log["examples"], "best_step": best["step"],
            "examples_seen_at_best": best["examples_seen"], "examples_seen": history[-1]["examples_seen"],
            "train_time_s": history[-1]["train_s"], "validation_history": history}


def parse_args(argv=None) -> tuple[RankerTrainConfig, bool, bool]:
    """Flags: one per RankerTrainConfig field, plus --finalize-only."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_dataclass_flags(parser, RankerTrainConfig,
                        choices={"loss": LOSSES, "examples": EXAMPLES, "dataset": sorted(DATASETS)})
    parser.add_argument("--finalize-only", action="store_true",
                        help="skip training: evaluate the adapter already saved in --output")
    parser.add_argument("--zero-shot", action="store_true",
                        help="no training, no adapter: choose the base model's LLM weight on validation, score test, "
                             "and write a ranker folder the app serves with --adapter")
    args = parser.parse_args(argv)
    return dataclass_from_args(RankerTrainConfig, args), args.finalize_only, args.zero_shot


if __name__ == "__main__":
    train_config, finalize_only, zero_shot = parse_args()
    if zero_shot or finalize_only:
        finalize(train_config, zero_shot=zero_shot)
    else:
        train(train_config)
