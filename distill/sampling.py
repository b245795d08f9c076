"""Batched sampling whose random numbers belong to each row, not to the batch.

``generate(do_sample=True)`` draws from one global generator, so a sample depends on which other
rows share its batch: re-batching, re-sharding or resuming would change the corpus. We sample with
the Gumbel-max trick instead: temperature and top-p as usual, then the argmax of
``logits + Gumbel(u)`` where ``u`` is a counter-based hash of (row seed, step, token id). That is an
exact sample from the top-p distribution, and it depends on nothing but the row's own seed.

The rest is the teacher's decoding: newline tokens banned, ``no_repeat_ngram_size`` from
transformers' own processor, and a stopping rule that ends a row once its first sentence is complete.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch

_M32 = 0xFFFFFFFF


def _fmix32(h: torch.Tensor) -> torch.Tensor:
    """MurmurHash3's finaliser on int64 tensors holding 32-bit values (products wrap; we keep the low 32 bits)."""
    h = h & _M32
    h = h ^ (h >> 16)
    h = (h * 0x85EBCA6B) & _M32
    h = h ^ (h >> 13)
    h = (h * 0xC2B2AE35) & _M32
    return h ^ (h >> 16)


def hash_uniform(row_seeds: torch.Tensor, step: int, vocab: int) -> torch.Tensor:
    """(B, V) uniforms in (0, 1), a pure function of (row seed, step, token id)."""
    seeds = row_seeds.to(torch.int64)
    key = _fmix32(_fmix32(seeds & _M32) ^ _fmix32((seeds >> 32) & _M32) ^ ((step * 0x9E3779B1) & _M32))
    ids = torch.arange(vocab, device=seeds.device, dtype=torch.int64)
    h = _fmix32(key[:, None] ^ _fmix32(ids * 0x27D4EB2F + 0x165667B1)[None, :])
    return ((h >> 8).to(torch.float64) + 0.5).div_(1 << 24).to(torch.float32)  # 24 bits: exact in float32


class RowSampler:
    """A logits processor: temperature, top-p, banned ids, then Gumbel noise from each row's own seed."""

    def __init__(self, row_seeds: torch.Tensor, prompt_len: int, temperature: float, top_p: float,
                 banned_ids: list[int] | None = None):
        self.row_seeds = row_seeds
        self.prompt_len = prompt_len
        self.temperature = temperature
        self.top_p = top_p
        self.banned = torch.tensor(sorted(set(banned_ids or [])), dtype=torch.long)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        step = input_ids.shape[1] - self.prompt_len
        logits = scores.float() / self.temperature  # (B, V)
        if len(self.banned):
            logits[:, self.banned.to(logits.device)] = -float("inf")
        if self.top_p < 1.0:
            sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
            cum = sorted_logits.softmax(-1).cumsum(-1)
            drop_sorted = (cum - sorted_logits.softmax(-1)) >= self.top_p  # keep the smallest set reaching top_p
            drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
            logits = logits.masked_fill(drop, -float("inf"))
        u = hash_uniform(self.row_seeds.to(logits.device), step, logits.shape[-1])
        return logits - torch.log(-torch.log(u))  # argmax of this is a sample


class SentenceStop:
    """Stopping criterion: a row is done once its new text holds a complete first sentence and more."""

    def __init__(self, tokenizer, prompt_len: int, done: Callable[[str], bool]):
        self.tokenizer = tokenizer
        self.prompt_len = prompt_len
        self.done_fn = done
        self.ends = None  # token ids whose text ends like a sentence end (cheap pre-check)

    def _end_like(self, device) -> torch.Tensor:
        if self.ends is None:
            vocab = self.tokenizer.convert_ids_to_tokens(list(range(len(self.tokenizer))))
            flags = []
            for i, tok in enumerate(vocab):
                text = self.tokenizer.convert_tokens_to_string([tok]) if tok is not None else ""
                flags.append(any(c in text for c in ".!?"))
            self.ends = torch.tensor(flags, dtype=torch.bool)
        return self.ends.to(device)

    def __call__(self, input_ids: torch.LongTensor, scores=None, **kwargs) -> torch.BoolTensor:
        new = input_ids[:, self.prompt_len:]
        out = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        if new.shape[1] < 2:
            return out
        ends = self._end_like(input_ids.device)
        # a sentence end in the previous token is needed before the next sentence can have started
        candidates = torch.nonzero(ends[new[:, -2].clamp(max=len(ends) - 1)]).flatten().tolist()
        for i in candidates:
            text = self.tokenizer.decode(new[i], skip_special_tokens=True)
            out[i] = bool(self.done_fn(text))
        return out


def is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.cuda.OutOfMemoryError) or (
        isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower())


def sample(model, tokenizer, prompts: list[str], row_seeds: list[int], *, max_new_tokens: int,
           temperature: float, top_p: float, no_repeat_ngram_size: int = 0, banned_ids: list[int] | None = None,
           stop: Callable[[str], bool] | None = None) -> list[str]:
    """One continuation per prompt (the text after the prompt), each drawn with its own seed."""
    from transformers import LogitsProcessorList, StoppingCriteriaList

    device = next(model.parameters()).device
    enc = tokenizer(prompts, return_tensors="pt", padding=True).to(device)
    prompt_len = enc["input_ids"].shape[1]
    seeds = torch.tensor([s & ((1 << 63) - 1) for s in row_seeds], dtype=torch.int64)
    processors = LogitsProcessorList([RowSampler(seeds, prompt_len, temperature, top_p, banned_ids)])
    criteria = StoppingCriteriaList([SentenceStop(tokenizer, prompt_len, stop)] if stop else [])
    with torch.inference_mode():
        out = model.generate(
            **enc,
            do_sample=False,  # greedy over Gumbel-perturbed logits = sampling with row seeds
            num_beams=1,
            max_new_tokens=max_new_tokens,
            no_repeat_ngram_size=no_repeat_ngram_size or None,
            logits_processor=processors,
            stopping_criteria=criteria,
            pad_token_id=tokenizer.pad_token_id,
            temperature=None, top_p=None, top_k=None,
        )
    return tokenizer.batch_decode(out[:, prompt_len:], skip_special_tokens=True)


def split_on_oom(fn: Callable[..., list], rows: list, seeds: list, **kw) -> list:
    """``fn(rows, seeds, **kw)`` (one output per row); on out-of-memory it halves the batch and retries
    each half, down to single rows: no row is ever dropped."""
    try:
        return fn(rows, seeds, **kw)
    except Exception as exc:  # noqa: BLE001 - only OOM is handled
        if not is_oom(exc) or len(rows) <= 1:
            raise
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        mid = len(rows) // 2
        return split_on_oom(fn, rows[:mid], seeds[:mid], **kw) + split_on_oom(fn, rows[mid:], seeds[mid:], **kw)


def sample_split_on_oom(model, tokenizer, prompts: list[str], row_seeds: list[int], **kw) -> list[str]:
    """``sample`` that halves the batch on out-of-memory and retries: no row is ever dropped."""
    return split_on_oom(functools.partial(sample, model, tokenizer), prompts, row_seeds, **kw)
