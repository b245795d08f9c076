"""Step 4: every critic scores the pairs (cheap ones first); the first failing reason is recorded.

Dedup's evidence (which candidates of a record mutually entail each other) is stored on the pair
rows as two list columns, ``dedup_source_links`` / ``dedup_target_links``: the candidate indices
that the row's source / target mutually entails. Rows that reached dedup carry lists (maybe empty);
rows that did not carry None. That keeps one table per shard and lets ``distill select``
re-run dedup offline on any tighter selection.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from distill.config import CritiqueConfig
from distill.filters.chain import decide, run_critics
from distill.filters.dedup import DedupFilter
from distill.filters.diversity import DiversityFilter
from distill.filters.length import LengthFilter
from distill.filters.numbers import NumbersFilter
from distill.filters.nli import NLIFilter

LINKS = ("dedup_source_links", "dedup_target_links")
EDGE_COLUMNS = ["record_id", "a_idx", "b_idx", "mutual_entail", "p_ab", "p_ba"]


def build_filters(cfg: CritiqueConfig, scorer=None) -> tuple[list, DedupFilter | None]:
    """The critics in order, cheapest first; ``scorer`` None means "no model" (deciding only)."""
    filters: list = [LengthFilter(cfg.length.paraphrase_min, cfg.length.paraphrase_max, cfg.length.summary_max)]
    if cfg.numbers:
        filters.append(NumbersFilter())
    filters.append(DiversityFilter(cfg.diversity.max_rougeL))
    filters.append(NLIFilter(scorer, threshold=cfg.nli.threshold))
    return filters, (DedupFilter(scorer) if cfg.dedup else None)


def make_scorer(cfg: CritiqueConfig):
    from distill.filters.nli import HFNLIScorer
    from distill.runtime import pick_device

    n = cfg.nli
    return HFNLIScorer(n.model, device=pick_device(n.device), dtype=n.dtype,
                       max_tokens_per_batch=n.max_tokens_per_batch, max_length=n.max_length,
                       trust_remote_code=n.trust_remote_code)


def edges_to_links(pairs: pd.DataFrame, edges: pd.DataFrame, reached: np.ndarray) -> pd.DataFrame:
    """Stores the mutual-entailment edges on the rows that reached dedup (``reached``)."""
    pairs = pairs.copy()
    linked: dict[tuple[str, int], list[int]] = {}
    for e in edges[edges["mutual_entail"]].itertuples(index=False):
        linked.setdefault((e.record_id, int(e.a_idx)), []).append(int(e.b_idx))
        linked.setdefault((e.record_id, int(e.b_idx)), []).append(int(e.a_idx))
    for col, idx_col in zip(LINKS, ("source_idx", "target_idx")):
        pairs[col] = [sorted(linked.get((rid, int(i)), [])) if r else None
                      for rid, i, r in zip(pairs["record_id"], pairs[idx_col], reached)]
    return pairs


def links_to_edges(pairs: pd.DataFrame) -> pd.DataFrame:
    """The edge table back from the stored links: every candidate pair among rows that reached dedup."""
    rows = []
    has = pairs[LINKS[0]].notna()
    for record_id, g in pairs[has].groupby("record_id", sort=True):
        cands: set[int] = set(g["source_idx"].astype(int)) | set(g["target_idx"].astype(int))
        mutual: set[tuple[int, int]] = set()
        for col, idx_col in zip(LINKS, ("source_idx", "target_idx")):
            for i, links in zip(g[idx_col].astype(int), g[col]):
                mutual.update((min(i, int(j)), max(i, int(j))) for j in links)
        ordered = sorted(cands)
        for x in range(len(ordered)):
            for y in range(x + 1, len(ordered)):
                a, b = ordered[x], ordered[y]
                rows.append((record_id, a, b, (a, b) in mutual, np.nan, np.nan))
    return pd.DataFrame(rows, columns=EDGE_COLUMNS)


def reselect(pairs: pd.DataFrame, cfg: CritiqueConfig) -> pd.Series:
    """The reject reason of every pair under ``cfg``'s thresholds, from stored scores only (no model)."""
    filters, dedup = build_filters(cfg, scorer=None)
    reasons = decide(pairs, filters)
    if dedup is None:
        return reasons
    reasons = reasons.copy()
    alive = reasons.eq("")
    unscored = alive & pairs[LINKS[0]].isna()
    reasons[unscored] = "dedup_not_scored"  # survives now, but dedup never saw it: loosened beyond the run
    keep = alive & ~unscored
    if keep.any():
        survivors = pairs[keep]
        reasons[keep] = dedup.decide_with_edges(survivors, links_to_edges(survivors))
    return reasons


class _Prescored:
    """A cheap critic whose scores are already in the batch (scored by ``CheapScores`` elsewhere)."""

    def __init__(self, f):
        self.f, self.name, self.columns, self.cheap = f, f.name, f.columns, True

    def score(self, pairs: pd.DataFrame) -> pd.DataFrame:
        missing = [c for c in self.f.columns if c not in pairs]
        if missing:
            raise ValueError(f"batch lacks the {self.name} scores ({', '.join(missing)}): run CheapScores first")
        return pairs

    def decide(self, pairs: pd.DataFrame) -> np.ndarray:
        return self.f.decide(pairs)


class CheapScores:
    """The model-free critics' scores (length, numbers, ROUGE-L): a CPU step on a cluster."""

    def __init__(self, cfg: CritiqueConfig):
        self.filters = [f for f in build_filters(cfg, scorer=None)[0] if f.cheap]

    def __call__(self, pairs: pd.DataFrame) -> pd.DataFrame:
        for f in self.filters:
            pairs = f.score(pairs)
        return pairs


class CritiqueStage:
    """Scores candidate pairs with every critic and records the first rejection reason in ``reject``.

    ``prescored=True`` expects the cheap critics' columns already in the batch (``CheapScores`` ran
    as a CPU task); the decisions are the same either way.
    """

    def __init__(self, cfg: CritiqueConfig, scorer=None, prescored: bool = False):
        self.cfg = cfg
        self.scorer = scorer if scorer is not None else make_scorer(cfg)  # the NLI model loads once, here
        self.filters, self.dedup = build_filters(cfg, self.scorer)
        if prescored:
            self.filters = [_Prescored(f) if f.cheap else f for f in self.filters]
        self.critic = cfg.nli.model

    def __call__(self, pairs: pd.DataFrame) -> pd.DataFrame:
        scored, edges = run_critics(pairs, self.filters, self.dedup, score_all=self.cfg.score_all)
        if self.dedup is not None:
            before_dedup = scored["reject"].isin(["", "dedup_duplicate"]).to_numpy()
            scored = edges_to_links(scored, edges, before_dedup)
        else:
            for col in LINKS:
                scored[col] = None
        scored["critic"] = self.critic
        return scored
