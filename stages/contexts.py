"""Step 1: domain prefixes -> teacher passages -> one record per complete sentence."""

from __future__ import annotations

import random

import pandas as pd

from distill.config import RunConfig
from distill.records import CONTEXT_COLUMNS
from distill.seeding import derive_seed
from distill.text import is_complete, split_sentences
from distill.tiny import load_outlets, load_places

BIO_PREFIXES = ("Abstract:", "Introduction:", "Method:", "Conclusion:")  # paper, bio domain


def news_prefix(rng: random.Random) -> str:
    """The paper's news prefixes: ``(<outlet>) --`` 50%, ``<COUNTRY> (<outlet>) --`` 25%, ``<CITY>, <COUNTRY> (<outlet>) --`` 25%."""
    outlet = rng.choice(load_outlets())
    city, country = rng.choice(load_places())
    r = rng.random()
    if r < 0.5:
        return f"({outlet}) --"
    if r < 0.75:
        return f"{country.upper()} ({outlet}) --"
    return f"{city.upper()}, {country} ({outlet}) --"


def prefix_table(cfg: RunConfig, shard: int, round_: int = 0) -> pd.DataFrame:
    """The passages of contexts shard ``shard`` of round ``round_``: id, prefix and sampling seed, all
    derived from the passage index. Round r uses passages [r n, (r+1) n): held out from other rounds."""
    n, per = cfg.contexts.n_passages, cfg.contexts.passages_per_shard
    base = round_ * n
    rows = []
    for idx in range(base + shard * per, base + min(n, (shard + 1) * per)):
        passage_id = f"p{idx:07d}"
        rng = random.Random(derive_seed(cfg.seed, "prefix", passage_id))
        prefix = news_prefix(rng) if cfg.domain == "news" else rng.choice(BIO_PREFIXES)
        rows.append({"passage_id": passage_id, "prefix": prefix, "seed": derive_seed(cfg.seed, "passage", passage_id)})
    return pd.DataFrame(rows, columns=["passage_id", "prefix", "seed"])


def n_context_shards(cfg: RunConfig) -> int:
    return -(-cfg.contexts.n_passages // cfg.contexts.passages_per_shard)


def passage_records(passage_id: str, prefix: str, seed: int, text: str) -> list[dict]:
    """Each complete sentence of a passage, with the sentences before it as its context."""
    out = []
    sents = split_sentences(text)
    for j, sent in enumerate(sents):
        if not is_complete(sent):
            break  # the passage was cut here; what follows is not a sentence of it
        out.append({"record_id": f"{passage_id}-s{j:02d}", "passage_id": passage_id, "prefix": prefix,
                    "context": " ".join(sents[:j]), "sentence": sent, "seed": seed})
    return out


class ContextsStage:
    """Samples one teacher passage per prefix row and splits it into sentence records."""

    def __init__(self, cfg: RunConfig):
        from distill.models import load_causal_lm, newline_token_ids
        from distill.runtime import pick_device

        self.cfg = cfg
        t = cfg.teacher
        self.model, self.tokenizer = load_causal_lm(t.model, device=pick_device(t.device), dtype=t.dtype,
                                                    trust_remote_code=t.trust_remote_code)
        self.banned = newline_token_ids(self.tokenizer)  # paper: newlines banned

    def __call__(self, prefixes: pd.DataFrame) -> pd.DataFrame:
        from distill.sampling import sample_split_on_oom

        c = self.cfg.contexts
        rows: list[dict] = []
        for start in range(0, len(prefixes), c.batch_size):
            chunk = prefixes.iloc[start:start + c.batch_size]
            texts = sample_split_on_oom(
                self.model, self.tokenizer, chunk["prefix"].tolist(), chunk["seed"].tolist(),
                max_new_tokens=c.max_new_tokens, temperature=c.temperature, top_p=c.top_p,
                banned_ids=self.banned)
            for p, text in zip(chunk.itertuples(index=False), texts):
                rows.extend(passage_records(p.passage_id, p.prefix, int(p.seed), text))
        return pd.DataFrame(rows, columns=CONTEXT_COLUMNS)
