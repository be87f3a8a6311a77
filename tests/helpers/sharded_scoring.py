"""Score tiny rows with the verbalizer and title likelihood, then write the ablation metrics as JSON (the main
process). Run plainly (1 process) and under `accelerate launch --multi_gpu --num_processes 2` with no GPU visible
(2 CPU processes on gloo) by tests/test_distributed.py.

Usage: python tests/helpers/sharded_scoring.py OUT.json
"""

import json
import sys
from dataclasses import replace
from pathlib import Path

import torch
from conftest import make_catalog, make_llama, make_tokenizer  # tests/ is on PYTHONPATH (set by the test)

from recsys.distributed import is_main_process, process_share
from recsys.ranker.evaluate import ablation, score_llm, score_titles
from recsys.ranker.rows import RankingRows
from recsys.ranker.fusion import FusionWeights
from recsys.ranker.prompt import PromptConfig
from recsys.ranker.title_likelihood import TitleConfig, title_opinion


def main(out: str) -> None:
    torch.manual_seed(0)
    catalog, tokenizer = make_catalog(), make_tokenizer()
    model = make_llama(tokenizer)
    generator = torch.Generator().manual_seed(1)
    count, k = 11, 20  # odd: the two processes get 6 and 5 rows
    candidates = torch.stack([torch.randperm(len(catalog), generator=generator)[:k] + 1 for _ in range(count)])
    histories = [torch.randint(1, len(catalog) + 1, (5,), generator=generator).tolist() for _ in range(count)]
    rows = RankingRows(histories, candidates, torch.randn(count, k, generator=generator),
                       torch.rand(count, k, generator=generator), torch.randint(0, k, (count,), generator=generator),
                       count)
    rows = score_llm(model, tokenizer, catalog, rows, PromptConfig(max_title_tokens=12), progress=False)
    rows = replace(rows, titles=title_opinion(*score_titles(model, tokenizer, catalog, rows, TitleConfig(),
                                                            progress=False)))
    result = ablation(rows, FusionWeights(retriever=1.0, cowatch=0.5, llm=1.0, titles=0.5))
    if is_main_process():
        Path(out).write_text(json.dumps({"processes": process_share(0)[2], "ablation": result,
                                         "llm": rows.llm.tolist(), "titles": rows.titles.tolist()}))


if __name__ == "__main__":
    main(sys.argv[1])
