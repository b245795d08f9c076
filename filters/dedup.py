"""Dedup critic: among the surviving pairs of one context, keep one pair per group of duplicates.

Two pairs of the same (record_id, task) are duplicates when their sources are equivalent or their
targets are, where candidates a and b are equivalent if they are the same candidate index or
mutually entail each other (NLI argmax is entailment in both directions). Duplicates are linked
transitively (connected components). Per component the pair with the highest
``nli_forward + nli_reverse`` is kept (NaN counts 0; ties -> the smallest ``pair_id``); the others
get ``dedup_duplicate``.

Because deciding must work offline, scoring writes an EDGE TABLE (one row per unordered candidate
pair of a record) instead of a per-row column: ``score_edges`` -> ``decide_with_edges``.
"""

from __future__ import annotations

from itertools import combinations

import numpy as np
import pandas as pd

from distill.filters.base import Filter
from distill.filters.nli import ENTAILMENT, Scorer

EDGE_COLUMNS = ("record_id", "a_idx", "b_idx", "mutual_entail", "p_ab", "p_ba")


def empty_edges() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "record_id": pd.Series(dtype=object),
            "a_idx": pd.Series(dtype="int64"),
            "b_idx": pd.Series(dtype="int64"),
            "mutual_entail": pd.Series(dtype=bool),
            "p_ab": pd.Series(dtype=float),
            "p_ba": pd.Series(dtype=float),
        }
    )


class _UnionFind:
    def __init__(self):
        self.parent: dict = {}

    def find(self, x):
        self.parent.setdefault(x, x)
        root = x
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[x] != root:  # path compression
            self.parent[x], x = root, self.parent[x]
        return root

    def union(self, a, b):
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[rb] = ra


