"""Diversity critic: a paraphrase must not copy its source (paper: ROUGE-L F1 <= 0.75)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from distill.filters.base import Filter


class DiversityFilter(Filter):
    """Paraphrase only. ``diversity_rougeL`` = ROUGE-L F1 of (source, target), computed with the
    ``rouge-score`` package (``RougeScorer(["rougeL"])``, its default tokenizer, no stemming).
    Keeps ``diversity_rougeL <= max_rougeL``; reason ``diversity_too_similar``.
    Summary rows get NaN and pass.
    """

    name = "diversity"
    columns = ("diversity_rougeL",)
    cheap = True
    tasks = ("paraphrase",)

    def __init__(self, max_rougeL: float = 0.75):
        self.max_rougeL = float(max_rougeL)
        self._scorer = None

    def _rouge(self):
        if self._scorer is None:
            from rouge_score import rouge_scorer

            self._scorer = rouge_scorer.RougeScorer(["rougeL"])
        return self._scorer

    def score(self, pairs: pd.DataFrame) -> pd.DataFrame:
        self.check_input(pairs)
        out = pairs.copy()
        vals = np.full(len(pairs), np.nan)
        mask = self.applies(pairs)
        if mask.any():
            scorer = self._rouge()
            src = pairs["source"].astype(str).to_numpy()[mask]
            tgt = pairs["target"].astype(str).to_numpy()[mask]
            # RougeScorer.score(target, prediction); the F1 is symmetric in its two arguments
            vals[mask] = [scorer.score(s, t)["rougeL"].fmeasure for s, t in zip(src, tgt)]
        out["diversity_rougeL"] = vals
        return out

    def decide(self, pairs: pd.DataFrame) -> np.ndarray:
        r = self.stored(pairs, "diversity_rougeL")
        mask = self.applies(pairs)
        out = self.keep_all(len(pairs))
        with np.errstate(invalid="ignore"):
            out[mask & (r > self.max_rougeL)] = "diversity_too_similar"
        out[mask & np.isnan(r)] = self.not_scored
        return out
