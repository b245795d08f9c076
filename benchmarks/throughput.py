"""Throughput harness (issue 6): the project's pipeline against the reference approach, in one run on one machine.

    python -m benchmarks.throughput --scale tiny                    # CPU, tiny models, well under 3 minutes
    python -m benchmarks.throughput --scale paper --device cuda     # GPT2-XL / RoBERTa-large shapes, random weights

What runs, on the same contexts and the same machine:

* **project**: ``CandidatesStage`` (contexts x k rows batched across contexts, length-sorted prompts, a row
  stops once its first sentence is complete; bf16 on cuda), ``PairsStage``, ``CritiqueStage`` (cheap critics
  first, both NLI directions in one length-sorted token-budget pass, dedup on the survivors). The real stage
  classes run; only model *loading* is replaced, so random-weight models can be handed in.
* **reference**: a re-implementation of the paper's public code (github.com/jaehunjung1/impossible-distillation,
  ``generate_conditional.py``, ``pipeline/con.py``, ``pipeline/filter.py``, stage 0), in the section
  "THE REFERENCE APPROACH" below: one ``generate`` per context with ``num_return_sequences=k`` (fp32, sampling,
  no early stop), then per context: length, NLI forward (fixed batches of 2048 pairs, unsorted, fp32),
  NLI reverse on the forward survivors, dedup, numbers, ROUGE-L.
* **reference_all_pairs**: the same generation; NLI on ALL k(k-1)/2 pairs in both directions first (the
  accounting of the issue: "about 16 GPU-seconds per context"), then ROUGE-L, length, numbers, dedup.

Both tables, the JSON (``--out``) and the markdown section appended to ``BENCHMARKS.md`` (``--benchmarks-md``)
report new tokens/s, useful tokens/s (tokens of the kept first sentences), NLI pair-scores/s and per context,
seconds per context end to end, peak host RSS, peak GPU memory, and the ratio project/reference.

Random weights (``--scale paper``) never end a sentence and never pass a critic, so the workload is made
explicit and is the same for both approaches (see ``BENCHMARKS.md``): a synthetic word-level tokenizer with
GPT-2's 50257 ids, a logits processor that gives the sentence-end token a fixed probability per step
(first sentences of ~25 tokens), and a deterministic stand-in for the NLI probabilities (the random-weight
model still runs on every pair, for the cost; the decisions come from the stand-in).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import hashlib
import itertools
import json
import math
import os
import platform
import random
import resource
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
DEFAULT_MD = REPO / "BENCHMARKS.md"
DEFAULT_OUT = REPO / "benchmarks" / "results"

# Decoding settings of the candidates step, the same for both approaches (paper; the public code's news
# setting used temperature 0.5, which changes no cost).
MAX_NEW_TOKENS = 100
TOP_P = 0.9
TEMPERATURE = 0.7
NO_REPEAT_NGRAM = 3

SCALES = {
    # contexts, k, contexts given to the reference, contexts per project generate call, default device
    "tiny": {"contexts": 4, "k": 8, "reference_contexts": None, "contexts_per_call": None, "device": "cpu"},
    "paper": {"contexts": 16, "k": 100, "reference_contexts": 4, "contexts_per_call": 16, "device": "cuda"},
}

# Random-weight shapes (paper scale): GPT2-XL and RoBERTa-large with 3 labels (WANLI's label order).
GPT2_XL = {"vocab_size": 50257, "n_positions": 1024, "n_embd": 1600, "n_layer": 48, "n_head": 25}
ROBERTA_LARGE = {"vocab_size": 50265, "hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16,
                 "intermediate_size": 4096, "max_position_embeddings": 514, "type_vocab_size": 1}
GPT2_SPECIALS = {13: ".", 198: "\n", 628: "\n\n", 50256: "<|endoftext|>"}  # the ids GPT-2 gives these
GPT2_END_ID, GPT2_EOS_ID, GPT2_NEWLINE_IDS = 13, 50256, (198, 628)
ROBERTA_SPECIALS = {0: "<s>", 1: "<pad>", 2: "</s>", 3: "<unk>", 4: ".", 50264: "<mask>"}
WANLI_LABELS = {0: "contradiction", 1: "entailment", 2: "neutral"}

# The table: (metric key, label). Every approach block of the JSON has these keys and APPROACH_FIELDS.
METRICS = (
    ("gen_new_tokens_per_s", "generation: new tokens/s"),
    ("gen_useful_tokens_per_s", "generation: useful tokens/s (kept first sentences)"),
    ("nli_pair_scores_per_s", "NLI pair-scores/s"),
    ("nli_pair_scores_per_context", "NLI pair-scores (calls) per context"),
    ("seconds_per_context", "seconds per context, end to end"),
    ("peak_rss_mb", "peak host RSS (MiB)"),
    ("peak_gpu_mem_mb", "peak GPU memory (MiB)"),
    ("candidates_per_context", "candidates (distinct first sentences) per context"),
    ("mean_first_sentence_tokens", "mean first-sentence tokens"),
    ("kept_pairs_per_context", "kept pairs per context"),
)
APPROACH_FIELDS = (
    "contexts", "dtype_generation", "dtype_nli", "generate_calls", "generate_seconds", "gen_seconds", "gen_rows",
    "gen_token_slots", "gen_new_tokens", "gen_new_tokens_per_s", "candidates", "candidates_per_context",
    "gen_useful_tokens", "gen_useful_tokens_per_s", "mean_first_sentence_tokens", "pairs", "pairs_seconds",
    "critique_seconds", "nli_pair_scores", "nli_seconds", "nli_pair_scores_per_s", "nli_pair_scores_per_context",
    "nli_forward_passes", "nli_forward_passes_per_context", "kept_pairs", "kept_pairs_per_context", "funnel",
    "seconds_per_context", "peak_rss_mb", "peak_gpu_mem_mb",
)
TOP_FIELDS = ("scale", "date", "machine", "settings", "workload", "project", "reference", "reference_all_pairs",
              "ratio", "process_peak_rss_mb", "wall_seconds", "model_load_seconds", "json_path")
MACHINE_FIELDS = ("cpu_model", "cpu_cores_logical", "cpu_cores_physical", "cpu_cores_usable", "gpu", "torch",
                  "transformers", "python", "platform")
REFERENCES = ("reference", "reference_all_pairs")


class UsageError(Exception):
    """A bad command line or an unusable machine: one line, exit code 2."""


# ==============================================================================================================
# Measuring: clocks, memory, machine
# ==============================================================================================================


def _is_cuda(device: str) -> bool:
    return str(device).startswith("cuda")


def _now(device: str) -> float:
    """perf_counter after the device's queued work is done (so GPU time lands in the span that caused it)."""
    if _is_cuda(device):
        import torch

        torch.cuda.synchronize()
    return time.perf_counter()


def current_rss() -> int:
    """Resident set size of this process in bytes (psutil when installed, else /proc/self/statm, else ru_maxrss)."""
    try:
        import psutil

        return psutil.Process().memory_info().rss
    except ImportError:
        pass
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return int(process_peak_rss_mb() * 2**20)


