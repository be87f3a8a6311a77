"""The LlamaRec paper's own figures on ML (MovieLens ml-latest-small), which the benchmarks and the demo print beside
ours. LlamaRec's ranker there is Llama-2-7B; metrics are MRR (M), NDCG (N) and Recall (R) at 5 and 10.

- `LRUREC_ALL_USERS` and `LLAMAREC_ALL_USERS`: Table 1, LRURec and LlamaRec on all test users.
- `LRUREC_SUBSET` and `LLAMAREC_SUBSET`: Table 3, the valid-retrieval subset (test users whose target is in
  LRURec's top-20), NDCG@10 and Recall@10.
- `RANKER`: those four as {"subset" | "overall": {"retriever" | "final": metrics}}, the shape of
  bench/ranker_quality.py's results.
- `GENERATION_S`: Fig. 3, seconds to generate a ranked list of titles at an average title length of 20 tokens (the
  verbalizer stays under 1 s at every title length).
"""

from __future__ import annotations

LRUREC_ALL_USERS = {"M@5": 0.0390, "N@5": 0.0468, "R@5": 0.0705, "M@10": 0.0491, "N@10": 0.0705, "R@10": 0.1426}
LLAMAREC_ALL_USERS = {"M@5": 0.0440, "N@5": 0.0543, "R@5": 0.0852, "M@10": 0.0529, "N@10": 0.0759, "R@10": 0.1524}
LRUREC_SUBSET = {"N@10": 0.3367, "R@10": 0.6654}
LLAMAREC_SUBSET = {"N@10": 0.3766, "R@10": 0.7560}
RANKER = {"subset": {"retriever": LRUREC_SUBSET, "final": LLAMAREC_SUBSET},
          "overall": {"retriever": LRUREC_ALL_USERS, "final": LLAMAREC_ALL_USERS}}
GENERATION_S = 56.16
