"""Runs round 0 shard by shard into a run folder, skipping what is already done.

Stages: contexts -> candidates -> pairs -> critique, then selection into the corpus. Shard ``i`` of
every stage is made from shard ``i`` of the stage before, so a shard's lineage is one file per
stage. A stage object (and so its model) is only built when some shard of it needs computing.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from distill import config as config_mod
from distill.config import ConfigError, RunConfig
from distill.store import RunDir, StageDir, atomic_write_text, shard_name

ROUND0_STAGES = ("contexts", "candidates", "pairs", "critique")


class ShardError(RuntimeError):
    """Some shards failed; the others finished and are kept."""

    def __init__(self, failures: dict[str, str]):
        self.failures = failures
        names = ", ".join(f"{k} ({v})" for k, v in sorted(failures.items()))
        super().__init__(f"{len(failures)} shard(s) failed: {names}")


@dataclass
class RunResult:
    run_dir: Path
    funnel: dict
    computed: dict[str, int] = field(default_factory=dict)  # stage -> shards computed in this call
    skipped: dict[str, int] = field(default_factory=dict)  # stage -> shards found done
    seconds: float = 0.0


def make_stage(name: str, cfg: RunConfig):
    """The callable for one stage, with its model loaded (once)."""
    if name == "contexts":
        from distill.stages.contexts import ContextsStage

        return ContextsStage(cfg)
    if name == "candidates":
        from distill.stages.candidates import CandidatesStage

        return CandidatesStage(cfg)
    if name == "pairs":
        from distill.stages.pairs import PairsStage

        return PairsStage(cfg.tasks, round_=0)
    if name == "critique":
        from distill.stages.critique import CritiqueStage

        return CritiqueStage(cfg.critique)
    raise ValueError(f"unknown stage '{name}' (allowed: {', '.join(ROUND0_STAGES)})")


def prepare_run_dir(cfg: RunConfig, out: str | Path | None) -> RunDir:
    """Creates the run folder with its config snapshot, or checks that an existing one matches."""
    run = RunDir(Path(out) if out else Path("runs") / cfg.name)
    if run.config_path.exists():
        try:
            old = config_mod.load_config(run.config_path)
        except ConfigError as exc:
            raise ConfigError(f"{run.config_path}: the run folder's config snapshot is unreadable ({exc})") from None
        changes = config_mod.diff(old, cfg)
        if changes:
            raise ConfigError(f"{run.path}: made with another config ({'; '.join(changes[:3])}); "
                              f"resume with the same config, or pass another --out")
    else:
        run.path.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run.config_path, config_mod.dump(cfg))
    return run


def stage_input(cfg: RunConfig, run: RunDir, stage: str, shard: int) -> tuple[pd.DataFrame, str | None]:
    """The input batch of ``stage`` for shard ``shard``, and the checksum of the file it came from."""
    if stage == "contexts":
        from distill.stages.contexts import prefix_table

        return prefix_table(cfg, shard), None
    prev = run.stage(0, ROUND0_STAGES[ROUND0_STAGES.index(stage) - 1])
    name = shard_name(shard)
    return prev.read(name), prev.entry(name)["sha256"]


def run_round0(cfg: RunConfig, out: str | Path | None = None, *, progress: bool = True,
               stage_factory: Callable[[str, RunConfig], Callable] = make_stage) -> RunResult:
    """Runs (or resumes) round 0; raises ShardError naming failed shards after finishing all the others."""
    from distill.select import select_round
    from distill.stages.contexts import n_context_shards

    t0 = time.perf_counter()
    run = prepare_run_dir(cfg, out)
    n = n_context_shards(cfg)
    result = RunResult(run.path, funnel={})
    failures: dict[str, str] = {}  # "round-0/<stage>/<shard>" -> reason
    failed: set[str] = set()  # shard names whose lineage broke; later stages skip them
    bar = _Progress(progress)
    with bar:
        for stage in ROUND0_STAGES:
            sdir = run.stage(0, stage)
            todo, done = [], 0
            for i in range(n):
                name = shard_name(i)
                if name in failed:
                    continue
                input_sha = None if stage == "contexts" else _input_sha(run, stage, name)
                if sdir.is_done(name, input_sha):
                    done += 1
                else:
                    todo.append(i)
            result.skipped[stage], result.computed[stage] = done, 0
            task = bar.add(stage, len(todo))
            if not todo:
                continue
            fn = stage_factory(stage, cfg)
            for i in todo:
                name = shard_name(i)
                try:
                    df, input_sha = stage_input(cfg, run, stage, i)
                    sdir.write(name, fn(df), input_sha)
                    result.computed[stage] += 1
                except Exception as exc:  # noqa: BLE001 - reported by shard name, the others go on
                    failures[f"round-0/{stage}/{name}"] = f"{type(exc).__name__}: {exc}"
                    failed.add(name)
                bar.advance(task)
            del fn
    done = [shard_name(i) for i in range(n) if run.stage(0, "critique").is_done(
        shard_name(i), _input_sha(run, "critique", shard_name(i)))]
    result.funnel = select_round(run, cfg, 0, done)
    result.seconds = time.perf_counter() - t0
    if failures:
        raise ShardError(failures)
    return result


def _input_sha(run: RunDir, stage: str, name: str) -> str | None:
    prev: StageDir = run.stage(0, ROUND0_STAGES[ROUND0_STAGES.index(stage) - 1])
    e = prev.entry(name)
    return e["sha256"] if e else "missing"


class _Progress:
    """A rich progress bar per stage (or nothing, for tests and logs)."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.p = None

    def __enter__(self):
        if self.enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.p = Progress(TextColumn("[bold]{task.description:<11}"), BarColumn(), MofNCompleteColumn(),
                              TextColumn("shards"), TimeElapsedColumn())
            self.p.__enter__()
        return self

    def __exit__(self, *exc):
        if self.p is not None:
            self.p.__exit__(*exc)

    def add(self, name: str, total: int):
        return self.p.add_task(name, total=total) if self.p else None

    def advance(self, task) -> None:
        if self.p is not None:
            self.p.advance(task)


def write_json(path: Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True))