class PeakMemory:
    """Peak host RSS (polled every 10 ms) and peak GPU memory (torch.cuda.max_memory_allocated) of a span."""

    def __init__(self, device: str, interval: float = 0.01):
        self.device, self.interval = device, interval
        self.peak_rss_mb: float = 0.0
        self.peak_gpu_mb: float | None = None

    def _rss(self) -> int:
        return current_rss()

    def _poll(self) -> None:
        while not self._stop.wait(self.interval):
            self._peak = max(self._peak, self._rss())

    def __enter__(self) -> PeakMemory:
        self._peak = self._rss()
        if _is_cuda(self.device):
            import torch

            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._peak = max(self._peak, self._rss())
        self.peak_rss_mb = self._peak / 2**20
        if _is_cuda(self.device):
            import torch

            torch.cuda.synchronize()
            self.peak_gpu_mb = torch.cuda.max_memory_allocated() / 2**20


def _max_or_none(*values):
    values = [v for v in values if v is not None]
    return max(values) if values else None


def process_peak_rss_mb() -> float:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 1024


def machine_info(device: str) -> dict:
    import torch
    import transformers

    try:
        import psutil

        physical = psutil.cpu_count(logical=False)
    except ImportError:
        physical = None
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu_model": cpu,
        "cpu_cores_logical": os.cpu_count(),
        "cpu_cores_physical": physical,
        "cpu_cores_usable": usable,
        "gpu": torch.cuda.get_device_name(0) if _is_cuda(device) else None,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


class GenerateCounter:
    """Wraps ``model.generate`` (as an instance attribute, so ``distill.sampling.sample`` calls it unchanged).

    Counts calls, rows, new-token slots (rows x generated length: what the GPU computed), real new tokens
    (not padding after a row finished) and the seconds spent inside ``generate``; prepends ``processors``
    (the random-weight sentence-end rate) to the logits processors of every call.
    """

    def __init__(self, model, pad_id: int | None, device: str, processors=()):
        self.model, self.pad_id, self.device, self.processors = model, pad_id, device, list(processors)
        self.calls = self.rows = self.slots = self.new_tokens = 0
        self.seconds = 0.0

    def __enter__(self) -> GenerateCounter:
        self._orig = self.model.generate
        self.model.generate = self._generate
        return self

    def __exit__(self, *exc) -> None:
        del self.model.generate  # back to the class's method
        self.model = self._orig = None  # the counts stay; the model may be freed

    def _generate(self, *args, **kw):
        from transformers import LogitsProcessorList

        if self.processors:
            kw["logits_processor"] = LogitsProcessorList([*self.processors, *(kw.get("logits_processor") or [])])
        prompt_len = (kw["input_ids"] if "input_ids" in kw else args[0]).shape[1]
        t0 = _now(self.device)
        out = self._orig(*args, **kw)
        self.seconds += _now(self.device) - t0
        new = out[:, prompt_len:]
        self.calls += 1
        self.rows += int(new.shape[0])
        self.slots += int(new.numel())
        self.new_tokens += int((new != self.pad_id).sum()) if self.pad_id is not None else int(new.numel())
        return out


class TimedScorer:
    """An NLI scorer (premises, hypotheses) -> probabilities, timed: rows (directional pair-scores), calls, seconds."""

    def __init__(self, scorer, device: str):
        self.scorer, self.device = scorer, device
        self.rows = self.calls = 0
        self.seconds = 0.0

    def __call__(self, premises, hypotheses):
        t0 = _now(self.device)
        out = self.scorer(premises, hypotheses)
        self.seconds += _now(self.device) - t0
        self.rows += len(premises)
        self.calls += 1
        return out

    @property
    def forward_passes(self) -> int:
        return int(getattr(self.scorer, "forward_passes", 0)) if self.scorer is not None else self._passes

    def release(self) -> None:
        """Keeps the counts, drops the scorer (and its model)."""
        self._passes = self.forward_passes
        self.scorer = None


def count_forward_passes(hf_scorer) -> None:
    """Counts the batches ``HFNLIScorer`` runs (its ``_forward`` is the one place its model runs)."""
    hf_scorer.forward_passes = 0
    inner = hf_scorer._forward

    def forward(batch):
        hf_scorer.forward_passes += 1
        return inner(batch)

    hf_scorer._forward = forward


# ==============================================================================================================
# The workload of random-weight runs: synthetic tokenizers, random models, sentence-end rate, stand-in NLI
# ==============================================================================================================


def word(i: int) -> str:
    """The synthetic word of token id ``i``: "x" + base-26 letters. No digits, no number words, no abbreviations,
    so the numbers critic finds no numbers and ROUGE-L sees distinct words."""
    s = ""
    while True:
        s = chr(97 + i % 26) + s
        i //= 26
        if i == 0:
            return "x" + s


def synthetic_tokenizer(vocab_size: int, specials: dict[int, str], *, kind: str):
    """A real (fast) word-level tokenizer of ``vocab_size`` ids: id i <-> ``word(i)``, except ``specials``.

    ``kind="gpt2"``: GPT-2's ids for ".", "\\n", "\\n\\n", "<|endoftext|>" (eos = pad = unk), left padding.
    ``kind="roberta"``: RoBERTa's special ids, pairs encoded ``<s> A </s></s> B </s>``, right padding.
    Text is words separated by spaces, the sentence end a separate "." ("xbq xkd . xra"): Punkt splits it,
    so the project's and the reference's sentence logic run unchanged on it.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {word(i): i for i in range(vocab_size) if i not in specials}
    vocab.update({tok: i for i, tok in specials.items()})
    if kind == "gpt2":
        eos = specials[GPT2_EOS_ID]
        tok = Tokenizer(models.WordLevel(vocab, unk_token=eos))
        tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
        fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=eos, eos_token=eos, unk_token=eos,
                                       pad_token=eos, model_input_names=["input_ids", "attention_mask"])
        fast.padding_side = "left"
        return fast
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=[("<s>", 0), ("</s>", 2)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   pad_token="<pad>", cls_token="<s>", sep_token="</s>", mask_token="<mask>",
                                   model_input_names=["input_ids", "attention_mask"])
    fast.padding_side = "right"
    fast.model_max_length = 512
    return fast


def _parse_sets(items: list[str]) -> dict:
    out = {}
    for item in items:
        if "=" not in item:
            raise UsageError(f"expected KEY=VALUE, got {item!r}")
        key, raw = item.split("=", 1)
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        out[key.strip()] = value
    return out


def random_lm(device: str, seed: int, overrides: dict):
    """GPT2-XL's shape (n_layer 48, n_embd 1600, n_head 25), random weights (``from_config``), fp32."""
    import torch
    from transformers import AutoModelForCausalLM, GPT2Config

    cfg = GPT2Config(**{**GPT2_XL, **overrides}, bos_token_id=GPT2_EOS_ID, eos_token_id=GPT2_EOS_ID,
                     pad_token_id=GPT2_EOS_ID)
    torch.manual_seed(seed)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(cfg)
    model.to(device=device, dtype=torch.float32).eval()
    model.generation_config.pad_token_id = GPT2_EOS_ID
    return model, synthetic_tokenizer(cfg.vocab_size, GPT2_SPECIALS, kind="gpt2")


