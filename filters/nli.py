"""NLI critic and NLI scorers.

A scorer is a callable ``scorer(premises: list[str], hypotheses: list[str]) -> np.ndarray`` of shape
(N, 3), float, columns in the fixed order ``[entailment, neutral, contradiction]`` whatever the
model's own label order, rows summing to 1.

* ``StandInScorer``: deterministic and model-free, for logic tests.
* ``HFNLIScorer``: a Hugging Face sequence-classification NLI model (loaded by ``distill.models``),
  token-budget batching, OOM back-off by halving batches.
* ``NLIFilter``: the critic (paper: p_entail >= 0.75, both directions for paraphrases).
"""

from __future__ import annotations

import re
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from distill.filters.base import Filter
from distill.filters.numbers import NUMBER_WORDS, number_set

ENTAILMENT, NEUTRAL, CONTRADICTION = 0, 1, 2
LABELS = ("entailment", "neutral", "contradiction")

Scorer = Callable[[Sequence[str], Sequence[str]], np.ndarray]


def _check_lists(premises, hypotheses) -> tuple[list[str], list[str]]:
    premises, hypotheses = [str(p) for p in premises], [str(h) for h in hypotheses]
    if len(premises) != len(hypotheses):
        raise ValueError(f"{len(premises)} premises but {len(hypotheses)} hypotheses")
    return premises, hypotheses


# ---------------------------------------------------------------------------------------------------
# Stand-in scorer
# ---------------------------------------------------------------------------------------------------

STOPWORDS = frozenset(
    "a an the of to in on at by for from with as and or but is are was were be been being it its "
    "this that these those has have had he she they his her their there".split()
)
_WORD = re.compile(r"[a-z]+")


def content_words(text: str) -> frozenset[str]:
    """Lower-cased alphabetic words minus ``STOPWORDS`` and number words (numbers are compared apart)."""
    return frozenset(w for w in _WORD.findall(text.lower()) if w not in STOPWORDS and w not in NUMBER_WORDS)


class StandInScorer:
    """Deterministic, model-free NLI stand-in for logic tests. The rule, per (premise, hypothesis):

    * numbers: N(x) = the set of normalised numbers of x (``distill.filters.numbers.number_set``,
      so "3" == "three"). If N(h) is not a subset of N(p) (the hypothesis states a number the
      premise lacks): ``[0.05, 0.15, 0.80]`` (contradiction).
    * otherwise, with C(x) = ``content_words(x)`` and cover = |C(h) & C(p)| / |C(h)| (1.0 when C(h)
      is empty): ``[0.05 + 0.9 * cover, 0.9 * (1 - cover), 0.05]``.

    So a hypothesis whose content words are all in the premise gets p_entail = 0.95; the argmax is
    entailment iff cover > 0.85 / 1.8 (about 0.472); p_entail >= 0.75 iff cover >= 7/9.
    """

    def __call__(self, premises: Sequence[str], hypotheses: Sequence[str]) -> np.ndarray:
        premises, hypotheses = _check_lists(premises, hypotheses)
        out = np.empty((len(premises), 3), dtype=float)
        for i, (p, h) in enumerate(zip(premises, hypotheses)):
            if not number_set(h) <= number_set(p):
                out[i] = (0.05, 0.15, 0.80)
                continue
            ch = content_words(h)
            cover = len(ch & content_words(p)) / len(ch) if ch else 1.0
            out[i] = (0.05 + 0.9 * cover, 0.9 * (1.0 - cover), 0.05)
        return out


# ---------------------------------------------------------------------------------------------------
# Hugging Face scorer
# ---------------------------------------------------------------------------------------------------


def is_oom(err: BaseException) -> bool:
    """True for a CUDA out-of-memory error (``torch.cuda.OutOfMemoryError`` or a RuntimeError saying so)."""
    import torch

    oom_type = getattr(torch.cuda, "OutOfMemoryError", None) or getattr(torch, "OutOfMemoryError", None)
    if oom_type is not None and isinstance(err, oom_type):
        return True
    return isinstance(err, RuntimeError) and "out of memory" in str(err).lower()


