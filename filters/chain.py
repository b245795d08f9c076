"""Apply critics cheap-first, re-decide offline from stored scores, and count the funnel.

``run_critics`` scores and decides; ``decide`` re-derives the ``reject`` column from stored scores
only (new thresholds, no model); ``funnel`` / ``merge_funnels`` count what each critic removed, from
the ``reject`` column alone, so local and sharded cluster runs report the same numbers.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from distill.filters.base import Filter, reason_critic, registered_names, set_first
from distill.filters.dedup import DedupFilter, empty_edges
from distill.records import REJECT, TASKS


def _reject_array(n: int) -> np.ndarray:
    out = np.empty(n, dtype=object)
    out[:] = ""
    return out


def _put_columns(out: pd.DataFrame, scored: pd.DataFrame, mask: np.ndarray, columns: Sequence[str]) -> None:
    """Write ``columns`` of ``scored`` (the rows ``mask`` of ``out``) into ``out``; other rows get NaN.

    Columns are reset for every row first, so stale values from an earlier run never survive.
    """
    for col in columns:
        src = scored[col]
        if pd.api.types.is_numeric_dtype(src.dtype) or pd.api.types.is_bool_dtype(src.dtype):
            full = np.full(len(out), np.nan)
            full[mask] = src.to_numpy(dtype=float)
        else:
            full = np.empty(len(out), dtype=object)
            full[:] = None
            full[mask] = src.to_numpy(dtype=object)
        out[col] = full


def run_critics(
    pairs: pd.DataFrame,
    filters: Sequence[Filter],
    dedup: DedupFilter | None = None,
    *,
    score_all: bool = False,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Score and decide, cheap-first. Returns (all rows with score columns and ``reject``, edge table).

    ``reject`` is the first failing reason in filter order ("" keeps). Cheap critics score every row;
    non-cheap ones (NLI) score only rows not yet rejected, unless ``score_all`` (then every critic
    scores every row: same decisions, more model calls). Dedup (if given) then runs on the
    survivors per (record_id, task). The edge table is empty (with its columns) when dedup does not
    run or has nothing to compare.
    """
    index = pairs.index
    out = pairs.reset_index(drop=True).copy()
    reject = _reject_array(len(out))
    for f in filters:
        if f.cheap or score_all:
            out = f.score(out)
        else:
            mask = reject == ""
            for col in f.columns:  # the unscored rows must read as NaN, not as stale values
                out[col] = np.nan
            if mask.any():
                scored = f.score(out.loc[mask])
                _put_columns(out, scored, mask, f.columns)
        if len(out) != len(reject):
            raise RuntimeError(f"{f!r} changed the number of rows")
        set_first(reject, f.decide(out))

    edges = empty_edges()
    if dedup is not None:
        mask = reject == ""
        if mask.any():
            survivors = out.loc[mask]
            edges = dedup.score_edges(survivors)
            reasons = np.asarray(dedup.decide_with_edges(survivors, edges), dtype=object)
            sub = reject[mask]
            set_first(sub, reasons)
            reject[mask] = sub
    out[REJECT] = reject
    out.index = index
    return out, edges


def decide(
    pairs: pd.DataFrame,
    filters: Sequence[Filter],
    dedup: DedupFilter | None = None,
    edges: pd.DataFrame | None = None,
    *,
    missing_edges: str = "raise",
) -> pd.Series:
    """Re-derive the reasons from stored columns only (no model): for re-thresholding a finished run.

    A row whose needed score was never computed gets ``<name>_not_scored`` (so loosening a threshold
    beyond what the run scored is visible, never a silent pass). With ``dedup``, the survivors are
    deduplicated from ``edges``; a needed edge missing from the table raises ValueError, or with
    ``missing_edges="not_scored"`` marks that (record_id, task) group ``dedup_not_scored``.
    """
    reject = _reject_array(len(pairs))
    for f in filters:
        set_first(reject, f.decide(pairs))
    if dedup is not None:
        mask = reject == ""
        if mask.any():
            reasons = dedup.decide_with_edges(
                pairs.loc[mask],
                empty_edges() if edges is None else edges,
                missing=missing_edges,
            )
            sub = reject[mask]
            set_first(sub, np.asarray(reasons, dtype=object))
            reject[mask] = sub
    return pd.Series(reject, index=pairs.index, name=REJECT, dtype=object)


def funnel(pairs: pd.DataFrame, names: Iterable[str] | None = None) -> dict:
    """Per task: ``{"pairs_in": N, "removed": {critic: n, ...}, "kept": n}`` from the ``reject`` column.

    A reason is attributed to the longest registered critic name it starts with (``<name>_``);
    reasons matching none are counted under ``"other"``. Every registered critic (and both tasks)
    appear, with 0 when nothing was removed, so funnels of shards have the same keys and add up.
    """
    names = tuple(names) if names is not None else registered_names()
    if REJECT not in pairs.columns:
        raise KeyError(f"pairs lack the {REJECT!r} column")
    reasons = pairs[REJECT]
    if reasons.isna().any():
        raise ValueError(f"{int(reasons.isna().sum())} row(s) have no {REJECT!r} value (undecided)")
    tasks = list(TASKS) + sorted(set(map(str, pairs["task"].unique())) - set(TASKS))
    result: dict = {}
    for task in tasks:
        r = reasons[pairs["task"] == task].astype(str)
        removed = {n: 0 for n in names}
        for reason, count in r[r != ""].value_counts().items():
            critic = reason_critic(reason, names) or "other"
            removed[critic] = removed.get(critic, 0) + int(count)
        result[task] = {"pairs_in": int(len(r)), "removed": removed, "kept": int((r == "").sum())}
    return result


def merge_funnels(funnels: Iterable[dict]) -> dict:
    """Sum funnels (e.g. from shards): counts add key by key; keys missing in a shard count 0."""
    total: dict = {}
    for f in funnels:
        for task, entry in f.items():
            t = total.setdefault(task, {"pairs_in": 0, "removed": {}, "kept": 0})
            t["pairs_in"] += int(entry.get("pairs_in", 0))
            t["kept"] += int(entry.get("kept", 0))
            for critic, n in entry.get("removed", {}).items():
                t["removed"][critic] = t["removed"].get(critic, 0) + int(n)
    return total
