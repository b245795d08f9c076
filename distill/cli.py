"""The ``distill`` command line. Parsing lives here; the work lives in runner/select/stages."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from distill.config import ConfigError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Impossible Distillation: a paraphrase and summary corpus from an off-the-shelf LM.")

STAGE_NAMES = ("contexts", "candidates", "pairs", "critique")
SetOpt = Annotated[Optional[list[str]], typer.Option("--set", help="Override a config key: --set critique.nli.threshold=0.8 (repeatable).")]


def fail(message: str, code: int = 2) -> None:
    """One line on stderr, then exit (2 = bad input)."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _load(config: Path, overrides: list[str] | None):
    from distill.config import load_config

    try:
        return load_config(config, overrides or [])
    except ConfigError as exc:
        fail(str(exc))


@app.command()
def run(config: Annotated[Path, typer.Argument(help="YAML run config, e.g. configs/smoke.yaml.")],
        out: Annotated[Optional[Path], typer.Option(help="Run folder (default: runs/<name>).")] = None,
        set_: SetOpt = None,
        ray: Annotated[bool, typer.Option("--ray", help="Run on Ray: RAY_ADDRESS / --address, else a local Ray instance.")] = False,
        address: Annotated[Optional[str], typer.Option(help="Ray cluster address (default: $RAY_ADDRESS, else start a local one).")] = None,
        quiet: Annotated[bool, typer.Option("--quiet", help="No progress bars.")] = False) -> None:
    """Run (or resume) a distillation run: contexts, candidates, pairs, critique, corpus."""
    from distill.runner import ShardError, run_rounds
    from distill.runtime import peak_rss_mb

    cfg = _load(config, set_)
    try:
        if ray or address:
            from distill.ray_runner import run_rounds_ray

            result = run_rounds_ray(cfg, out, address=address, progress=not quiet)
        else:
            result = run_rounds(cfg, out, progress=not quiet)
    except ConfigError as exc:
        fail(str(exc))
    except ShardError as exc:
        fail(str(exc), code=1)
    for summary in result.rounds:
        _print_funnel(summary)
    _print_rounds(result.rounds)
    typer.echo(f"run folder: {result.run_dir}  ({result.seconds:.1f} s, peak RSS {peak_rss_mb():.0f} MiB; "
               f"computed {sum(result.computed.values())} shard(s), reused {sum(result.skipped.values())})")


@app.command()
def select(run_dir: Annotated[Path, typer.Argument(metavar="RUN", help="A run folder.")],
           set_: SetOpt = None) -> None:
    """Re-threshold a finished run from its stored scores (no model is loaded) and rewrite its corpus."""
    from distill.config import load_config
    from distill.select import select_round
    from distill.store import RunDir

    run = RunDir(run_dir)
    if not run.config_path.exists():
        fail(f"{run_dir}: not a run folder (no config.yaml); allowed: a folder made by 'distill run'")
    try:
        cfg = load_config(run.config_path, set_ or [])
    except ConfigError as exc:
        fail(str(exc))
    bad = [o for o in (set_ or []) if not o.startswith("critique.") or o.startswith("critique.nli.model")]
    if bad:
        fail(f"select only changes thresholds: '{bad[0]}' is not allowed (allowed: critique.* thresholds)")
    rounds = [r for r in run.rounds() if run.stage(r, "critique").done_shards()]
    if not rounds:
        fail(f"{run_dir}/round-0/critique: no finished shards to select from; run 'distill run' first")
    for r in rounds:
        _print_funnel(select_round(run, cfg, r, run.stage(r, "critique").done_shards()))
    if len(rounds) > 1 or cfg.rounds > 1:
        typer.echo("note: students were trained on the earlier selection; rerun 'distill run' in a new folder "
                   "to retrain them on this one")


