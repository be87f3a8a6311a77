"""Data-parallel evaluation: 2 CPU processes (gloo, under `accelerate launch`) give exactly what 1 process gives."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.common import free_port

HELPER = Path(__file__).resolve().parent / "helpers" / "sharded_scoring.py"


def run(command: list[str], out: Path) -> dict:
    paths = [str(HELPER.parents[1]), str(HELPER.parents[2]), os.environ.get("PYTHONPATH", "")]
    # CPU processes on gloo even where a GPU is visible (two ranks on one GPU would be refused by NCCL)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "",
           "PYTHONPATH": os.pathsep.join(p for p in paths if p)}
    done = subprocess.run([*command, str(HELPER), str(out)], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(out.read_text())


def test_two_processes_score_and_rank_as_one(tmp_path):
    pytest.importorskip("accelerate")
    one = run([sys.executable], tmp_path / "one.json")
    # --multi_gpu starts the processes with torch's launcher; without a GPU each one is a CPU process on gloo
    two = run([sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port",
               str(free_port())], tmp_path / "two.json")
    assert one["processes"] == 1 and two["processes"] == 2
    assert two["llm"] == one["llm"] and two["titles"] == one["titles"]  # each row scored alone: bit for bit
    assert two["ablation"] == one["ablation"]