class HFNLIScorer:
    """NLI probabilities from a Hugging Face sequence-classification model.

    Pairs are tokenized (truncated to ``max_length`` tokens), sorted by length (longest first) and
    grouped into batches whose padded size (rows x longest row) stays within
    ``max_tokens_per_batch``; each batch runs under ``torch.inference_mode``; the softmax is taken
    in float32 and its columns reordered to [entailment, neutral, contradiction] by
    ``distill.models.label_indices``; results come back in input order.

    On CUDA out-of-memory a batch is split in half and each half retried, down to single rows
    (a single row that still runs out of memory raises); no row is ever dropped. ``_forward`` is
    the one place the model runs, so a test can make it raise for large batches.
    """

    def __init__(
        self,
        model_name_or_path: str,
        *,
        device: str = "cpu",
        dtype: str = "auto",
        max_tokens_per_batch: int = 8192,
        max_length: int = 256,
        trust_remote_code: bool = False,
    ):
        from distill.models import label_indices, load_nli  # lazy: keeps torch/transformers off import

        if max_tokens_per_batch < 1 or max_length < 1:
            raise ValueError("max_tokens_per_batch and max_length must be positive")
        self.model_name_or_path = model_name_or_path
        self.model, self.tokenizer = load_nli(
            model_name_or_path, device=device, dtype=dtype, trust_remote_code=trust_remote_code
        )
        self.model.eval()
        idx = label_indices(self.model.config)
        self.label_order = [int(idx[name]) for name in LABELS]  # model column of each output column
        self.max_tokens_per_batch = int(max_tokens_per_batch)
        self.max_length = int(max_length)
        self.oom_splits = 0  # how many times a batch was halved after an out-of-memory error

    @property
    def device(self):
        return next(self.model.parameters()).device

    # -- batching ---------------------------------------------------------------------------------
    def _encode(self, premises: list[str], hypotheses: list[str]) -> list[dict]:
        enc = self.tokenizer(premises, hypotheses, truncation=True, max_length=self.max_length)
        keys = [k for k in enc.keys() if k in ("input_ids", "attention_mask", "token_type_ids")]
        return [{k: enc[k][i] for k in keys} for i in range(len(premises))]

    def _batches(self, lengths: np.ndarray) -> list[np.ndarray]:
        """Row-index batches, longest rows first, each within the padded token budget (>= 1 row)."""
        order = np.argsort(-lengths, kind="stable")
        batches, start = [], 0
        while start < len(order):
            longest = int(lengths[order[start]])  # sorted descending: the first row sets the padding
            rows = max(1, self.max_tokens_per_batch // max(longest, 1))
            batches.append(order[start : start + rows])
            start += rows
        return batches

    def _collate(self, features: list[dict]) -> dict:
        batch = self.tokenizer.pad(features, padding=True, return_tensors="pt")
        return {k: v.to(self.device) for k, v in batch.items()}

    def _forward(self, batch: dict) -> np.ndarray:
        """Run the model on one padded batch -> (rows, 3) probabilities in [entail, neutral, contra]."""
        import torch

        with torch.inference_mode():
            logits = self.model(**batch).logits
            probs = torch.softmax(logits.float(), dim=-1)[:, self.label_order]
        probs = probs.cpu().numpy().astype(np.float64)
        return probs / probs.sum(axis=1, keepdims=True)

    def _score_rows(self, features: list[dict]) -> np.ndarray:
        try:
            return self._forward(self._collate(features))
        except Exception as err:  # noqa: BLE001 - re-raised unless it is an OOM we can split
            if not is_oom(err) or len(features) <= 1:
                raise
        # out of memory: free what we can, halve, retry each half (recursively, down to one row)
        self.oom_splits += 1
        self._free_memory()
        half = len(features) // 2
        return np.concatenate([self._score_rows(features[:half]), self._score_rows(features[half:])])

    @staticmethod
    def _free_memory() -> None:
        import gc

        import torch

        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def __call__(self, premises: Sequence[str], hypotheses: Sequence[str]) -> np.ndarray:
        premises, hypotheses = _check_lists(premises, hypotheses)
        out = np.zeros((len(premises), 3), dtype=np.float64)
        if not premises:
            return out
        features = self._encode(premises, hypotheses)
        lengths = np.array([len(f["input_ids"]) for f in features])
        for rows in self._batches(lengths):
            out[rows] = self._score_rows([features[i] for i in rows])
        return out


# ---------------------------------------------------------------------------------------------------
# The critic
# ---------------------------------------------------------------------------------------------------


class NLIFilter(Filter):
    """Entailment in both directions for paraphrases, source => target for summaries.

    Columns: ``nli_forward`` = p_entail(source => target) for every row; ``nli_reverse`` =
    p_entail(target => source) for paraphrase rows (NaN for summary rows). Both directions are
    scored in ONE scorer call. Keeps p >= ``threshold``; reasons ``nli_forward_low`` (checked
    first), then ``nli_reverse_low``; ``nli_not_scored`` where a needed probability is NaN.
    """

    name = "nli"
    columns = ("nli_forward", "nli_reverse")
    cheap = False

    def __init__(self, scorer: Scorer, threshold: float = 0.75):
        self.scorer = scorer
        self.threshold = float(threshold)

    def score(self, pairs: pd.DataFrame) -> pd.DataFrame:
        self.check_input(pairs)
        out = pairs.copy()
        n = len(pairs)
        forward, reverse = np.full(n, np.nan), np.full(n, np.nan)
        if n:
            src = pairs["source"].astype(str).tolist()
            tgt = pairs["target"].astype(str).tolist()
            para = np.flatnonzero(pairs["task"].to_numpy() == "paraphrase")
            premises = src + [tgt[i] for i in para]
            hypotheses = tgt + [src[i] for i in para]
            probs = np.asarray(self.scorer(premises, hypotheses), dtype=float)
            if probs.shape != (len(premises), 3):
                raise ValueError(f"NLI scorer returned shape {probs.shape}, expected ({len(premises)}, 3)")
            forward = probs[:n, ENTAILMENT].copy()
            reverse[para] = probs[n:, ENTAILMENT]
        out["nli_forward"] = forward
        out["nli_reverse"] = reverse
        return out

    def decide(self, pairs: pd.DataFrame) -> np.ndarray:
        fwd = self.stored(pairs, "nli_forward")
        rev = self.stored(pairs, "nli_reverse")
        para = pairs["task"].to_numpy() == "paraphrase"
        applies = self.applies(pairs)
        out = self.keep_all(len(pairs))
        with np.errstate(invalid="ignore"):
            rev_missing = para & np.isnan(rev)
            out[para & (rev < self.threshold)] = "nli_reverse_low"
            out[rev_missing] = self.not_scored
            out[fwd < self.threshold] = "nli_forward_low"  # forward is checked first: it wins
            out[applies & np.isnan(fwd)] = self.not_scored
        return out