@app.command()
def stage(name: Annotated[str, typer.Argument(help=f"One of: {', '.join(STAGE_NAMES)}.")],
          config: Annotated[Path, typer.Option("--config", help="YAML run config.")],
          output: Annotated[Path, typer.Option("--output", help="Folder for the output shard.")],
          input_: Annotated[Optional[Path], typer.Option("--input", help="Input shard (Parquet); contexts takes --shard instead.")] = None,
          shard: Annotated[int, typer.Option(help="contexts only: which shard of prefixes to sample.")] = 0,
          limit: Annotated[Optional[int], typer.Option(help="Only the first N input rows.")] = None,
          explain: Annotated[bool, typer.Option("--explain", help="critique: print each pair, its scores and the critic that rejected it.")] = False,
          set_: SetOpt = None) -> None:
    """Run one stage on one shard in-process (for debugging), writing OUTPUT/<shard>.parquet."""
    from distill.runner import make_stage
    from distill.store import read_parquet, write_parquet

    if name not in STAGE_NAMES:
        fail(f"unknown stage '{name}' (allowed: {', '.join(STAGE_NAMES)})")
    cfg = _load(config, set_)
    if name == "contexts":
        from distill.stages.contexts import n_context_shards, prefix_table

        if not 0 <= shard < n_context_shards(cfg):
            fail(f"--shard {shard}: out of range (allowed: 0..{n_context_shards(cfg) - 1})")
        df, out_name = prefix_table(cfg, shard), f"part-{shard:05d}"
    else:
        if input_ is None:
            fail(f"stage {name} needs --input SHARD.parquet")
        try:
            df = read_parquet(input_)
        except Exception as exc:  # noqa: BLE001
            fail(f"{input_}: not a readable Parquet shard ({type(exc).__name__})")
        out_name = input_.stem
    if limit is not None:
        df = df.iloc[:limit]
    from distill.records import CANDIDATE_COLUMNS, CONTEXT_COLUMNS, PAIR_COLUMNS

    needs = {"candidates": CONTEXT_COLUMNS, "pairs": CANDIDATE_COLUMNS, "critique": PAIR_COLUMNS}.get(name, [])
    missing = [c for c in needs if c not in df.columns]
    if missing:
        fail(f"{input_}: missing column(s) {', '.join(missing)} for stage {name} (expected: {', '.join(needs)})")
    result = make_stage(name, cfg, 0)(df)
    path = output / f"{out_name}.parquet"
    write_parquet(result, path)
    if explain and name == "critique":
        _explain(result)
    typer.echo(f"{name}: {len(df)} rows in -> {len(result)} rows out: {path}")


@app.command()
def export(run_dir: Annotated[Path, typer.Argument(metavar="RUN", help="A finished run folder.")],
           to_hub: Annotated[Optional[str], typer.Option("--to-hub", metavar="OWNER/NAME", help="Dataset repo to push to.")] = None,
           private: Annotated[bool, typer.Option("--private", help="Create the repo as private.")] = False,
           tag: Annotated[Optional[str], typer.Option(help="Tag the pushed commit.")] = None,
           dry_run: Annotated[Optional[Path], typer.Option("--dry-run", metavar="DIR", help="Write the folder that would be uploaded to DIR; upload nothing.")] = None,
           with_rejected: Annotated[bool, typer.Option("--with-rejected", help="Add the rejected pairs as a 'rejected' config.")] = False,
           embedding_model: Annotated[str, typer.Option(help="Sentence-embedding model for the report's Cos.")] = "all-MiniLM-L6-v2") -> None:
    """Export a run as a Hugging Face dataset (one config per task, train/validation, dataset card)."""
    from distill.export import export_run

    if not to_hub and not dry_run:
        fail("export needs --to-hub OWNER/NAME or --dry-run DIR")
    if not (run_dir / "config.yaml").exists():
        fail(f"{run_dir}: not a run folder (no config.yaml); allowed: a folder made by 'distill run'")
    try:
        where = export_run(run_dir, repo_id=to_hub, private=private, tag=tag, dry_run_dir=dry_run,
                           with_rejected=with_rejected, embedding_model=embedding_model)
    except ConfigError as exc:
        fail(str(exc))
    typer.echo(f"exported: {where}")


@app.command()
def report(run_dir: Annotated[Path, typer.Argument(metavar="RUN", help="A finished run folder.")],
           out: Annotated[Optional[Path], typer.Option(help="Output folder (default: RUN/report).")] = None,
           embedding_model: Annotated[str, typer.Option(help="Sentence-embedding model for Cos.")] = "all-MiniLM-L6-v2") -> None:
    """Corpus quality as the paper measures it (Table 1), per task and round: report.md, report.json, plots."""
    from distill.report import write_report

    if not (run_dir / "config.yaml").exists():
        fail(f"{run_dir}: not a run folder (no config.yaml); allowed: a folder made by 'distill run'")
    try:
        result = write_report(run_dir, out, embedding_model=embedding_model)
    except ConfigError as exc:
        fail(str(exc))
    folder = out or run_dir / "report"
    typer.echo(f"report: {folder / 'report.md'} ({len(result['files'])} files)")