def random_nli(device: str, seed: int, overrides: dict):
    """RoBERTa-large's shape with a 3-label head (WANLI's label order), random weights, fp32."""
    import torch
    from transformers import AutoModelForSequenceClassification, RobertaConfig

    cfg = RobertaConfig(**{**ROBERTA_LARGE, **overrides}, pad_token_id=1, bos_token_id=0, eos_token_id=2,
                        layer_norm_eps=1e-5, num_labels=3, id2label=dict(WANLI_LABELS),
                        label2id={v: k for k, v in WANLI_LABELS.items()})
    torch.manual_seed(seed + 1)
    with torch.device(device):
        model = AutoModelForSequenceClassification.from_config(cfg)
    model.to(device=device, dtype=torch.float32).eval()
    return model, synthetic_tokenizer(cfg.vocab_size, ROBERTA_SPECIALS, kind="roberta")


class EndTokenRate:
    """Random-weight runs only: sets the sentence-end token's logit so that p(end) = ``rate`` at every step.

    The probability is exact after temperature (and after top-k, for a sampler that applies top-k, as the
    reference does); top-p then keeps the end token (it is the most likely one) and renormalises by the
    nucleus mass (about ``top_p``), so ``rate = top_p / L`` gives first sentences of about L tokens in BOTH
    approaches. A token already banned (-inf, e.g. by no-repeat-ngram) stays banned.
    """

    def __init__(self, end_id: int, rate: float, temperature: float, top_k: int | None = None):
        if not 0 < rate < 1:
            raise ValueError("rate must be in (0, 1)")
        self.end_id, self.rate, self.temperature, self.top_k = end_id, rate, temperature, top_k

    def __call__(self, input_ids, scores):
        import torch

        s = scores.float() / self.temperature
        end = s[:, self.end_id].clone()
        s[:, self.end_id] = -float("inf")
        if self.top_k:
            s = torch.topk(s, self.top_k - 1, dim=-1).values
        target = (torch.logsumexp(s, dim=-1) + math.log(self.rate / (1 - self.rate))) * self.temperature
        out = scores.clone()
        out[:, self.end_id] = torch.where(torch.isneginf(end), out[:, self.end_id], target.to(out.dtype))
        return out


def standin_probs(premises, hypotheses, pass_rate: float) -> np.ndarray:
    """Deterministic stand-in NLI probabilities ``[entail, neutral, contradiction]`` of each pair of texts.

    u = BLAKE2b(premise, hypothesis) in [0, 1); with c = 1 - pass_rate: p_entail = 0.75 + 0.25 (u - c) / pass_rate
    when u >= c (passes the 0.75 threshold, entailment is the argmax), else p_entail = 0.5 u / c (fails, neutral
    is the argmax); p_neutral = 1 - p_entail. So each direction passes with probability ``pass_rate``
    independently, and dedup's mutual-entailment edges appear at pass_rate^2.
    """
    out = np.zeros((len(premises), 3))
    cut = 1.0 - pass_rate
    for i, (p, h) in enumerate(zip(premises, hypotheses)):
        digest = hashlib.blake2b(f"{p}\x1f{h}".encode(), digest_size=8).digest()
        u = int.from_bytes(digest, "big") / 2.0**64
        pe = 0.75 + 0.25 * (u - cut) / pass_rate if u >= cut else 0.5 * u / cut
        out[i] = (pe, 1.0 - pe, 0.0)
    return out


class StandInOverModel:
    """Runs the (random-weight, timed) model scorer on every pair for its cost, returns the stand-in's decisions."""

    def __init__(self, model_scorer, pass_rate: float):
        self.model_scorer, self.pass_rate = model_scorer, pass_rate

    def __call__(self, premises, hypotheses):
        self.model_scorer(premises, hypotheses)
        return standin_probs(premises, hypotheses, self.pass_rate)


def random_records(n: int, seed: int, vocab_size: int, specials: dict[int, str]) -> pd.DataFrame:
    """Contexts of 1-4 sentences of 8-40 random words each, ending with " ."; ids outside ``specials``."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        sentences = []
        for _ in range(rng.randint(1, 4)):
            ids = []
            while len(ids) < rng.randint(8, 40):
                j = rng.randrange(vocab_size)
                if j not in specials:
                    ids.append(j)
            sentences.append(" ".join(word(j) for j in ids) + " .")
        rows.append(_record(i, " ".join(sentences)))
    return pd.DataFrame(rows)


def tiny_records(n: int, seed: int) -> pd.DataFrame:
    """Contexts for the tiny teacher: the first sentence of each passage of distill's synthetic corpus."""
    from distill import tiny
    from distill.text import split_sentences

    return pd.DataFrame([_record(i, split_sentences(text)[0]) for i, text in enumerate(tiny.corpus(n, seed + 7))])


def _record(i: int, context: str) -> dict:
    return {"record_id": f"c{i:05d}", "passage_id": f"c{i:05d}", "prefix": "", "context": context,
            "sentence": "", "seed": 0}


# ==============================================================================================================
# THE REFERENCE APPROACH: a re-implementation of the paper's public code (jaehunjung1/impossible-distillation,
# stage 0: generate_conditional.py, pipeline/con.py ConGenerator, pipeline/filter.py ConFilter.filter_bootstrap).
# Written from its behaviour and kept as it was, including its numbers check. Differences that are not the
# code's own: sentences are split with Punkt (``distill.text``) instead of spaCy, numbers extracted with
# ``distill.filters.numbers`` instead of spaCy's numerizer, the NLI tokenizer is fast (the code used the slow
# one), ROUGE-L runs in-process (the code used a pool of 4): all of these make the reference faster, not slower.
# ==============================================================================================================

REF_NLI_BATCH = 2048  # ConFilter.nli_max_batch_size
REF_TOP_K = 50  # the code set no top_k: transformers' default at the time (50) applied
REF_LENGTH = (0.8, 1.5)
REF_NLI_THRESHOLD = REF_REVERSE_NLI_THRESHOLD = REF_ROUGEL_THRESHOLD = 0.75


@dataclass
class RefPair:
    """The code's ``Pair``: y_orig (source) and y_new (target), candidate indices, scores."""

    orig_idx: int
    new_idx: int
    orig: str
    new: str
    nli: float = 0.0
    reverse_nli: float = 0.0
    rougeL: float = 100.0


def reference_generate(model, tokenizer, prompt: str, k: int, *, banned_ids, device: str) -> list[str]:
    """One ``generate`` call for one context: ``num_return_sequences=k``, ``do_sample=True``, top-p 0.9, top-k 50,
    temperature 0.7, no-repeat-3-gram, 100 new tokens, newline tokens as bad words, fp32, no early stop.
    Returns the k continuations (the text after the prompt)."""
    import torch

    enc = tokenizer([prompt], return_tensors="pt", truncation=True, padding=True).to(device)
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=MAX_NEW_TOKENS, num_return_sequences=k, do_sample=True,
                             top_p=TOP_P, top_k=REF_TOP_K, temperature=TEMPERATURE,
                             no_repeat_ngram_size=NO_REPEAT_NGRAM,
                             bad_words_ids=[[int(i)] for i in banned_ids] or None,
                             pad_token_id=tokenizer.pad_token_id)
    return tokenizer.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)


