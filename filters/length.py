"""Length critic: the target/source length ratio in characters (paper: paraphrase 0.8..1.5, summary < 0.8)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from distill.filters.base import Filter


class LengthFilter(Filter):
    """``length_ratio`` = len(target) / len(source) in characters (Python ``len``, i.e. code points).

    paraphrase keeps ``paraphrase_min <= r <= paraphrase_max`` (reasons ``length_too_short`` /
    ``length_too_long``); summary keeps ``r < summary_max`` (reason ``length_too_long``).
    An empty source gives ``r = inf`` (rejected as too long in both tasks) rather than NaN, because
    NaN means "never scored" in ``decide``.
    """

    name = "length"
    columns = ("length_ratio",)
    cheap = True

    def __init__(self, paraphrase_min: float = 0.8, paraphrase_max: float = 1.5, summary_max: float = 0.8):
        if not paraphrase_min <= paraphrase_max:
            raise ValueError("paraphrase_min must be <= paraphrase_max")
        self.paraphrase_min = float(paraphrase_min)
        self.paraphrase_max = float(paraphrase_max)
        self.summary_max = float(summary_max)

    def score(self, pairs: pd.DataFrame) -> pd.DataFrame:
        self.check_input(pairs)
        out = pairs.copy()
        src = pairs["source"].astype(str).str.len().to_numpy(dtype=float)
        tgt = pairs["target"].astype(str).str.len().to_numpy(dtype=float)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(src > 0, tgt / np.where(src > 0, src, 1.0), np.inf)
        out["length_ratio"] = ratio
        return out

    def decide(self, pairs: pd.DataFrame) -> np.ndarray:
        r = self.stored(pairs, "length_ratio")
        task = pairs["task"].to_numpy()
        para, summ = task == "paraphrase", task == "summary"
        out = self.keep_all(len(pairs))
        with np.errstate(invalid="ignore"):
            out[para & (r < self.paraphrase_min)] = "length_too_short"
            out[para & (r > self.paraphrase_max)] = "length_too_long"
            out[summ & ~(r < self.summary_max)] = "length_too_long"
        out[(para | summ) & np.isnan(r)] = self.not_scored
        return out