@app.command()
def generate(checkpoint: Annotated[Path, typer.Argument(help="A student checkpoint, e.g. runs/smoke/round-1/student.")],
             text: Annotated[str, typer.Argument(help="The sentence to rewrite.")],
             task: Annotated[str, typer.Option(help="paraphrase or summary.")] = "paraphrase",
             n: Annotated[int, typer.Option("-n", help="Number of samples.")] = 1,
             length: Annotated[Optional[int], typer.Option(help="Length-ratio bucket 0-5 (see README); default per task.")] = None,
             diversity: Annotated[Optional[int], typer.Option(help="Lexical-overlap bucket 0-3, 0 = most diverse; default per task.")] = None,
             seed: Annotated[int, typer.Option(help="Sampling seed.")] = 0,
             greedy: Annotated[bool, typer.Option("--greedy", help="One greedy output instead of samples.")] = False) -> None:
    """Rewrite TEXT with a trained student (paraphrase or summary, with control codes)."""
    from distill.stages.student import generate as student_generate

    if task not in ("paraphrase", "summary"):
        fail(f"--task {task}: not allowed (allowed: paraphrase, summary)")
    if not (checkpoint / "config.json").exists():
        fail(f"{checkpoint}: not a student checkpoint (no config.json); allowed: runs/<name>/round-<r>/student")
    if length is not None and not 0 <= length <= 5:
        fail(f"--length {length}: not allowed (allowed: 0..5)")
    if diversity is not None and not 0 <= diversity <= 3:
        fail(f"--diversity {diversity}: not allowed (allowed: 0..3)")
    for out in student_generate(checkpoint, task, text, n=n, length=length, diversity=diversity, seed=seed,
                                greedy=greedy):
        typer.echo(out)


def _print_rounds(rounds: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="rounds")
    for col in ("round", "paraphrase kept", "summary kept", "student val loss", "student ROUGE-L", "critic pass rate"):
        table.add_column(col, justify="right")
    fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
    for s in rounds:
        st = s.get("student") or {}
        table.add_row(str(s.get("round")), str(s.get("kept", {}).get("paraphrase", 0)),
                      str(s.get("kept", {}).get("summary", 0)), fmt(st.get("validation_loss")),
                      fmt(st.get("rougeL")), fmt(st.get("critic_pass_rate")))
    Console().print(table)


def _explain(pairs) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(show_lines=False)
    for col in ("task", "source", "target", "length", "rougeL", "nli fwd", "nli rev", "verdict"):
        table.add_column(col, overflow="fold")
    fmt = lambda v: "" if v != v or v is None else f"{v:.2f}"  # noqa: E731 - NaN -> blank
    for r in pairs.itertuples(index=False):
        table.add_row(r.task, r.source, r.target, fmt(r.length_ratio), fmt(getattr(r, "diversity_rougeL", None)),
                      fmt(getattr(r, "nli_forward", None)), fmt(getattr(r, "nli_reverse", None)),
                      r.reject or "[green]kept")
    Console(width=200).print(table)


def _print_funnel(summary: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    tasks = summary.get("tasks", {})
    critics: list[str] = []  # in the chain's order, as the funnel recorded them
    for t in tasks.values():
        critics += [c for c in t.get("removed", {}) if c not in critics]
    # one column per task, one row per funnel step: readable however many critics there are
    names = sorted(tasks)
    made = (f"{summary['candidates']} teacher candidates" if "candidates" in summary
            else f"{summary.get('student_pairs', 0)} student candidates")
    header = f"round {summary.get('round', 0)}: {summary.get('records', 0)} records, {made}"
    table = Table()
    table.add_column("step", no_wrap=True)
    for task in names:
        table.add_column(task, justify="right", no_wrap=True)
    table.add_row("pairs in", *[str(tasks[t]["pairs_in"]) for t in names])
    for c in critics:
        table.add_row(f"-{c}", *[str(tasks[t].get("removed", {}).get(c, 0)) for t in names])
    table.add_row("kept", *[str(tasks[t]["kept"]) for t in names])
    console = Console()
    console.print(header, highlight=False)
    console.print(table)


def main() -> None:  # pragma: no cover - console entry
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
