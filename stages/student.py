"""Rounds r >= 1: the previous round's student proposes candidates for held-out records.

``StudentStage`` maps contexts-stage records (``record_id, context, sentence``) to PAIRS for the
critics: for each record and task, k samples of the student from
``format_input(task, sentence)`` (the task's default control codes), each drawn with its own seed
``derive_seed(seed, "student", round, record_id, task, i)``. Sampling is row-seeded (Gumbel-max
with a hash of (row seed, step, token id), ``distill.sampling.RowSampler``) so a candidate depends on
its own seed only, never on its batch-mates, batch size or record order.

``best_paraphrase_per_source`` is the paper's selection for rounds >= 1: of the paraphrases of one
source that pass every critic, keep the most diverse one (lowest ROUGE-L); summaries are kept by
the critics alone.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import pandas as pd

from distill.config import StudentGenConfig
from distill.records import PAIR_COLUMNS, REJECT, TASKS
from distill.seeding import derive_seed
from distill.stages.train import format_input, load_student

DEFAULT_MAX_SOURCE_TOKENS = 128


def sample_seq2seq(model, tokenizer, inputs: list[str], seeds: list[int], *, max_new_tokens: int,
                   temperature: float = 1.0, top_p: float = 1.0, no_repeat_ngram_size: int = 0,
                   greedy: bool = False, max_source_tokens: int | None = None) -> list[str]:
    """One output per input of an encoder-decoder model, each sampled with its own row seed (or greedy).

    The row sampler sees the decoder's ids, whose prompt is the decoder start token (``prompt_len=1``),
    so step 0 is the first generated token.
    """
    import torch
    from transformers import LogitsProcessorList

    from distill.sampling import RowSampler

    if not inputs:
        return []
    device = next(model.parameters()).device
    enc = tokenizer(list(inputs), return_tensors="pt", padding=True, truncation=max_source_tokens is not None,
                    max_length=max_source_tokens).to(device)
    processors = LogitsProcessorList()
    if not greedy:
        row_seeds = torch.tensor([int(s) & ((1 << 63) - 1) for s in seeds], dtype=torch.int64)
        processors.append(RowSampler(row_seeds, 1, temperature, top_p))
    gc = model.generation_config
    with torch.inference_mode():
        out = model.generate(
            input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
            do_sample=False,  # greedy over Gumbel-perturbed logits = sampling with row seeds
            num_beams=1, max_new_tokens=max_new_tokens,
            no_repeat_ngram_size=no_repeat_ngram_size or None,
            logits_processor=processors,
            pad_token_id=tokenizer.pad_token_id if gc.pad_token_id is None else gc.pad_token_id,
            eos_token_id=tokenizer.eos_token_id if gc.eos_token_id is None else gc.eos_token_id,
            temperature=None, top_p=None, top_k=None,
        )
    texts = tokenizer.batch_decode(out[:, 1:], skip_special_tokens=True)
    return [" ".join(t.split()) for t in texts]


def sample_seq2seq_split_on_oom(model, tokenizer, inputs: list[str], seeds: list[int], **kw) -> list[str]:
    """``sample_seq2seq`` that halves the batch on out-of-memory and retries: no row is ever dropped."""
    from distill.sampling import split_on_oom

    # sample_seq2seq is looked up at call time, so a replaced module attribute is honoured
    return split_on_oom(functools.partial(sample_seq2seq, model, tokenizer), inputs, seeds, **kw)


def _max_source_tokens(checkpoint: str | Path) -> int:
    """The source length the student was trained with (its training_config.json), else a default."""
    path = Path(checkpoint) / "training_config.json"
    try:
        return int(json.loads(path.read_text())["train"]["max_source_tokens"])
    except (OSError, KeyError, ValueError, TypeError):
        return DEFAULT_MAX_SOURCE_TOKENS


class StudentStage:
    """Samples k candidates per (record, task) from a trained student; returns pairs for the critics."""

    def __init__(self, checkpoint: str | Path, gen: StudentGenConfig, *, seed: int, round_: int,
                 device: str = "auto", tasks: tuple[str, ...] = TASKS, dtype: str = "auto",
                 max_sentences_per_passage: int | None = None, generator: str | None = None):
        from distill.runtime import pick_device

        unknown = [t for t in tasks if t not in TASKS]
        if unknown:
            raise ValueError(f"unknown task(s) {unknown}; known: {', '.join(TASKS)}")
        self.checkpoint, self.gen, self.seed, self.round = str(checkpoint), gen, int(seed), int(round_)
        self.tasks = tuple(tasks)
        self.per_passage = max_sentences_per_passage  # the same records as the teacher's rounds would take
        self.generator = generator or self.checkpoint  # the name recorded in each pair's lineage
        self.max_source_tokens = _max_source_tokens(checkpoint)
        self.model, self.tokenizer = load_student(checkpoint, device=pick_device(device), dtype=dtype)
        self.model.eval()

    def row_seed(self, record_id: str, task: str, i: int) -> int:
        return derive_seed(self.seed, "student", self.round, record_id, task, i)

    def __call__(self, records: pd.DataFrame) -> pd.DataFrame:
        g = self.gen
        if "passage_id" in records.columns:
            from distill.stages.candidates import select_records

            records = select_records(records, self.per_passage)
        recs = list(records[["record_id", "context", "sentence"]].astype(str).itertuples(index=False, name=None))
        inputs = {(rid, task): format_input(task, sent) for rid, _, sent in recs for task in self.tasks}
        # one job per (record, task, sample); sorted by input length so a batch pads little
        jobs = sorted(((rid, task, i) for rid, task in inputs for i in range(g.k)),
                      key=lambda j: (len(inputs[j[:2]]), j))
        texts: dict[tuple[str, str, int], str] = {}
        for start in range(0, len(jobs), g.rows_per_batch):
            chunk = jobs[start:start + g.rows_per_batch]
            outs = sample_seq2seq_split_on_oom(
                self.model, self.tokenizer, [inputs[j[:2]] for j in chunk],
                [self.row_seed(*j) for j in chunk], max_new_tokens=g.max_new_tokens, temperature=g.temperature,
                top_p=g.top_p, no_repeat_ngram_size=g.no_repeat_ngram_size, max_source_tokens=self.max_source_tokens)
            texts.update(zip(chunk, outs))
        rows = []
        for rid, context, sentence in recs:
            for task in self.tasks:
                seen: set[str] = set()
                for i in range(g.k):
                    cand = texts[(rid, task, i)].strip()
                    if not cand or cand in seen:
                        continue  # empty, or the same string as an earlier sample of this record and task
                    seen.add(cand)
                    rows.append((f"{rid}:{task}:r{self.round}-{i}", rid, task, sentence, cand, -1, i, context,
                                 self.round, self.generator))
        out = pd.DataFrame(rows, columns=PAIR_COLUMNS)
        return out.astype({"source_idx": "int64", "target_idx": "int64", "round": "int64"})


def generate(checkpoint: str | Path, task: str, text: str, *, n: int = 1, length: int | None = None,
             diversity: int | None = None, seed: int = 0, greedy: bool = False,
             gen: StudentGenConfig | None = None, device: str = "auto") -> list[str]:
    """The student's outputs for one text (the ``distill generate`` command).

    ``n`` samples, sample i with seed ``derive_seed(seed, "generate", i)``, with ``gen``'s top-p,
    temperature, no-repeat n-gram size and length limit (default: ``StudentGenConfig()``);
    ``greedy=True`` returns the single greedy output. ``length`` / ``diversity`` are the control codes
    (``distill.stages.train``; None = the task's default).
    """
    from distill.runtime import pick_device

    gen = gen or StudentGenConfig()
    model, tok = load_student(checkpoint, device=pick_device(device))
    model.eval()
    prompt = format_input(task, text, length, diversity)
    count = 1 if greedy else max(1, int(n))
    return sample_seq2seq_split_on_oom(
        model, tok, [prompt] * count, [derive_seed(seed, "generate", i) for i in range(count)],
        max_new_tokens=gen.max_new_tokens, temperature=gen.temperature, top_p=gen.top_p,
        no_repeat_ngram_size=gen.no_repeat_ngram_size, greedy=greedy,
        max_source_tokens=_max_source_tokens(checkpoint))


def best_paraphrase_per_source(pairs_with_reject: pd.DataFrame) -> pd.DataFrame:
    """The survivors (``reject == ""``) to keep: per source (record_id, source), the paraphrase with the
    lowest ``diversity_rougeL`` (ties: the smallest pair_id); every surviving summary. Input row order."""
    df = pairs_with_reject
    if REJECT not in df.columns:
        raise KeyError(f"pairs lack the {REJECT!r} column: run the critics first")
    alive = (df[REJECT].astype(str) == "").to_numpy()
    para = alive & (df["task"] == "paraphrase").to_numpy()
    keep = alive & ~para
    if para.any():
        if "diversity_rougeL" not in df.columns:
            raise KeyError("pairs lack the diversity_rougeL column (the diversity critic's score)")
        sub = pd.DataFrame({"pos": np.flatnonzero(para), "record_id": df["record_id"].astype(str).to_numpy()[para],
                            "source": df["source"].astype(str).to_numpy()[para],
                            "rouge": df["diversity_rougeL"].astype(float).fillna(np.inf).to_numpy()[para],
                            "pair_id": df["pair_id"].astype(str).to_numpy()[para]})
        best = sub.sort_values(["rouge", "pair_id"], kind="stable").drop_duplicates(["record_id", "source"])
        keep[best["pos"].to_numpy()] = True
    return df[keep]