class DedupFilter(Filter):
    """Within-context deduplication by mutual entailment (see the module docstring).

    Use ``score_edges(survivors)`` then ``decide_with_edges(survivors, edges)``; the plain
    ``score``/``decide`` of the Filter contract are not meaningful for dedup and raise.
    Reason: ``dedup_duplicate`` (and ``dedup_not_scored`` with ``missing="not_scored"``).
    """

    name = "dedup"
    columns = ()
    cheap = False

    def __init__(self, scorer: Scorer):
        self.scorer = scorer

    def score(self, pairs: pd.DataFrame) -> pd.DataFrame:
        raise TypeError("DedupFilter scores an edge table: use score_edges(survivors)")

    def decide(self, pairs: pd.DataFrame) -> np.ndarray:
        raise TypeError("DedupFilter decides from an edge table: use decide_with_edges(survivors, edges)")

    # -- scoring ----------------------------------------------------------------------------------
    @staticmethod
    def candidates(survivors: pd.DataFrame) -> dict[str, dict[int, str]]:
        """record_id -> {candidate index: text} over the sources and targets of the survivors."""
        out: dict[str, dict[int, str]] = {}
        for side in ("source", "target"):
            for rid, idx, text in zip(survivors["record_id"], survivors[f"{side}_idx"], survivors[side]):
                texts = out.setdefault(str(rid), {})
                idx = int(idx)
                if idx in texts and texts[idx] != text:
                    raise ValueError(f"record {rid}: candidate {idx} has two different texts")
                texts[idx] = text
        return out

    def score_edges(self, survivors: pd.DataFrame) -> pd.DataFrame:
        """Edge table over every unordered pair of distinct candidates of each record.

        For each record, the candidates are those appearing as a source or a target among the
        survivors (of any task). Each unordered pair (a_idx < b_idx) is computed once, both
        directions in one scorer call for the whole batch.

        Cost: m distinct candidates in a record -> m(m-1)/2 edges -> m(m-1) directional NLI calls
        (quadratic in the surviving candidates, which is why dedup runs last, on survivors only).
        """
        Filter.check_input(survivors, ("record_id", "task", "source", "target", "source_idx", "target_idx"))
        rows, premises, hypotheses = [], [], []
        for rid, texts in self.candidates(survivors).items():
            for a, b in combinations(sorted(texts), 2):
                rows.append((rid, a, b))
                premises.append(texts[a])
                hypotheses.append(texts[b])
        if not rows:
            return empty_edges()
        n = len(rows)
        probs = np.asarray(self.scorer(premises + hypotheses, hypotheses + premises), dtype=float)
        if probs.shape != (2 * n, 3):
            raise ValueError(f"NLI scorer returned shape {probs.shape}, expected ({2 * n}, 3)")
        ab, ba = probs[:n], probs[n:]
        edges = pd.DataFrame(
            {
                "record_id": pd.Series([r[0] for r in rows], dtype=object),
                "a_idx": np.array([r[1] for r in rows], dtype="int64"),
                "b_idx": np.array([r[2] for r in rows], dtype="int64"),
                "mutual_entail": (ab.argmax(axis=1) == ENTAILMENT) & (ba.argmax(axis=1) == ENTAILMENT),
                "p_ab": ab[:, ENTAILMENT],
                "p_ba": ba[:, ENTAILMENT],
            }
        )
        return edges

    # -- deciding ---------------------------------------------------------------------------------
    @staticmethod
    def keep_score(pairs: pd.DataFrame) -> np.ndarray:
        """nli_forward + nli_reverse, NaN (or a missing column) counting 0."""

        def col(name):
            if name not in pairs.columns:
                return np.zeros(len(pairs))
            return np.nan_to_num(pd.to_numeric(pairs[name], errors="coerce").to_numpy(dtype=float), nan=0.0)

        return col("nli_forward") + col("nli_reverse")

    def decide_with_edges(self, survivors: pd.DataFrame, edges: pd.DataFrame, *, missing: str = "raise") -> np.ndarray:
        """Reasons for the survivor rows ("" keeps, ``dedup_duplicate``), from the edge table only.

        A needed edge (two distinct candidates that are both sources, or both targets, of pairs of
        one (record_id, task) group) missing from ``edges`` raises ValueError; with
        ``missing="not_scored"`` every row of such a group gets ``dedup_not_scored`` instead (its
        components cannot be known), which is useful when re-thresholding offline.
        """
        if missing not in ("raise", "not_scored"):
            raise ValueError("missing must be 'raise' or 'not_scored'")
        out = self.keep_all(len(survivors))
        if len(survivors) == 0:
            return out
        Filter.check_input(survivors, ("pair_id", "record_id", "task", "source_idx", "target_idx"))
        mutual: dict[tuple[str, int, int], bool] = {}
        if len(edges):
            for rid, a, b, m in zip(edges["record_id"], edges["a_idx"], edges["b_idx"], edges["mutual_entail"]):
                a, b = int(a), int(b)
                mutual[(str(rid), min(a, b), max(a, b))] = bool(m)

        score = self.keep_score(survivors)
        pair_ids = survivors["pair_id"].astype(str).to_numpy()
        src = survivors["source_idx"].to_numpy(dtype="int64")
        tgt = survivors["target_idx"].to_numpy(dtype="int64")
        groups = pd.Series(np.arange(len(survivors))).groupby(
            [survivors["record_id"].astype(str).to_numpy(), survivors["task"].astype(str).to_numpy()], sort=False
        )
        for (rid, task), pos in groups:
            pos = pos.to_numpy()
            if len(pos) == 1:
                continue
            # Nodes: the pairs, plus one node per candidate per role ("s", idx) / ("t", idx). A pair
            # joins its source's and its target's role node; two role nodes of the same role join
            # when their candidates mutually entail. Only candidates used in that role by some pair
            # have a node, so components are exactly the transitive closure of pair duplication.
            uf = _UnionFind()
            for p in pos:
                uf.union(("p", p), ("s", int(src[p])))
                uf.union(("p", p), ("t", int(tgt[p])))
            absent = []
            for role, idxs in (("s", src[pos]), ("t", tgt[pos])):
                for a, b in combinations(sorted(set(int(i) for i in idxs)), 2):
                    m = mutual.get((rid, a, b))
                    if m is None:
                        absent.append((a, b))
                    elif m:
                        uf.union((role, a), (role, b))
            if absent:
                if missing == "raise":
                    raise ValueError(
                        f"dedup edge table lacks {len(absent)} needed edge(s) for record {rid!r} task {task!r}, "
                        f"e.g. candidates {absent[:3]}; re-run DedupFilter.score_edges on these survivors"
                    )
                out[pos] = self.not_scored
                continue
            best: dict = {}
            for p in pos:
                root = uf.find(("p", p))
                q = best.get(root)
                # The paper's rule: keep the most entailed pair (highest forward + reverse); ties ->
                # smallest pair_id. (The paper's public code keeps a different pair of the group; we
                # follow the paper's text.)
                if q is None or (score[p], pair_ids[q]) > (score[q], pair_ids[p]):
                    best[root] = p
            keep = set(best.values())
            for p in pos:
                if p not in keep:
                    out[p] = "dedup_duplicate"
        return out
