"""``distill report RUN``: corpus quality per round and task, as the paper's Table 1 measures it.

Writes into ``<run>/report/`` (or ``out_dir``):

    report.json            every number below, per round and task (NaN is written as null)
    report.md              the tables (the paper's Table 1 rows beside the run's), the funnel, the figures
    figures/round-<r>-funnel.png          pairs left after each critic, per task
    figures/round-<r>-<score>.png         histogram of each critic score (all scored pairs) with its threshold(s)
    figures/round-<r>-lengths.png         target length (tokens) and compression ratio (characters) of kept pairs

The measures are defined in :mod:`distill.quality`. The run folder is read, never changed (except
the report folder inside it). The helpers that read a run folder (``check_run``, ``read_corpus``)
are shared with :mod:`distill.export`.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from distill import quality as Q
from distill.config import ConfigError, RunConfig, dump, load_config
from distill.store import RunDir, StageDir, atomic_write_text, shard_name

TASK_ORDER = ("paraphrase", "summary")
SCORE_COLUMNS = ("length_ratio", "diversity_rougeL", "nli_forward", "nli_reverse")
REPORT_VERSION = 1

# ------------------------------------------------------------------------------------------------
# reading a run folder


def _expected_round0_shards(cfg: RunConfig) -> int:
    try:  # the runner's own count, when its module imports
        from distill.stages.contexts import n_context_shards

        return int(n_context_shards(cfg))
    except Exception:  # noqa: BLE001 - same formula, if that module is unavailable
        return -(-cfg.contexts.n_passages // cfg.contexts.passages_per_shard)


def verified_shards(stage: StageDir) -> list[str]:
    """Shards recorded in the stage's manifest whose file has the recorded size and sha256."""
    return [s for s in stage.done_shards() if stage.is_done(s)]


def load_run_config(run_dir: str | Path) -> RunConfig:
    path = Path(run_dir)
    if not path.is_dir():
        raise ConfigError(f"{run_dir}: no such run folder")
    if not (path / "config.yaml").is_file():
        raise ConfigError(f"{run_dir}: config.yaml is missing, not a run folder; run 'distill run' first")
    return load_config(path / "config.yaml")


def check_run(run_dir: str | Path, *, strict: bool = True) -> tuple[RunConfig, dict[int, list[str]]]:
    """The run's config and, per round, the shard names whose corpus can be read.

    Raises ConfigError naming the first missing round/stage. Every round needs finished critique
    shards, its funnel.json, and for every task a corpus shard for each critique shard. ``strict``
    (export) also requires every shard the round's other stages (and, in round 0, the config) call
    for; without it (report) a run whose failed shards were skipped is reported as it is.
    """
    cfg = load_run_config(run_dir)
    run = RunDir(run_dir)
    rounds = run.rounds()
    if not rounds:
        raise ConfigError(f"{run_dir}: no round-* folder; run 'distill run' first")
    out: dict[int, list[str]] = {}
    for r in rounds:
        rd = f"round-{r}"
        critique = run.stage(r, "critique")
        done = verified_shards(critique)
        if not done:
            raise ConfigError(f"{run_dir}: {rd}/critique has no finished shards; run 'distill run' first")
        if strict:
            expected: set[str] = set()
            if r == 0:
                expected |= {shard_name(i) for i in range(_expected_round0_shards(cfg))}
            for sub in sorted((run.path / rd).iterdir()):
                if sub.is_dir() and sub.name != "corpus" and (sub / "_manifest.json").is_file():
                    expected |= set(StageDir(sub).done_shards())
            missing = sorted(expected - set(done))
            if missing:
                raise ConfigError(f"{run_dir}: {rd}/critique has {len(done)} of {len(expected)} shards finished "
                                  f"(missing {_names(missing)}); run 'distill run' first")
        if not (run.path / rd / "funnel.json").is_file():
            raise ConfigError(f"{run_dir}: {rd}/funnel.json is missing; run 'distill select {run_dir}' first")
        for task in cfg.tasks:
            cdone = verified_shards(run.stage(r, f"corpus/{task}"))
            if not cdone:
                raise ConfigError(f"{run_dir}: {rd}/corpus/{task} has no finished shards; run 'distill run' first")
            missing = sorted(set(done) - set(cdone))
            if missing:
                raise ConfigError(f"{run_dir}: {rd}/corpus/{task} lacks finished shards {_names(missing)} that "
                                  f"{rd}/critique has; run 'distill select {run_dir}' first")
        out[r] = sorted(done)
    return cfg, out