def reference_first_sentence(text: str) -> str:
    """``postprocess_generation``: the first sentence of the stripped continuation, or ''."""
    from distill.text import split_sentences

    sents = split_sentences(text.strip())
    return sents[0] if sents else ""


def reference_qualifies(text: str) -> bool:
    """``qualifies_as_y_con`` (news): at least 3 characters, no newline, ends with . ? or !"""
    return len(text) >= 3 and "\n" not in text and text[-1] in (".", "?", "!")


class ReferenceNLI:
    """``ConFilter.infer_nli``: fixed batches of 2048 pairs in input order (unsorted), padded to the longest of the
    batch, truncated at 512 tokens, fp32 softmax under ``no_grad``. Returns [entail, neutral, contradiction]
    probabilities (the code read the model's column 1, which is entailment in WANLI's order)."""

    def __init__(self, model, tokenizer, batch_size: int = REF_NLI_BATCH):
        from distill.models import label_indices

        self.model, self.tokenizer, self.batch_size = model, tokenizer, batch_size
        idx = label_indices(model.config)
        self.order = [idx["entailment"], idx["neutral"], idx["contradiction"]]
        limit = getattr(model.config, "max_position_embeddings", 514) - 2  # RoBERTa's positions start at 2
        self.max_length = min(512, int(getattr(tokenizer, "model_max_length", 512)), limit)
        self.forward_passes = 0

    def __call__(self, premises, hypotheses) -> np.ndarray:
        import torch
        import torch.nn.functional as F

        device = next(self.model.parameters()).device
        predictions = []
        for start in range(0, len(premises), self.batch_size):
            with torch.no_grad():
                enc = self.tokenizer(list(premises[start:start + self.batch_size]),
                                     list(hypotheses[start:start + self.batch_size]), truncation=True,
                                     max_length=self.max_length, padding=True, return_tensors="pt").to(device)
                predictions.append(F.softmax(self.model(**enc).logits, dim=-1))
                self.forward_passes += 1
        if not predictions:
            return np.zeros((0, 3))
        return torch.cat(predictions).float().cpu().numpy()[:, self.order].astype(np.float64)


def reference_pairs(y_cons: list[str]) -> list[RefPair]:
    """All ``itertools.combinations`` of the candidates (duplicates included, as in the code)."""
    return [RefPair(i, j, y_cons[i], y_cons[j]) for i, j in itertools.combinations(range(len(y_cons)), 2)]


def ref_filter_length(pairs: list[RefPair]) -> list[RefPair]:
    lo, hi = REF_LENGTH
    return [p for p in pairs if lo * len(p.orig) <= len(p.new) <= hi * len(p.orig)]


def ref_set_and_filter_nli(pairs: list[RefPair], nli) -> list[RefPair]:
    """Forward NLI (y_orig => y_new) of the given pairs; keeps p_entail >= 0.75."""
    if not pairs:
        return []
    probs = nli([p.orig for p in pairs], [p.new for p in pairs])
    for p, score in zip(pairs, probs[:, 0]):
        p.nli = float(score)
    return [p for p in pairs if p.nli >= REF_NLI_THRESHOLD]


def ref_set_and_filter_reverse_nli(pairs: list[RefPair], nli) -> list[RefPair]:
    """Reverse NLI (y_new => y_orig) of the given pairs; keeps p_entail >= 0.75."""
    if not pairs:
        return []
    probs = nli([p.new for p in pairs], [p.orig for p in pairs])
    for p, score in zip(pairs, probs[:, 0]):
        p.reverse_nli = float(score)
    return [p for p in pairs if p.reverse_nli >= REF_REVERSE_NLI_THRESHOLD]


def _ref_components(nodes: list[int], edges: list[tuple[int, int]]) -> list[set[int]]:
    """Connected components (as ``networkx.connected_components``: by first node, breadth first, as sets)."""
    adj: dict[int, list[int]] = {n: [] for n in nodes}
    for a, b in edges:
        adj[a].append(b)
        adj[b].append(a)
    seen: set[int] = set()
    out = []
    for source in nodes:
        if source in seen:
            continue
        comp, level = {source}, [source]
        while level:
            nxt = []
            for v in level:
                for w in adj[v]:
                    if w not in comp:
                        comp.add(w)
                        nxt.append(w)
            level = nxt
        seen |= comp
        out.append(comp)
    return out


def _ref_dedup_side(pairs: list[RefPair], side: str, nli) -> list[RefPair]:
    """One half of ``remove_duplicates``: candidates of one side (y_orig or y_new) are linked when NLI's argmax is
    entailment in EITHER direction (all ordered permutations are scored); per connected component the pair
    with the LOWEST reverse-NLI score is kept (ties: the first in the code's iteration order)."""
    by_idx: dict[int, list[RefPair]] = {}
    text: dict[int, str] = {}
    for p in pairs:
        idx = p.orig_idx if side == "orig" else p.new_idx
        by_idx.setdefault(idx, []).append(p)
        text.setdefault(idx, p.orig if side == "orig" else p.new)
    nodes = list(by_idx)
    edges: list[tuple[int, int]] = []
    if len(nodes) >= 2:
        perms = list(itertools.permutations(nodes, 2))
        probs = nli([text[a] for a, _ in perms], [text[b] for _, b in perms])
        edges = [perm for perm, row in zip(perms, probs) if int(np.argmax(row)) == 0]
    out = []
    for comp in _ref_components(nodes, edges):
        connected = [p for idx in comp for p in by_idx[idx]]
        out.append(min(connected, key=lambda p: p.reverse_nli))
    return out


def ref_remove_duplicates(pairs: list[RefPair], nli) -> list[RefPair]:
    """``remove_duplicates``: first among the y_origs, then among the y_news of what is left."""
    if len(pairs) <= 1:
        return pairs
    pairs = _ref_dedup_side(pairs, "orig", nli)
    if len(pairs) <= 1:
        return pairs
    return _ref_dedup_side(pairs, "new", nli)


def ref_numbers_keep(orig: str, new: str) -> bool:
    """``filter_number`` AS IT WAS: the first check compares the target's numbers with the target's own numbers
    (always true: the bug); only the second one works (every number of the target is in the source). So a
    target that drops a number of its source passes, for paraphrases too."""
    from distill.filters.numbers import number_set

    y_new_numbers, y_orig_numbers = number_set(new), number_set(orig)
    if not y_new_numbers and not y_orig_numbers:
        return True
    y_orig_all_included = all(v in y_new_numbers for v in y_new_numbers)  # the code: target vs. target
    y_new_all_included = all(v in y_orig_numbers for v in y_new_numbers)
    return y_orig_all_included and y_new_all_included


