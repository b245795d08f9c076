"""Step 2: k continuations of each record's context; the first complete sentence of each is a candidate."""

from __future__ import annotations

import pandas as pd

from distill.config import RunConfig
from distill.records import CANDIDATE_COLUMNS
from distill.seeding import derive_seed
from distill.text import first_sentence, has_complete_first_sentence


def select_records(records: pd.DataFrame, per_passage: int | None) -> pd.DataFrame:
    """The records that get candidates: a non-empty context (paper), and at most ``per_passage`` of each
    passage (counted per passage, so re-sharding keeps the same records)."""
    records = records[records["context"].str.len() > 0]
    if per_passage is not None:
        records = records[records.groupby("passage_id").cumcount() < per_passage]
    return records


def prompt_of(prefix: str, context: str) -> str:
    return f"{prefix} {context}".strip()


class CandidatesStage:
    """Samples k continuations per record (batched across contexts) and keeps the distinct first sentences."""

    def __init__(self, cfg: RunConfig, generator: str | None = None):
        from distill.models import load_causal_lm, newline_token_ids
        from distill.runtime import pick_device

        self.cfg = cfg
        t = cfg.teacher
        self.generator = generator or t.model
        self.model, self.tokenizer = load_causal_lm(t.model, device=pick_device(t.device), dtype=t.dtype,
                                                    trust_remote_code=t.trust_remote_code)
        self.banned = newline_token_ids(self.tokenizer)

    def __call__(self, records: pd.DataFrame) -> pd.DataFrame:
        from distill.sampling import sample_split_on_oom

        c = self.cfg.candidates
        records = select_records(records, c.max_sentences_per_passage)
        # one row per (record, sample); sorted by prompt length so a batch pads little
        prompts = {r.record_id: prompt_of(r.prefix, r.context) for r in records.itertuples(index=False)}
        order = sorted(prompts, key=lambda rid: (len(prompts[rid]), rid))
        jobs = [(rid, i) for rid in order for i in range(c.k)]
        texts: dict[tuple[str, int], str] = {}
        for start in range(0, len(jobs), c.rows_per_batch):
            chunk = jobs[start:start + c.rows_per_batch]
            outs = sample_split_on_oom(
                self.model, self.tokenizer, [prompts[rid] for rid, _ in chunk],
                [derive_seed(self.cfg.seed, "candidate", rid, i) for rid, i in chunk],
                max_new_tokens=c.max_new_tokens, temperature=c.temperature, top_p=c.top_p,
                no_repeat_ngram_size=c.no_repeat_ngram_size, banned_ids=self.banned,
                stop=has_complete_first_sentence if c.stop_at_sentence else None)
            texts.update(zip(chunk, outs))
        rows = []
        for r in records.itertuples(index=False):
            seen: set[str] = set()
            for i in range(c.k):
                sent = first_sentence(texts[(r.record_id, i)])
                if sent is None or sent in seen:
                    continue  # incomplete, or the same string as an earlier sample: pairs need distinct candidates
                seen.add(sent)
                rows.append({"record_id": r.record_id, "prefix": r.prefix, "context": r.context, "candidate_idx": i,
                             "candidate": sent, "seed": derive_seed(self.cfg.seed, "candidate", r.record_id, i),
                             "generator": self.generator})
        return pd.DataFrame(rows, columns=CANDIDATE_COLUMNS)
