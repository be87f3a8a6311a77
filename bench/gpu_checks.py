"""The Python steps of bench/gpu_check.sh, for a CUDA machine (each also runs on a CPU, for a dry run).

python bench/gpu_checks.py tiny --json out.json
    A tiny random Llama saved to disk and loaded as the ranker loads a base model, in bf16 and in
    4-bit NF4 (bitsandbytes): both load, give finite last-position logits that agree, and a QLoRA
    step (LoRA over the 4-bit model) changes only the LoRA weights.
python bench/gpu_checks.py pipeline --quantization auto --users 8 --json out.json
    The app's Pipeline (committed retriever and adapter) on the default device: Recommend (the
    verbalizer) and the race (generation) for test users, timed; auto = 4-bit NF4 on CUDA, as the app.
python bench/gpu_checks.py compare bench/results/ranker_quality.json cuda.json
    Subset and overall NDCG@10 of bench/ranker_quality.py on CUDA beside the committed CPU figures.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import torch


from recsys.machine import describe_machine, machine_record
from recsys.results import write_json


def tiny_loads(device: str) -> dict:
    """Save a tiny Llama, load it in bf16 and in 4-bit NF4 on `device`, compare their logits, take one QLoRA step."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from recsys.ranker.model import RankerLoadConfig, add_lora, load_base_model

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=512, hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
    token_ids = torch.randint(0, config.vocab_size, (2, 48), device=device)
    result = {}
    with tempfile.TemporaryDirectory() as folder:
        LlamaForCausalLM(config).save_pretrained(folder)
        logits = {}
        for quantization in ("none", "4bit"):
            model = load_base_model(RankerLoadConfig(base_model=folder, device=device, quantization=quantization))
            with torch.inference_mode():
                logits[quantization] = model(input_ids=token_ids).logits[:, -1, :].float()
            result[quantization] = {"dtype": str(model.dtype).replace("torch.", ""),
                                    "is_loaded_in_4bit": bool(getattr(model, "is_loaded_in_4bit", False)),
                                    "memory_footprint_mb": round(model.get_memory_footprint() / 1e6, 2),
                                    "finite": bool(torch.isfinite(logits[quantization]).all())}
        result["logit_correlation_plain_vs_4bit"] = round(torch.corrcoef(
            torch.stack([logits["none"].flatten(), logits["4bit"].flatten()]))[0, 1].item(), 4)
        model = add_lora(load_base_model(RankerLoadConfig(base_model=folder, device=device, quantization="4bit"),
                                         for_training=True))
        trainable = {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
        model(input_ids=token_ids, labels=token_ids).loss.backward()
        optimizer.step()
        changed = [name for name, p in model.named_parameters()
                   if p.requires_grad and not torch.equal(p, trainable[name])]
        result["qlora_step"] = {"trainable_tensors": len(trainable), "changed": len(changed),
                                "only_lora_trainable": all("lora_" in name for name in trainable)}
    result["ok"] = (all(result[q]["finite"] for q in ("none", "4bit")) and result["4bit"]["is_loaded_in_4bit"]
                    and result["logit_correlation_plain_vs_4bit"] > 0.9 and result["qlora_step"]["changed"] > 0
                    and result["qlora_step"]["only_lora_trainable"])
    return result


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def pipeline_timing(quantization: str, users: int) -> dict:
    """The app's Pipeline on the default device: Recommend then the race for the first `users` test users."""
    from recsys.demo.pages import facts
    from recsys.pipeline import Pipeline, PipelineConfig
    from recsys.ranker.artefacts import default_adapter
    from recsys.ranker.model import RankerLoadConfig

    pipeline = Pipeline.load(PipelineConfig(ranker=RankerLoadConfig(adapter=default_adapter(),
                                                                     quantization=quantization)))
    rows = []
    for user in pipeline.test_users.ids()[:users]:
        recommendation = pipeline.recommend(list(pipeline.test_users[user].history))
        race = pipeline.race(recommendation)
        rows.append({"user": user, "verbalizer_ms": _rounded(recommendation.ranking_ms),
                     "generation_ms": _rounded(race.generation_ms), "ratio": _rounded(race.ratio),
                     "generated_tokens": race.num_generated_tokens,
                     "ranker_error": recommendation.ranker_error, "race_error": race.error})
    timed = [row for row in rows if row["ratio"] is not None]
    return {"describe": facts(pipeline), "users": rows,
            "verbalizer_p50_ms": round(statistics.median(r["verbalizer_ms"] for r in timed), 1) if timed else None,
            "generation_p50_ms": round(statistics.median(r["generation_ms"] for r in timed), 1) if timed else None,
            "ratio_p50": round(statistics.median(r["ratio"] for r in timed), 1) if timed else None,
            "ok": len(timed) == len(rows) > 0}


OLD_ROW_NAMES = {"llm_only": "llm_alone", "two_stage": "final"}  # stage layout's names -> the ablation rows' names


def ndcg_rows(quality: dict) -> dict[str, float]:
    """NDCG@10 by "part row" (e.g. "subset final") from a bench/ranker_quality.py JSON, either layout:
    test ablation rows ({"test": {row: {part: metrics}}}) or the stage layout {part: {stage: metrics}}, whose stages
    are named as the ablation rows through OLD_ROW_NAMES."""
    if "test" in quality:
        return {f"{part} {row}": entry[part]["N@10"] for row, entry in quality["test"].items()
                for part in ("subset", "overall") if isinstance(entry.get(part), dict)}
    return {f"{part} {OLD_ROW_NAMES.get(stage, stage)}": quality[part][stage]["N@10"]
            for part in ("subset", "overall") for stage in quality.get(part, {})}


def compare(cpu_path: str, cuda_path: str) -> dict:
    """NDCG@10 of each row both files have, subset and overall: the CPU figure, the CUDA one and the difference."""
    cpu, cuda = (json.loads(Path(path).read_text()) for path in (cpu_path, cuda_path))
    before, after = ndcg_rows(cpu), ndcg_rows(cuda)
    rows = {key: {"cpu": before[key], "cuda": after[key], "difference": round(after[key] - before[key], 4)}
            for key in before if key in after}
    return {"N@10": rows, "ok": bool(rows), "cpu_machine": cpu.get("machine"), "cuda_machine": cuda.get("machine")}


def measured_dtype(args: argparse.Namespace) -> str | None:
    """The precision a subcommand measures, for the machine record (None: what "auto" means here)."""
    if args.command == "tiny":
        return "bfloat16 and 4-bit NF4"
    if args.command == "pipeline" and (args.quantization == "4bit"
                                       or (args.quantization == "auto" and torch.cuda.is_available())):
        return "4-bit NF4"
    return None


def main(argv=None) -> dict:
    """Parse the subcommand, run it, print the result as JSON and write it (with the machine) where --json says."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    tiny = commands.add_parser("tiny", help="tiny Llama: bf16 and 4-bit loads, one QLoRA step")
    tiny.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    pipe = commands.add_parser("pipeline", help="the app's Pipeline: Recommend and the race for test users")
    pipe.add_argument("--quantization", default="auto", choices=["auto", "4bit", "none"])
    pipe.add_argument("--users", type=int, default=8)
    both = commands.add_parser("compare", help="NDCG@10 on CUDA beside the CPU figure")
    both.add_argument("cpu_json")
    both.add_argument("cuda_json")
    for command in (tiny, pipe, both):
        command.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    machine = machine_record(measured_dtype(args), "cuda" if torch.cuda.is_available() else "cpu")
    print(f"machine: {describe_machine(machine)}", flush=True)
    if args.command == "tiny":
        result = tiny_loads(args.device)
    elif args.command == "pipeline":
        result = pipeline_timing(args.quantization, args.users)
    else:
        result = compare(args.cpu_json, args.cuda_json)
    print(json.dumps(result, indent=2, default=str))
    write_json(args.json, result, machine)
    if result.get("ok") is False:
        raise SystemExit(f"{args.command}: check failed (see above)")
    return result


if __name__ == "__main__":
    main()