def ref_filter_number(pairs: list[RefPair]) -> list[RefPair]:
    return [p for p in pairs if ref_numbers_keep(p.orig, p.new)]


def ref_set_and_filter_overlap(pairs: list[RefPair], rouge) -> list[RefPair]:
    """ROUGE-L F1 of (y_orig, y_new) with rouge-score's default tokenizer, no stemming; keeps <= 0.75."""
    for p in pairs:
        p.rougeL = rouge.score(p.orig, p.new)["rougeL"].fmeasure
    return [p for p in pairs if p.rougeL <= REF_ROUGEL_THRESHOLD]


def reference_filter(pairs: list[RefPair], nli, rouge=None, *, order: str = "code", dedup: bool = True,
                     funnel: dict | None = None) -> list[RefPair]:
    """The reference's critics on the pairs of ONE context; returns the kept pairs.

    ``order="code"`` (``filter_bootstrap``): length, NLI forward, NLI reverse (forward survivors only),
    remove_duplicates, numbers, ROUGE-L. ``order="all_pairs"`` (the issue's accounting): NLI forward and
    reverse on ALL pairs, then ROUGE-L, length, numbers, remove_duplicates. ``funnel`` accumulates
    ``{stage: [in, out]}``.
    """
    if rouge is None:
        from rouge_score import rouge_scorer

        rouge = rouge_scorer.RougeScorer(["rougeL"])

    def step(name, fn, ps):
        out = fn(ps)
        if funnel is not None:
            counts = funnel.setdefault(name, [0, 0])
            counts[0] += len(ps)
            counts[1] += len(out)
        return out

    def both_nli(ps):
        if not ps:
            return []
        fwd = nli([p.orig for p in ps], [p.new for p in ps])
        rev = nli([p.new for p in ps], [p.orig for p in ps])
        for p, f, r in zip(ps, fwd[:, 0], rev[:, 0]):
            p.nli, p.reverse_nli = float(f), float(r)
        return [p for p in ps if p.nli >= REF_NLI_THRESHOLD and p.reverse_nli >= REF_REVERSE_NLI_THRESHOLD]

    dd = (lambda ps: ref_remove_duplicates(ps, nli)) if dedup else (lambda ps: ps)
    if order == "code":
        pairs = step("length", ref_filter_length, pairs)
        pairs = step("nli_forward", lambda ps: ref_set_and_filter_nli(ps, nli), pairs)
        pairs = step("nli_reverse", lambda ps: ref_set_and_filter_reverse_nli(ps, nli), pairs)
        if dedup:
            pairs = step("dedup", dd, pairs)
        pairs = step("numbers", ref_filter_number, pairs)
        return step("rougeL", lambda ps: ref_set_and_filter_overlap(ps, rouge), pairs)
    if order == "all_pairs":
        pairs = step("nli_both", both_nli, pairs)
        pairs = step("rougeL", lambda ps: ref_set_and_filter_overlap(ps, rouge), pairs)
        pairs = step("length", ref_filter_length, pairs)
        pairs = step("numbers", ref_filter_number, pairs)
        return step("dedup", dd, pairs) if dedup else pairs
    raise ValueError(f"unknown order {order!r}")


# ==============================================================================================================
# Phases
# ==============================================================================================================


@contextlib.contextmanager
def provide_models(lm=None, nli=None):
    """Hands already-built ``(model, tokenizer)`` pairs to the project's stages: ``CandidatesStage`` and
    ``HFNLIScorer`` load through ``distill.models.load_causal_lm`` / ``load_nli``, which this replaces for the
    duration (the stages themselves run unchanged)."""
    import distill.models as m

    saved = m.load_causal_lm, m.load_nli
    if lm is not None:
        m.load_causal_lm = lambda *a, **k: lm
    if nli is not None:
        m.load_nli = lambda *a, **k: nli
    try:
        yield
    finally:
        m.load_causal_lm, m.load_nli = saved


def _token_count(tokenizer, texts) -> list[int]:
    texts = list(texts)
    if not texts:
        return []
    return [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]


def _warm_up_lm(model, tokenizer, device: str) -> None:
    import torch

    enc = tokenizer(["warm up ."], return_tensors="pt").to(device)
    with torch.no_grad():
        model.generate(**enc, max_new_tokens=2, do_sample=False, pad_token_id=tokenizer.pad_token_id)


def _warm_up_nli(model, tokenizer, device: str) -> None:
    import torch

    enc = tokenizer(["warm up ."] * 2, ["warm up ."] * 2, return_tensors="pt", padding=True).to(device)
    with torch.no_grad():
        model(**enc)


def _dtype_name(model) -> str:
    return str(next(model.parameters()).dtype).removeprefix("torch.")


def project_config(args, tasks: list[str], lm_name: str, nli_name: str):
    from distill.config import validate

    return validate({
        "name": "benchmark", "seed": args.seed, "tasks": tasks,
        "teacher": {"model": lm_name},
        "candidates": {"k": args.k, "rows_per_batch": args.contexts_per_call * args.k, "max_new_tokens": MAX_NEW_TOKENS,
                       "top_p": TOP_P, "temperature": TEMPERATURE, "no_repeat_ngram_size": NO_REPEAT_NGRAM,
                       "stop_at_sentence": True},
        "critique": {"nli": {"model": nli_name, **({"max_tokens_per_batch": args.nli_max_tokens}
                                                   if args.nli_max_tokens else {})}},
    }, "benchmark")


def project_generation(model, tokenizer, records: pd.DataFrame, cfg, device: str, processors) -> dict:
    """The project's candidates step (``CandidatesStage``, unchanged) on ``records``."""
    from distill.stages.candidates import CandidatesStage

    with provide_models(lm=(model, tokenizer)):
        stage = CandidatesStage(cfg, generator=cfg.teacher.model)  # set-up (newline ids) is load time: untimed
    with PeakMemory(device) as mem, GenerateCounter(model, tokenizer.pad_token_id, device, processors) as gen:
        t0 = _now(device)
        candidates = stage(records)
        seconds = _now(device) - t0
    tokens = _token_count(tokenizer, candidates["candidate"])
    return {"candidates_df": candidates, "gen_seconds": seconds, "counter": gen, "mem": mem,
            "useful_tokens": int(sum(tokens)), "candidates": len(candidates),
            "mean_tokens": float(np.mean(tokens)) if tokens else None}


def reference_generation(model, tokenizer, records: pd.DataFrame, k: int, device: str, processors, seed: int) -> dict:
    """The reference's generation: one call per context, first sentences, ``qualifies_as_y_con``."""
    import torch

    from distill.models import newline_token_ids

    banned = newline_token_ids(tokenizer)  # the code's bad_words_ids: newline tokens (load time: untimed)
    torch.manual_seed(seed)
    y_cons: dict[str, list[str]] = {}
    with PeakMemory(device) as mem, GenerateCounter(model, tokenizer.pad_token_id, device, processors) as gen:
        t0 = _now(device)
        for r in records.itertuples(index=False):
            prompt = f"{r.prefix} {r.context}".strip()
            texts = reference_generate(model, tokenizer, prompt, k, banned_ids=banned, device=device)
            firsts = [reference_first_sentence(t) for t in texts]
            y_cons[r.record_id] = [y for y in firsts if reference_qualifies(y)]
        seconds = _now(device) - t0
    distinct = [y for ys in y_cons.values() for y in dict.fromkeys(ys)]
    tokens = _token_count(tokenizer, distinct)
    return {"y_cons": y_cons, "gen_seconds": seconds, "counter": gen, "mem": mem,
            "useful_tokens": int(sum(tokens)), "candidates": len(distinct),
            "candidates_with_duplicates": sum(len(ys) for ys in y_cons.values()),
            "mean_tokens": float(np.mean(tokens)) if tokens else None}


