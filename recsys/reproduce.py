"""`python -m recsys.reproduce --dataset beauty`: from a data set's files to the folders the app serves, step by step.

1. the retriever: LRURec trained with the paper's recipe (`recsys.retriever.train`; resumed where a run stopped),
   into checkpoints/lrurec-DATASET; a finished one (the committed checkpoint) is kept unless `--retrain`;
2. the prior: co-watch window and span, weights and candidate pool chosen on validation users (`recsys.ranker.prior
   --write`), into checkpoints/llamarec-DATASET, which the app serves (`python app.py --dataset DATASET`);
3. the candidates: LRURec's top-`pool` of every validation and test user (`recsys.retriever.candidates`), into
   runs/candidates-DATASET (too big to commit);
4. the LLM, zero-shot: its weight on top of the prior chosen on a seeded sample of validation users, the test users
   scored once (`recsys.ranker.train --zero-shot`), written into the served folder (`metrics.json`, and the weight
   into `served_config.json`: the app serves what validation chose);
5. title likelihood, zero-shot: the LLM asked a second way (each candidate's title as the next line after the
   history's), its weight chosen on the same validation rows, the test users scored once
   (`recsys.ranker.title_weight`), written into the same two files.

Each step prints the minutes it took (the LLM's: about 30 min for Games, 40 for Beauty, on 2 CPU cores; title
likelihood's about 60 for Beauty, its titles being long). MovieLens's
own recipe goes further (held-out examples, the residual adapter: recsys/ranker/train.py's docstring); on Amazon no
LLM ranker is trained yet. The records: `python bench/retriever_quality.py --dataset DATASET` and `python
bench/prior_quality.py --dataset DATASET`.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from recsys.data.amazon import SOURCES
from recsys.folders import retriever_folder, run_folder, served_folder

LLM_VALIDATION_USERS = 1000  # enough rows to choose among six weights; the test users are all scored


def trained(folder: Path) -> bool:
    """Whether `folder` holds a finished retriever run (its metrics.json has the test split's)."""
    path = folder / "metrics.json"
    return path.is_file() and "test" in json.loads(path.read_text())


def main(argv=None) -> None:
    """Run the steps for one data set, printing each one's minutes."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True, choices=sorted(SOURCES), help="the Amazon data set to reproduce")
    parser.add_argument("--data-dir", default=None, help="its folder or their parent (default: $RECSYS_DATA_DIR, "
                        "data/, ../shared/data)")
    parser.add_argument("--retrain", action="store_true", help="train the retriever again even where a finished one "
                        "is (the committed checkpoint is replaced)")
    parser.add_argument("--max-steps", type=int, default=None, help="end the retriever's training here (a quick "
                        "trial; default: the recipe's early stopping)")
    parser.add_argument("--eval-every", type=int, default=None, help="the retriever's steps between validations "
                        "(default: the recipe's)")
    parser.add_argument("--batch-size", type=int, default=None, help="the retriever's batch (default: the paper's "
                        "recipe, 16; the authors' code trains Amazon at 64)")
    parser.add_argument("--base-model", default=None, help="the LLM scored zero-shot (default: SmolLM2-135M-Instruct)")
    parser.add_argument("--llm-val-users", type=int, default=LLM_VALIDATION_USERS,
                        help=f"validation users whose rows choose the LLM's weight (default {LLM_VALIDATION_USERS})")
    args = parser.parse_args(argv)
    from recsys.ranker import prior, title_weight
    from recsys.ranker import train as ranker_train
    from recsys.ranker.artefacts import RankerArtefacts
    from recsys.retriever import candidates, train

    retriever, served = retriever_folder(args.dataset), served_folder(args.dataset)
    data = ["--data-dir", args.data_dir] if args.data_dir else []
    recipe = [*data, *(["--max-steps", str(args.max_steps)] if args.max_steps else []),
              *(["--eval-every", str(args.eval_every)] if args.eval_every else []),
              *(["--batch-size", str(args.batch_size)] if args.batch_size else [])]
    state = run_folder("lrurec", args.dataset)  # the training's resumable state
    def train_retriever() -> None:
        if trained(retriever) and not args.retrain:
            print(f"{retriever} holds a finished retriever: kept (pass --retrain to train it again)")
            return
        train.train(train.parse_args(["--dataset", args.dataset, "--output", str(retriever), "--state-dir",
                                      str(state), *([] if args.retrain else ["--resume"]), *recipe]))

    pool = run_folder("candidates", args.dataset)

    def score_llm() -> None:
        config, _, _ = ranker_train.parse_args(
            ["--dataset", args.dataset, "--retriever", str(retriever), "--candidates", str(pool),
             "--prior", str(served), "--output", str(served), "--val-users", str(args.llm_val_users), *data,
             *(["--base-model", args.base_model] if args.base_model else [])])
        ranker_train.finalize(config, zero_shot=True)

    steps = [("retriever", train_retriever),
             ("prior", lambda: prior.main(["--dataset", args.dataset, "--retriever", str(retriever), "--write",
                                          "--output", str(served), *data])),
             ("candidates", lambda: candidates.main(["--checkpoint", str(retriever), "--output", str(pool), "--k",
                                                     str(RankerArtefacts.load(served).pool), *data])),
             ("llm", score_llm),
             ("titles", lambda: title_weight.main(["--dataset", args.dataset, "--served", str(served), "--candidates",
                                                   str(pool), *data,
                                                   *(["--base-model", args.base_model] if args.base_model else [])]))]
    for name, step in steps:
        began = time.monotonic()
        step()
        print(f"step {name}: {(time.monotonic() - began) / 60:.1f} min", flush=True)
    where = f" --data-dir {args.data_dir}" if args.data_dir else ""
    print(f"serve it: python app.py --dataset {args.dataset}{where}")


if __name__ == "__main__":
    main()