def _names(names: list[str], limit: int = 5) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _read_shards(stage: StageDir, shards: list[str], columns: list[str] | None = None) -> pd.DataFrame:
    frames = []
    for s in shards:
        path = stage.shard_path(s)
        if columns is not None:
            present = set(pq.read_schema(path).names)
            table = pq.read_table(path, columns=[c for c in columns if c in present])
        else:
            table = pq.read_table(path)
        frames.append(table.to_pandas())
    if not frames:
        return pd.DataFrame(columns=columns or [])
    return pd.concat(frames, ignore_index=True)


def read_corpus(run_dir: str | Path, round_: int, task: str, shards: list[str]) -> pd.DataFrame:
    return _read_shards(RunDir(run_dir).stage(round_, f"corpus/{task}"), shards)


def read_critique(run_dir: str | Path, round_: int, shards: list[str], columns: list[str] | None = None) -> pd.DataFrame:
    return _read_shards(RunDir(run_dir).stage(round_, "critique"), shards, columns)


def read_funnel(run_dir: str | Path, round_: int) -> dict:
    path = Path(run_dir) / f"round-{round_}" / "funnel.json"
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{run_dir}: round-{round_}/funnel.json cannot be read ({type(exc).__name__})") from None


def run_fingerprint(run_dir: str | Path, cfg: RunConfig, shards: dict[int, list[str]]) -> str:
    """sha256 over the config, each round's funnel.json and the sha256 of every shard the report reads."""
    run = RunDir(run_dir)
    h = hashlib.sha256(dump(cfg).encode())
    for r, names in sorted(shards.items()):
        h.update((Path(run_dir) / f"round-{r}" / "funnel.json").read_bytes())
        for stage in ["critique"] + [f"corpus/{t}" for t in cfg.tasks]:
            sdir = run.stage(r, stage)
            for s in names:
                h.update(f"{r}/{stage}/{s}:{(sdir.entry(s) or {}).get('sha256')}".encode())
    return h.hexdigest()


# ------------------------------------------------------------------------------------------------
# measures


def task_quality(corpus: pd.DataFrame, *, embedder=None, cosine_samples: int | None = 20000,
                 self_bleu_samples: int | None = 500, segment_size: int = 50, seed: int = 0) -> dict:
    """All measures of one task's kept pairs (``source``, ``target`` columns)."""
    sources = corpus["source"].astype(str).tolist() if len(corpus) else []
    targets = corpus["target"].astype(str).tolist() if len(corpus) else []
    idx = Q.sample_indices(len(sources), cosine_samples, seed)
    if embedder is None:
        cosine, cosine_n = float("nan"), 0
    else:
        cosine = Q.embedding_cosine([sources[i] for i in idx], [targets[i] for i in idx], embedder)
        cosine_n = int(len(idx))
    return {
        "pairs": int(len(corpus)),
        "cosine": cosine,
        "cosine_n": cosine_n,
        "H2": Q.ngram_entropy(targets, 2),
        "H3": Q.ngram_entropy(targets, 3),
        "msttr": Q.msttr(targets, segment_size),
        "jaccard": Q.jaccard(sources, targets),
        "self_bleu": Q.self_bleu(targets, self_bleu_samples, seed),
        "self_bleu_n": int(min(len(targets), self_bleu_samples or len(targets))),
        "source_tokens": Q.distribution(Q.token_lengths(sources)),
        "target_tokens": Q.distribution(Q.token_lengths(targets)),
        "compression": Q.distribution(Q.compression_ratios(sources, targets)),
    }