def project_critique(candidates: pd.DataFrame, model, tokenizer, cfg, device: str, pass_rate: float | None) -> dict:
    """``PairsStage`` and ``CritiqueStage`` (unchanged) with the project's ``HFNLIScorer`` on ``model``."""
    from distill.filters.chain import funnel
    from distill.stages.critique import CritiqueStage, make_scorer
    from distill.stages.pairs import PairsStage

    with provide_models(nli=(model, tokenizer)):
        hf = make_scorer(cfg.critique)
    count_forward_passes(hf)
    timed = TimedScorer(hf, device)
    scorer = StandInOverModel(timed, pass_rate) if pass_rate is not None else timed
    stage = CritiqueStage(cfg.critique, scorer=scorer)
    with PeakMemory(device) as mem:
        t0 = _now(device)
        pairs = PairsStage(cfg.tasks)(candidates)
        t1 = _now(device)
        scored = stage(pairs)
        t2 = _now(device)
    timed.release()
    counts = funnel(scored)
    stages, n = [], sum(v["pairs_in"] for v in counts.values())
    for critic in ("length", "numbers", "diversity", "nli", "dedup"):
        removed = sum(v["removed"].get(critic, 0) for v in counts.values())
        stages.append((critic, n, n - removed))
        n -= removed
    return {"pairs": len(pairs), "pairs_seconds": t1 - t0, "critique_seconds": t2 - t1, "scorer": timed,
            "mem": mem, "kept": int((scored["reject"] == "").sum()), "funnel": stages}


def reference_critique(y_cons: dict[str, list[str]], model, tokenizer, device: str, pass_rate: float | None,
                       order: str) -> dict:
    """The reference's critics, context by context (as ``filter_all`` is called per ``Candidates``)."""
    from rouge_score import rouge_scorer

    timed = TimedScorer(ReferenceNLI(model, tokenizer), device)
    nli = StandInOverModel(timed, pass_rate) if pass_rate is not None else timed
    rouge = rouge_scorer.RougeScorer(["rougeL"])
    counts: dict[str, list[int]] = {}
    kept = n_pairs = 0
    pairs_seconds = critique_seconds = 0.0
    with PeakMemory(device) as mem:
        for ys in y_cons.values():
            t0 = _now(device)
            pairs = reference_pairs(ys)
            t1 = _now(device)
            kept += len(reference_filter(pairs, nli, rouge, order=order, funnel=counts))
            t2 = _now(device)
            n_pairs += len(pairs)
            pairs_seconds += t1 - t0
            critique_seconds += t2 - t1
    timed.release()
    return {"pairs": n_pairs, "pairs_seconds": pairs_seconds, "critique_seconds": critique_seconds, "scorer": timed,
            "mem": mem, "kept": kept, "funnel": [(name, a, b) for name, (a, b) in counts.items()]}


def _per(value, n):
    return None if value is None or not n else value / n


def approach_block(gen: dict, crit: dict, contexts: int, dtype_gen: str, dtype_nli: str) -> dict:
    g, s = gen["counter"], crit["scorer"]
    total = gen["gen_seconds"] + crit["pairs_seconds"] + crit["critique_seconds"]
    block = {
        "contexts": contexts, "dtype_generation": dtype_gen, "dtype_nli": dtype_nli,
        "generate_calls": g.calls, "generate_seconds": g.seconds, "gen_seconds": gen["gen_seconds"],
        "gen_rows": g.rows, "gen_token_slots": g.slots, "gen_new_tokens": g.new_tokens,
        "gen_new_tokens_per_s": _per(g.new_tokens, gen["gen_seconds"]),
        "candidates": gen["candidates"], "candidates_per_context": _per(gen["candidates"], contexts),
        "gen_useful_tokens": gen["useful_tokens"],
        "gen_useful_tokens_per_s": _per(gen["useful_tokens"], gen["gen_seconds"]),
        "mean_first_sentence_tokens": gen["mean_tokens"],
        "pairs": crit["pairs"], "pairs_seconds": crit["pairs_seconds"], "critique_seconds": crit["critique_seconds"],
        "nli_pair_scores": s.rows, "nli_seconds": s.seconds, "nli_pair_scores_per_s": _per(s.rows, s.seconds),
        "nli_pair_scores_per_context": _per(s.rows, contexts), "nli_forward_passes": s.forward_passes,
        "nli_forward_passes_per_context": _per(s.forward_passes, contexts),
        "kept_pairs": crit["kept"], "kept_pairs_per_context": _per(crit["kept"], contexts),
        "funnel": [{"stage": name, "in": a, "out": b, "pass_rate": _per(b, a)} for name, a, b in crit["funnel"]],
        "seconds_per_context": _per(total, contexts),
        "peak_rss_mb": max(gen["mem"].peak_rss_mb, crit["mem"].peak_rss_mb),
        "peak_gpu_mem_mb": _max_or_none(gen["mem"].peak_gpu_mb, crit["mem"].peak_gpu_mb),
    }
    if "candidates_with_duplicates" in gen:
        block["candidates_with_duplicates"] = gen["candidates_with_duplicates"]
    return block


def ratios(project: dict, reference: dict) -> dict:
    out = {}
    for key, _ in METRICS:
        a, b = project.get(key), reference.get(key)
        out[key] = a / b if a is not None and b not in (None, 0) else None
    return out


# ==============================================================================================================
# The run
# ==============================================================================================================


