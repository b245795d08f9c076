"""The critic contract: score a batch of pairs into stored columns, then decide by thresholds on them.

Scoring and deciding are separate on purpose. ``score`` may be expensive (an NLI model);
``decide`` reads only the stored ``<name>_<metric>`` columns, so a finished run can be
re-thresholded offline without any model.

NaN conventions (shared by every critic):

* a row the critic does not apply to (e.g. a summary row for the diversity critic) gets NaN
  from ``score`` and passes ``decide`` ("");
* a row the critic applies to but whose score is NaN (or whose column is missing) was never
  scored, e.g. because a cheaper critic rejected it first; ``decide`` returns
  ``"<name>_not_scored"`` for it so it can never pass silently.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from distill.records import TASKS

#: The built-in critics, in the paper's order. ``funnel`` uses the registered names as reason prefixes.
CRITIC_NAMES: tuple[str, ...] = ("length", "numbers", "diversity", "nli", "dedup")

# name -> class, filled by ``Filter.__init_subclass__`` (so custom critics are counted in funnels too).
REGISTRY: dict[str, type] = {}

#: The columns every critic needs.
PAIR_INPUT_COLUMNS = ("pair_id", "record_id", "task", "source", "target", "source_idx", "target_idx")


def registered_names() -> tuple[str, ...]:
    """Built-in critic names first (paper order), then any other registered ones."""
    extra = tuple(n for n in REGISTRY if n not in CRITIC_NAMES)
    return CRITIC_NAMES + extra


def reason_critic(reason: str, names: tuple[str, ...] | None = None) -> str | None:
    """The critic a reason belongs to: the longest registered name ``n`` with ``reason.startswith(n + "_")``.

    Matching on registered names (not on "text before the first underscore") keeps critic names
    that themselves contain an underscore working. Returns None when no name matches.
    """
    names = registered_names() if names is None else names
    best = None
    for n in names:
        if reason.startswith(n + "_") and (best is None or len(n) > len(best)):
            best = n
    return best


class Filter:
    """Scores a batch of pairs into its own columns; decides by thresholds on those stored columns."""

    name: str = ""
    columns: tuple[str, ...] = ()
    cheap: bool = True  # False for model-based critics: they only score rows cheaper critics passed
    tasks: tuple[str, ...] = TASKS  # the tasks the critic applies to; other rows get NaN and pass

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("name"):
            REGISTRY.setdefault(cls.name, cls)

    # -- contract ---------------------------------------------------------------------------------
    def score(self, pairs: pd.DataFrame) -> pd.DataFrame:
        """Return ``pairs`` (a copy) with this critic's columns added/overwritten. Never drops rows."""
        raise NotImplementedError

    def decide(self, pairs: pd.DataFrame) -> np.ndarray:
        """One reason per row (object array, "" keeps), from stored columns only."""
        raise NotImplementedError

    # -- helpers for subclasses ------------------------------------------------------------------
    @property
    def not_scored(self) -> str:
        return f"{self.name}_not_scored"

    def applies(self, pairs: pd.DataFrame) -> np.ndarray:
        """Boolean mask of rows whose task this critic applies to."""
        return pairs["task"].isin(self.tasks).to_numpy(dtype=bool)

    @staticmethod
    def check_input(pairs: pd.DataFrame, needed: tuple[str, ...] = ("task", "source", "target")) -> None:
        missing = [c for c in needed if c not in pairs.columns]
        if missing:
            raise KeyError(f"pairs lack column(s) {missing}")
        bad = set(pairs["task"].unique()) - set(TASKS)
        if bad:
            raise ValueError(f"unknown task value(s) {sorted(map(str, bad))}; expected one of {TASKS}")

    @staticmethod
    def stored(pairs: pd.DataFrame, column: str) -> np.ndarray:
        """A stored float score column as a numpy array; all-NaN when the column is absent."""
        if column not in pairs.columns:
            return np.full(len(pairs), np.nan)
        return pd.to_numeric(pairs[column], errors="coerce").to_numpy(dtype=float)

    @staticmethod
    def keep_all(n: int) -> np.ndarray:
        out = np.empty(n, dtype=object)
        out[:] = ""
        return out

    def __repr__(self) -> str:  # thresholds show up in logs
        params = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_") and k != "scorer")
        return f"{type(self).__name__}({params})"


def set_first(reasons: np.ndarray, new: np.ndarray) -> np.ndarray:
    """Fill rows whose reason is still "" with ``new`` (first failing reason wins). In place; returns it."""
    new = np.asarray(new, dtype=object)
    upd = (reasons == "") & (new != "")
    reasons[upd] = new[upd]
    return reasons