def _funnel_from_reasons(critique: pd.DataFrame) -> dict:
    """A funnel from the critique shards' ``reject`` column (when funnel.json has no task entries)."""
    out = {}
    for task, group in critique.groupby("task", sort=True):
        reasons = group["reject"].fillna("").astype(str)
        removed = {c: 0 for c in Q.CRITIC_ORDER}
        for reason, n in reasons[reasons != ""].value_counts().items():
            critic = next((c for c in sorted(Q.CRITIC_ORDER, key=len, reverse=True) if reason.startswith(c + "_")),
                          "other")
            removed[critic] = removed.get(critic, 0) + int(n)
        out[str(task)] = {"pairs_in": int(len(reasons)), "removed": removed, "kept": int((reasons == "").sum())}
    return out


def _thresholds(funnel: dict, cfg: RunConfig) -> dict:
    th = funnel.get("thresholds") or cfg.critique.model_dump(mode="json", exclude={"resources"})
    length = th.get("length", {})
    return {
        "length_ratio": {"paraphrase": [length.get("paraphrase_min"), length.get("paraphrase_max")],
                         "summary": [length.get("summary_max")]},
        "diversity_rougeL": {"paraphrase": [th.get("diversity", {}).get("max_rougeL")]},
        "nli_forward": {t: [th.get("nli", {}).get("threshold")] for t in TASK_ORDER},
        "nli_reverse": {t: [th.get("nli", {}).get("threshold")] for t in TASK_ORDER},
    }


# ------------------------------------------------------------------------------------------------
# figures (matplotlib's object API with the Agg canvas: no pyplot, no global backend change)


def _figure(n_axes: int, width: float = 5.0):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * max(n_axes, 1), 3.6), layout="constrained")
    FigureCanvasAgg(fig)
    axes = [fig.add_subplot(1, max(n_axes, 1), i + 1) for i in range(max(n_axes, 1))]
    return fig, axes


def plot_score_histograms(critique: pd.DataFrame, column: str, thresholds: dict, path: Path, title: str) -> bool:
    """One panel per task with scores; thresholds as dashed vertical lines. False if nothing to plot."""
    if column not in critique.columns:
        return False
    panels = []
    for task in TASK_ORDER:
        v = pd.to_numeric(critique.loc[critique["task"].eq(task), column], errors="coerce").to_numpy(dtype=float)
        v = v[np.isfinite(v)]
        if v.size:
            panels.append((task, v))
    if not panels:
        return False
    fig, axes = _figure(len(panels))
    for ax, (task, v) in zip(axes, panels):
        ax.hist(v, bins=40, color="#4C72B0", alpha=0.85)
        for x in thresholds.get(task, []):
            if x is not None:
                ax.axvline(float(x), color="#C44E52", linestyle="--", linewidth=1.5, label=f"threshold {x:g}")
        ax.set_title(f"{task} (n={v.size})")
        ax.set_xlabel(column)
        ax.set_ylabel("pairs")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.savefig(path, dpi=100)
    return True


def funnel_steps(entry: dict) -> list[tuple[str, int]]:
    """[("pairs in", n), ("after length", n), ..., ("kept", n)] for one task of a funnel."""
    steps = [("pairs in", int(entry.get("pairs_in", 0)))]
    left = steps[0][1]
    removed = entry.get("removed", {}) or {}
    for critic in Q.ordered_critics(removed):
        left -= int(removed[critic])
        steps.append((f"after {critic}", left))
    steps.append(("kept", int(entry.get("kept", left))))
    return steps


def plot_funnel(tasks: dict, path: Path, title: str) -> bool:
    names = [t for t in TASK_ORDER if t in tasks] + sorted(t for t in tasks if t not in TASK_ORDER)
    if not names:
        return False
    fig, axes = _figure(1, width=8.0)
    ax = axes[0]
    labels = [s for s, _ in funnel_steps(tasks[names[0]])]
    width = 0.8 / len(names)
    for k, task in enumerate(names):
        values = [n for _, n in funnel_steps(tasks[task])]
        xs = np.arange(len(values)) + k * width
        bars = ax.bar(xs, values, width=width, label=task)
        ax.bar_label(bars, fontsize=7)
    ax.set_xticks(np.arange(len(labels)) + width * (len(names) - 1) / 2, labels, rotation=20)
    ax.set_ylabel("pairs")
    ax.legend()
    fig.suptitle(title)
    fig.savefig(path, dpi=100)
    return True