def resolve_settings(args) -> str:
    """Fills scale defaults into ``args``; returns the device. Raises UsageError (exit 2)."""
    import torch

    scale = SCALES[args.scale]
    for key in ("contexts", "k", "reference_contexts", "contexts_per_call"):
        if getattr(args, key) is None:
            setattr(args, key, scale[key])
    if args.reference_contexts is None:
        args.reference_contexts = args.contexts
    if args.contexts_per_call is None:
        args.contexts_per_call = args.contexts
    if args.contexts < 1 or args.k < 2 or args.contexts_per_call < 1 or args.reference_contexts < 1:
        raise UsageError("--contexts, --contexts-per-call and --reference-contexts must be >= 1 and --k >= 2")
    args.reference_contexts = min(args.reference_contexts, args.contexts)
    if not 0 < args.standin_nli_pass <= 1:
        raise UsageError(f"--standin-nli-pass must be in (0, 1], got {args.standin_nli_pass}")
    if args.sentence_tokens <= 1:
        raise UsageError(f"--sentence-tokens must be > 1, got {args.sentence_tokens}")
    device = args.device or scale["device"]
    has_cuda = torch.cuda.is_available()
    if args.scale == "paper" and (device == "cpu" or not has_cuda) and not args.allow_cpu:
        raise UsageError("--scale paper needs a CUDA GPU (GPT2-XL and RoBERTa-large shapes, k=100) and "
                         + ("none is available here" if not has_cuda else "--device cpu was given")
                         + "; run it on an H100/H200, or pass --allow-cpu to run it on the CPU anyway (hours)")
    if device == "cuda" and not has_cuda:
        if args.scale == "paper":
            device = "cpu"  # --allow-cpu
        else:
            raise UsageError("--device cuda: no CUDA GPU is available here")
    if args.threads is None and args.scale == "tiny":
        args.threads = 1
    if args.threads is not None:
        if args.threads < 1:
            raise UsageError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    if not tasks or set(tasks) - {"paraphrase", "summary"}:
        raise UsageError(f"--tasks: expected paraphrase and/or summary, got {args.tasks!r}")
    args.tasks_list = tasks
    args.lm_overrides = _parse_sets(args.lm_set)
    args.nli_overrides = _parse_sets(args.nli_set)
    return device


def run(args) -> dict:
    import torch

    t_start = time.perf_counter()
    device = resolve_settings(args)
    random_weights = args.scale == "paper"
    say = (lambda *a: None) if args.quiet else (lambda *a: print("[benchmark]", *a, file=sys.stderr, flush=True))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    project_dtype = torch.bfloat16 if _is_cuda(device) else torch.float32  # the project's "auto"

    # ---- contexts and models -------------------------------------------------------------------------------
    t_load = time.perf_counter()
    if random_weights:
        lm_name, nli_name = "random-gpt2-xl", "random-roberta-large-3-labels"
        say(f"building {lm_name} (random weights) on {device}")
        lm, lm_tok = random_lm(device, args.seed, args.lm_overrides)
        records = random_records(args.contexts, args.seed, lm.config.vocab_size, GPT2_SPECIALS)
        rate = TOP_P / args.sentence_tokens
        project_procs = [EndTokenRate(GPT2_END_ID, rate, TEMPERATURE)]
        reference_procs = [EndTokenRate(GPT2_END_ID, rate, TEMPERATURE, top_k=REF_TOP_K)]
        pass_rate = args.standin_nli_pass
    else:
        from distill.models import load_causal_lm

        lm_name, nli_name = "tiny-gpt2", "tiny-nli"
        say(f"loading {lm_name} on {device}")
        lm, lm_tok = load_causal_lm(lm_name, device=device, dtype="float32")
        records = tiny_records(args.contexts, args.seed)
        project_procs = reference_procs = []
        pass_rate = None
    load_seconds = time.perf_counter() - t_load
    cfg = project_config(args, args.tasks_list, lm_name, nli_name)
    ref_records = records.iloc[:args.reference_contexts]

    # ---- generation: reference (fp32), then the project (bf16 on cuda) with the same weights --------------------
    _warm_up_lm(lm, lm_tok, device)
    say(f"reference generation: {len(ref_records)} contexts x k={args.k}, one generate call per context")
    ref_gen = reference_generation(lm, lm_tok, ref_records, args.k, device, reference_procs, args.seed)
    lm.to(project_dtype)
    _warm_up_lm(lm, lm_tok, device)
    say(f"project generation: {len(records)} contexts x k={args.k}, {args.contexts_per_call * args.k} rows per call")
    proj_gen = project_generation(lm, lm_tok, records, cfg, device, project_procs)
    dtype_gen_project = _dtype_name(lm)
    del lm
    _free(device)

    # ---- critique: reference (fp32, both orders), then the project (bf16 on cuda) -------------------------------
    t_load = time.perf_counter()
    if random_weights:
        say(f"building {nli_name} (random weights) on {device}")
        nli, nli_tok = random_nli(device, args.seed, args.nli_overrides)
    else:
        from distill.models import load_nli

        say(f"loading {nli_name} on {device}")
        nli, nli_tok = load_nli(nli_name, device=device, dtype="float32")
    load_seconds += time.perf_counter() - t_load
    _warm_up_nli(nli, nli_tok, device)
    say("reference critique (public code's order)")
    ref_crit = reference_critique(ref_gen["y_cons"], nli, nli_tok, device, pass_rate, "code")
    say("reference critique (NLI on all pairs first)")
    ref_all_crit = reference_critique(ref_gen["y_cons"], nli, nli_tok, device, pass_rate, "all_pairs")
    nli.to(project_dtype)
    _warm_up_nli(nli, nli_tok, device)
    say("project critique")
    proj_crit = project_critique(proj_gen["candidates_df"], nli, nli_tok, cfg, device, pass_rate)
    dtype_nli_project = _dtype_name(nli)
    del nli
    _free(device)

    n_ref = len(ref_records)
    result = {
        "scale": args.scale,
        "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": machine_info(device),
        "settings": {
            "device": device, "contexts": args.contexts, "reference_contexts": n_ref, "k": args.k,
            "contexts_per_call": args.contexts_per_call, "rows_per_batch": args.contexts_per_call * args.k,
            "max_new_tokens": MAX_NEW_TOKENS, "top_p": TOP_P, "temperature": TEMPERATURE,
            "no_repeat_ngram_size": NO_REPEAT_NGRAM, "reference_top_k": REF_TOP_K,
            "reference_nli_batch_pairs": REF_NLI_BATCH,
            "project_nli_max_tokens_per_batch": cfg.critique.nli.max_tokens_per_batch,
            "torch_threads": torch.get_num_threads(), "tasks": args.tasks_list, "generator": lm_name,
            "critic": nli_name, "seed": args.seed,
            "lm_overrides": args.lm_overrides, "nli_overrides": args.nli_overrides,
        },
        "workload": workload_description(args, random_weights),
        "project": approach_block(proj_gen, proj_crit, len(records), dtype_gen_project, dtype_nli_project),
        "reference": approach_block(ref_gen, ref_crit, n_ref, "float32", "float32"),
        "reference_all_pairs": approach_block(ref_gen, ref_all_crit, n_ref, "float32", "float32"),
    }
    result["ratio"] = {name: ratios(result["project"], result[name]) for name in REFERENCES}
    result["process_peak_rss_mb"] = process_peak_rss_mb()
    result["wall_seconds"] = time.perf_counter() - t_start
    result["model_load_seconds"] = load_seconds  # building (random / first-use tiny) or loading the models
    return result


def _free(device: str) -> None:
    import gc

    gc.collect()
    if _is_cuda(device):
        import torch

        torch.cuda.empty_cache()


