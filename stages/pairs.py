"""Step 3: all unordered pairs of distinct candidates of one context, oriented per task."""

from __future__ import annotations

import pandas as pd

from distill.records import PAIR_COLUMNS


class PairsStage:
    """k candidates -> k(k-1)/2 pairs per task: paraphrase (i, j) with i < j; summary longer -> shorter."""

    def __init__(self, tasks: list[str], round_: int = 0):
        self.tasks = list(tasks)
        self.round = round_

    def __call__(self, candidates: pd.DataFrame) -> pd.DataFrame:
        rows = []
        for record_id, group in candidates.sort_values(["record_id", "candidate_idx"]).groupby("record_id", sort=True):
            cands = list(zip(group["candidate_idx"].tolist(), group["candidate"].tolist()))
            context = group["context"].iloc[0]
            generator = group["generator"].iloc[0]
            for a in range(len(cands)):
                for b in range(a + 1, len(cands)):
                    for task in self.tasks:
                        (i, x), (j, y) = cands[a], cands[b]
                        if task == "summary" and len(y) > len(x):
                            (i, x), (j, y) = (j, y), (i, x)  # a summary's source is the longer sentence
                        rows.append({"pair_id": f"{record_id}:{task}:{i}-{j}", "record_id": record_id,
                                     "task": task, "source": x, "target": y, "source_idx": i, "target_idx": j,
                                     "context": context, "round": self.round, "generator": generator})
        return pd.DataFrame(rows, columns=PAIR_COLUMNS)