def plot_lengths(corpora: dict[str, pd.DataFrame], path: Path, title: str) -> bool:
    data = {t: df for t, df in corpora.items() if len(df)}
    if not data:
        return False
    fig, axes = _figure(2)
    for task, df in data.items():
        axes[0].hist(Q.token_lengths(df["target"].astype(str)), bins=30, alpha=0.6, label=task)
        ratios = Q.compression_ratios(df["source"].astype(str).tolist(), df["target"].astype(str).tolist())
        axes[1].hist(ratios[np.isfinite(ratios)], bins=30, alpha=0.6, label=task)
    axes[0].set_xlabel("target length (tokens)")
    axes[1].set_xlabel("compression ratio len(target)/len(source) (characters)")
    for ax in axes:
        ax.set_ylabel("pairs")
        ax.legend()
    fig.suptitle(title)
    fig.savefig(path, dpi=100)
    return True


# ------------------------------------------------------------------------------------------------
# markdown


def _fmt(x, digits: int = 2) -> str:
    if x is None or (isinstance(x, float) and not np.isfinite(x)):
        return "n/a"
    if isinstance(x, (int, np.integer)):
        return f"{int(x):,}"
    return f"{float(x):.{digits}f}"


def table1_markdown(report: dict) -> str:
    """The run's Table 1 measures per round and task, with the paper's rows beside them."""
    lines = ["| corpus | pairs | Cos | H2 | H3 | MSTTR | Jaccard |", "|---|---:|---:|---:|---:|---:|---:|"]
    for r, rnd in report["rounds"].items():
        for task, q in rnd["tasks"].items():
            lines.append(f"| this run, round {r}, {task} | {_fmt(q['pairs'])} | {_fmt(q['cosine'])} | {_fmt(q['H2'])} "
                         f"| {_fmt(q['H3'])} | {_fmt(q['msttr'])} | {_fmt(q['jaccard'])} |")
    for name, row in Q.PAPER_TABLE1.items():
        lines.append(f"| paper's figure (Jung et al. 2024, Table 1): {name} | | {_fmt(row['cosine'])} | "
                     f"{_fmt(row['H2'])} | {_fmt(row['H3'])} | {_fmt(row['msttr'])} | {_fmt(row['jaccard'])} |")
    return "\n".join(lines)


def extra_markdown(report: dict) -> str:
    lines = ["| round | task | self-BLEU (n) | target tokens mean / p10 / p50 / p90 | "
             "compression mean / p10 / p50 / p90 |", "|---|---|---:|---|---|"]
    for r, rnd in report["rounds"].items():
        for task, q in rnd["tasks"].items():
            t, c = q["target_tokens"], q["compression"]
            lines.append(f"| {r} | {task} | {_fmt(q['self_bleu'])} ({q['self_bleu_n']}) | "
                         f"{_fmt(t['mean'], 1)} / {_fmt(t['p10'], 1)} / {_fmt(t['p50'], 1)} / {_fmt(t['p90'], 1)} | "
                         f"{_fmt(c['mean'])} / {_fmt(c['p10'])} / {_fmt(c['p50'])} / {_fmt(c['p90'])} |")
    return "\n".join(lines)


def funnel_markdown(funnel: dict) -> str:
    """One round's funnel: pairs in, removed by each critic, kept, per task."""
    tasks = funnel.get("tasks", {}) or {}
    critics = Q.ordered_critics(c for e in tasks.values() for c in (e.get("removed") or {}))
    head = "| task | pairs in | " + " | ".join(f"removed by {c}" for c in critics) + " | kept | kept % |"
    lines = [head, "|---|" + "---:|" * (len(critics) + 3)]
    for task in [t for t in TASK_ORDER if t in tasks] + sorted(t for t in tasks if t not in TASK_ORDER):
        e = tasks[task]
        n_in, kept = int(e.get("pairs_in", 0)), int(e.get("kept", 0))
        share = 100.0 * kept / n_in if n_in else float("nan")
        cells = " | ".join(_fmt(int((e.get("removed") or {}).get(c, 0))) for c in critics)
        lines.append(f"| {task} | {_fmt(n_in)} | {cells} | {_fmt(kept)} | {_fmt(share)} |")
    return "\n".join(lines)


