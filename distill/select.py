"""Selection: thresholds on stored scores -> the corpus and its funnel. No model is loaded.

``distill run`` ends with it; ``distill select RUN --set critique.nli.threshold=0.9`` re-runs it on
a finished run with other thresholds.
"""

from __future__ import annotations

import json
import time

import pandas as pd

from distill.config import RunConfig
from distill.filters.chain import funnel, merge_funnels
from distill.store import RunDir, atomic_write_text

CORPUS_COLUMNS = ["id", "task", "source", "target", "context", "round", "length_ratio", "numbers_match",
                  "diversity_rougeL", "nli_forward", "nli_reverse", "generator", "critic", "seed"]


def corpus_rows(pairs: pd.DataFrame, seed: int) -> pd.DataFrame:
    kept = pairs[pairs["reject"].eq("")]
    out = pd.DataFrame({
        "id": kept["pair_id"], "task": kept["task"], "source": kept["source"], "target": kept["target"],
        "context": kept["context"], "round": kept["round"].astype("int64"),
    })
    for col in ("length_ratio", "numbers_match", "diversity_rougeL", "nli_forward", "nli_reverse"):
        out[col] = kept[col].astype("float64") if col in kept else float("nan")
    out["generator"] = kept["generator"]
    out["critic"] = kept["critic"]
    out["seed"] = seed
    return out[CORPUS_COLUMNS].reset_index(drop=True)


def most_diverse_per_source(pairs: pd.DataFrame) -> pd.Series:
    """Rounds r >= 1 (paper): of one source's surviving paraphrases keep the lowest ROUGE-L; the others
    are rejected as ``diversity_not_most_diverse``. Summaries are kept by their critics alone."""
    from distill.stages.student import best_paraphrase_per_source

    reject = pairs["reject"].copy()
    keep = best_paraphrase_per_source(pairs).index
    reject[(reject == "") & ~pairs.index.isin(keep)] = "diversity_not_most_diverse"
    return reject


def select_round(run: RunDir, cfg: RunConfig, round_: int, shards: list[str]) -> dict:
    """Re-decides every critique shard under ``cfg.critique``; writes corpus/<task>/ shards and funnel.json."""
    from distill.runner import critique_config
    from distill.stages.critique import reselect

    critique = run.stage(round_, "critique")
    candidates = run.stage(round_, "candidates" if round_ == 0 else "student_pairs")
    funnels = []
    counts = {task: 0 for task in cfg.tasks}
    for name in shards:
        pairs = critique.read(name)
        pairs["reject"] = reselect(pairs, critique_config(cfg, round_)).to_numpy()
        if round_ > 0:
            pairs["reject"] = most_diverse_per_source(pairs)
        funnels.append(funnel(pairs))
        rows = corpus_rows(pairs, cfg.seed)
        for task in cfg.tasks:
            part = rows[rows["task"].eq(task)]
            run.stage(round_, f"corpus/{task}").write(name, part, critique.entry(name)["sha256"])
            counts[task] += len(part)
    merged = merge_funnels(funnels) if funnels else {}
    cand_rows = sum((candidates.entry(n) or {}).get("rows", 0) for n in shards)
    summary = {
        "round": round_,
        "shards": len(shards),
        "records": sum((run.stage(round_, "contexts").entry(n) or {}).get("rows", 0) for n in shards),
        "candidates" if round_ == 0 else "student_pairs": cand_rows,
        "tasks": merged,
        "kept": counts,
        "thresholds": cfg.critique.model_dump(mode="json", exclude={"resources"}),
        "selected_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    atomic_write_text(run.path / f"round-{round_}" / "funnel.json", json.dumps(summary, indent=2, sort_keys=True))
    return summary