def workload_description(args, random_weights: bool) -> dict:
    common = {
        "decoding": f"top-p {TOP_P}, temperature {TEMPERATURE}, no-repeat-{NO_REPEAT_NGRAM}-gram, "
                    f"<= {MAX_NEW_TOKENS} new tokens, newline tokens banned (reference also top-k {REF_TOP_K})",
        "project_tasks": args.tasks_list,
        "reference_pairs": "one pair set per context (the code's stage 0: y_orig -> y_new, length 0.8-1.5)",
    }
    if not random_weights:
        return {"weights": "real: tiny-gpt2 and tiny-nli as built by distill.tiny", **common,
                "contexts": "first sentence of passages of distill's synthetic corpus",
                "sentence_end": "the model's own", "nli": "the model's own probabilities; pass rates as measured"}
    return {
        "weights": f"random (from_config, seed {args.seed}); LM shape {GPT2_XL | args.lm_overrides}, "
                   f"NLI shape {ROBERTA_LARGE | args.nli_overrides} with 3 labels", **common,
        "tokenizer": "synthetic word-level tokenizers with GPT-2's 50257 ids / RoBERTa's 50265 ids (word i = 'x' + "
                     "base-26 letters; '.' = id 13 / 4): real tokenizers, text that the sentence splitter, numbers, "
                     "ROUGE-L and length critics process as usual",
        "contexts": "1-4 sentences of 8-40 random words",
        "sentence_end": {"token_id": GPT2_END_ID, "p_end_per_step_before_top_p": TOP_P / args.sentence_tokens,
                         "target_mean_first_sentence_tokens": args.sentence_tokens,
                         "how": "EndTokenRate logits processor, before temperature/top-p, same rate in both"},
        "nli": {"standin_pass_rate_per_direction": args.standin_nli_pass,
                "how": "the random-weight model scores every pair (timed); the decisions come from a deterministic "
                       "BLAKE2b stand-in of the two texts, the same function for the project and the reference"},
    }


# ==============================================================================================================
# Output
# ==============================================================================================================


def _fmt(v) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        return f"{int(v):,}"
    v = float(v)
    if abs(v) >= 100:
        return f"{v:,.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.3g}"


def _fmt_ratio(v) -> str:
    return "n/a" if v is None else f"{v:.2f}x"


def markdown_section(result: dict, json_path: str | None) -> str:
    m, s = result["machine"], result["settings"]
    where = m["gpu"] or m["cpu_model"]
    lines = [
        "",
        f"### {result['scale']} scale, {result['date']}",
        "",
        f"{s['device']}: {where}; {m['cpu_cores_usable']} usable CPU cores ({m['cpu_model']}); "
        f"torch {m['torch']} ({s['torch_threads']} CPU threads), transformers {m['transformers']}. "
        f"{s['generator']} + {s['critic']}; project: {s['contexts']} contexts x k={s['k']}, "
        f"{s['rows_per_batch']} rows per generate call, tasks {','.join(s['tasks'])}; "
        f"reference: {s['reference_contexts']} contexts, one call per context. "
        f"Wall {result['wall_seconds']:.0f} s, of which {result['model_load_seconds']:.0f} s building or "
        f"loading models." + (f" JSON: `{json_path}`." if json_path else ""),
        "",
        "| metric | project | reference (public code) | project/reference | reference, NLI on all pairs | "
        "project/that |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    p, r, a = result["project"], result["reference"], result["reference_all_pairs"]
    for key, label in METRICS:
        lines.append(f"| {label} | {_fmt(p[key])} | {_fmt(r[key])} | {_fmt_ratio(result['ratio']['reference'][key])} "
                     f"| {_fmt(a[key])} | {_fmt_ratio(result['ratio']['reference_all_pairs'][key])} |")
    lines.append("")
    for name, block in (("project", p), ("reference", r), ("reference, all pairs", a)):
        steps = ", ".join(f"{f['stage']} {f['out']}/{f['in']}" for f in block["funnel"])
        lines.append(f"- pass counts, {name}: {steps or 'no pairs'}")
    lines.append("")
    return "\n".join(lines)


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def write_outputs(result: dict, out_dir: Path, md_path: Path | None) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"{result['scale']}-{result['date'][:10]}"
    path, n = out_dir / f"{stem}.json", 2
    while path.exists():
        path, n = out_dir / f"{stem}-{n}.json", n + 1
    try:
        shown = str(path.resolve().relative_to(REPO))
    except ValueError:
        shown = str(path)
    result["json_path"] = shown
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2, default=_json_default) + "\n")
    os.replace(tmp, path)
    if md_path is not None:
        with open(md_path, "a", encoding="utf-8") as f:
            f.write(markdown_section(result, shown))
    return path


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.throughput", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scale", choices=sorted(SCALES), required=True,
                   help="tiny: tiny-gpt2 + tiny-nli on the CPU; "
                        "paper: GPT2-XL + RoBERTa-large shapes, random weights, GPU")
    p.add_argument("--device", choices=["cpu", "cuda"], help="default: cpu for tiny, cuda for paper")
    p.add_argument("--allow-cpu", action="store_true", help="let --scale paper run without a GPU (hours)")
    p.add_argument("--contexts", type=int, help="contexts for the project (tiny 4, paper 16)")
    p.add_argument("--k", type=int, help="samples per context (tiny 8, paper 100)")
    p.add_argument("--reference-contexts", type=int,
                   help="the first N contexts also run through the reference "
                        "(tiny: all, paper: 4; every metric is per context or per second)")
    p.add_argument("--contexts-per-call", type=int,
                   help="contexts per project generate call: rows_per_batch = this x k (tiny: all, paper: 16)")
    p.add_argument("--tasks", default="paraphrase",
                   help="the project's tasks (default paraphrase: the reference's stage 0 makes one pair set)")
    p.add_argument("--nli-max-tokens", type=int, help="the project's NLI token budget per batch (default: config's)")
    p.add_argument("--standin-nli-pass", type=float, default=0.3,
                   help="random weights: stand-in NLI pass rate per direction (default 0.3)")
    p.add_argument("--sentence-tokens", type=float, default=25.0,
                   help="random weights: target mean first-sentence length in tokens (default 25)")
    p.add_argument("--lm-set", action="append", default=[], metavar="KEY=VALUE",
                   help="random weights: override the GPT2-XL config (e.g. n_layer=2), for quick checks")
    p.add_argument("--nli-set", action="append", default=[], metavar="KEY=VALUE",
                   help="random weights: override the RoBERTa-large config (e.g. num_hidden_layers=2)")
    p.add_argument("--threads", type=int,
                   help="torch intra-op CPU threads (tiny: 1, since models this small gain nothing from more and "
                        "oversubscribed shared cores slow them down many times; paper: torch's default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT,
                   help="folder of the JSON result (default benchmarks/results)")
    p.add_argument("--benchmarks-md", type=Path, default=DEFAULT_MD,
                   help="markdown file the table is appended to (default BENCHMARKS.md)")
    p.add_argument("--no-markdown", action="store_true", help="write the JSON only")
    p.add_argument("--quiet", action="store_true")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        result = run(args)
    except UsageError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    path = write_outputs(result, args.out, None if args.no_markdown else args.benchmarks_md)
    if not args.quiet:
        print(markdown_section(result, result["json_path"]))
        print(f"wrote {path}" + ("" if args.no_markdown else f" and appended to {args.benchmarks_md}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