def pass_rate_markdown(report: dict) -> str:
    critics = Q.ordered_critics(c for rnd in report["rounds"].values() for q in rnd["tasks"].values()
                                for c in q.get("critic_pass_rate", {}))
    lines = ["| round | task | " + " | ".join(critics) + " |", "|---|---|" + "---:|" * len(critics)]
    for r, rnd in report["rounds"].items():
        for task, q in rnd["tasks"].items():
            rates = q.get("critic_pass_rate", {})
            cells = " | ".join(_fmt(100.0 * rates[c] if rates.get(c) is not None else None) for c in critics)
            lines.append(f"| {r} | {task} | {cells} |")
    return "\n".join(lines)


def figures_markdown(report: dict, prefix: str = "") -> str:
    out = []
    for r, rnd in report["rounds"].items():
        for rel in rnd.get("figures", []):
            out.append(f"![round {r}: {Path(rel).stem}]({prefix}{rel})")
    return "\n\n".join(out)


MEASURES_NOTE = """\
Measures (distill/quality.py). Tokens: lowercase `\\w+` matches. **Cos**: mean cosine similarity
(×100) of source and target sentence embeddings. **H2 / H3**: entropy in bits of the frequency
distribution of all word 2-/3-grams of the targets (corpus-wide; our reading of the paper's
measure, a close stand-in; it grows with corpus size, so small runs are not comparable with the
paper's 4.2M pairs). **MSTTR**: mean type-token ratio (×100) of consecutive 50-token segments of
the concatenated targets (last partial segment dropped). **Jaccard**: mean |A∩B|/|A∪B| (×100) of
the token sets of source and target. **self-BLEU**: mean sacrebleu sentence BLEU of each target
against the other targets, on a deterministic sample. **Compression**: len(target)/len(source) in
characters. **Pass rate**: 1 − removed / pairs reaching the critic (critics apply in the order
length, numbers, diversity, nli, dedup)."""


def report_markdown(report: dict) -> str:
    s = report["settings"]
    parts = [
        f"# Quality report: {report['run']}",
        f"Rounds: {', '.join(report['rounds'])}. "
        + (f"Embedding model: `{s['embedding_model']}`." if s["embedding_model"] else "Cos not computed (no embedding model)."),
        "## Table 1 measures (the paper's figures are theirs, quoted for reference)",
        table1_markdown(report),
        MEASURES_NOTE,
        "## Diversity and length",
        extra_markdown(report),
        "## Critic pass rates (%)",
        pass_rate_markdown(report),
    ]
    for r, rnd in report["rounds"].items():
        parts += [f"## Funnel, round {r}", funnel_markdown(rnd["funnel"])]
    figs = figures_markdown(report)
    if figs:
        parts += ["## Figures", figs]
    return "\n\n".join(parts) + "\n"


# ------------------------------------------------------------------------------------------------
# the report


def build_report(run_dir: str | Path, out_dir: str | Path, *, embedding_model: str | None = Q.DEFAULT_EMBEDDING_MODEL,
                 cosine_samples: int | None = 20000, self_bleu_samples: int | None = 500, segment_size: int = 50,
                 seed: int = 0, strict: bool = False) -> dict:
    """Computes the report and writes its figures under ``out_dir/figures``; returns the report dict."""
    cfg, shards = check_run(run_dir, strict=strict)
    out_dir = Path(out_dir)
    fig_dir = out_dir / "figures"
    if fig_dir.exists():
        shutil.rmtree(fig_dir)  # figures of an earlier report must not outlive it
    fig_dir.mkdir(parents=True)
    embedder = Q.load_embedder(embedding_model) if embedding_model else None
    report: dict = {
        "version": REPORT_VERSION,
        "run": cfg.name,
        "fingerprint": run_fingerprint(run_dir, cfg, shards),
        "settings": {
            "embedding_model": embedding_model,
            "embedding_model_resolved": Q.resolve_embedding_model(embedding_model) if embedding_model else None,
            "tokenization": "lowercase regex \\w+",
            "cosine_samples": cosine_samples,
            "self_bleu_samples": self_bleu_samples,
            "msttr_segment": segment_size,
            "sample_seed": seed,
        },
        "paper_table1": Q.PAPER_TABLE1,
        "rounds": {},
    }
    for r, names in shards.items():
        funnel = read_funnel(run_dir, r)
        critique = read_critique(run_dir, r, names, ["task", "reject", *SCORE_COLUMNS])
        funnel_tasks = funnel.get("tasks") or _funnel_from_reasons(critique)
        corpora = {t: read_corpus(run_dir, r, t, names) for t in cfg.tasks}
        tasks = {}
        for task in [t for t in TASK_ORDER if t in corpora]:
            q = task_quality(corpora[task], embedder=embedder, cosine_samples=cosine_samples,
                             self_bleu_samples=self_bleu_samples, segment_size=segment_size, seed=seed)
            q["critic_pass_rate"] = Q.critic_pass_rates(funnel_tasks.get(task, {}))
            tasks[task] = q
        figures = []
        th = _thresholds(funnel, cfg)
        if plot_funnel({t: e for t, e in funnel_tasks.items() if t in cfg.tasks}, fig_dir / f"round-{r}-funnel.png",
                       f"{cfg.name}, round {r}: funnel"):
            figures.append(f"figures/round-{r}-funnel.png")
        for col in SCORE_COLUMNS:
            if plot_score_histograms(critique, col, th[col], fig_dir / f"round-{r}-{col}.png",
                                     f"{cfg.name}, round {r}: {col} (all scored pairs)"):
                figures.append(f"figures/round-{r}-{col}.png")
        if plot_lengths(corpora, fig_dir / f"round-{r}-lengths.png", f"{cfg.name}, round {r}: kept pairs"):
            figures.append(f"figures/round-{r}-lengths.png")
        report["rounds"][str(r)] = {"shards": names, "funnel": {**funnel, "tasks": funnel_tasks},
                                    "tasks": tasks, "figures": figures}
    return Q.finite_or_none(report)


def write_report(run_dir: str | Path, out_dir: str | Path | None = None, *,
                 embedding_model: str | None = Q.DEFAULT_EMBEDDING_MODEL, cosine_samples: int | None = 20000,
                 self_bleu_samples: int | None = 500, segment_size: int = 50, seed: int = 0) -> dict:
    """Writes report.json, report.md and figures/*.png into ``out_dir`` (default ``<run>/report``).

    Returns the report (the content of report.json) with ``"files"``: the paths written, relative
    to ``out_dir``. ``embedding_model=None`` skips the embedding measure (Cos is then null).
    """
    out = Path(out_dir) if out_dir is not None else Path(run_dir) / "report"
    report = build_report(run_dir, out, embedding_model=embedding_model, cosine_samples=cosine_samples,
                          self_bleu_samples=self_bleu_samples, segment_size=segment_size, seed=seed)
    figures = [f for rnd in report["rounds"].values() for f in rnd["figures"]]
    report["files"] = ["report.json", "report.md", *figures]
    atomic_write_text(out / "report.md", report_markdown(report))
    atomic_write_text(out / "report.json", json.dumps(report, indent=2, allow_nan=False))
    return report


def cached_report(run_dir: str | Path, out_dir: str | Path | None = None, **kwargs) -> dict:
    """The report in ``out_dir`` (default ``<run>/report``) if it was made from this very run folder
    with these settings; otherwise it is written anew (``write_report``)."""
    out = Path(out_dir) if out_dir is not None else Path(run_dir) / "report"
    path = out / "report.json"
    if path.is_file():
        try:
            old = json.loads(path.read_text())
            cfg, shards = check_run(run_dir, strict=False)
            wanted = {"embedding_model": kwargs.get("embedding_model", Q.DEFAULT_EMBEDDING_MODEL),
                      "cosine_samples": kwargs.get("cosine_samples", 20000),
                      "self_bleu_samples": kwargs.get("self_bleu_samples", 500),
                      "msttr_segment": kwargs.get("segment_size", 50), "sample_seed": kwargs.get("seed", 0)}
            same = all(old.get("settings", {}).get(k) == v for k, v in wanted.items())
            files_there = all((out / f).is_file() for f in old.get("files", []))
            if (same and files_there and old.get("version") == REPORT_VERSION
                    and old.get("fingerprint") == run_fingerprint(run_dir, cfg, shards)):
                return old
        except (OSError, json.JSONDecodeError, KeyError, TypeError):
            pass
    return write_report(run_dir, out, **kwargs)
