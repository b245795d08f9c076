"""Runs the rounds shard by shard into a run folder, skipping what is already done.

Round 0: contexts -> candidates -> pairs -> critique (teacher continuations).
Round r >= 1: contexts -> student_pairs -> critique (the previous round's student rewrites held-out records).
Each round ends with selection into its corpus and the training of that round's student.

Shard ``i`` of every stage is made from shard ``i`` of the stage before, so a shard's lineage is
one file per stage. A stage object (and so its model) is only built when some shard of it needs
computing. Round r >= 1 samples new passages (indices offset by r x n_passages), so its records are
held out from every earlier round.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from distill import config as config_mod
from distill.config import ConfigError, RunConfig
from distill.store import RunDir, atomic_write_text, shard_name

ROUND0_STAGES = ("contexts", "candidates", "pairs", "critique")
STUDENT_STAGES = ("contexts", "student_pairs", "critique")  # student_pairs: the previous student's candidates


def round_stages(round_: int) -> tuple[str, ...]:
    return ROUND0_STAGES if round_ == 0 else STUDENT_STAGES


class ShardError(RuntimeError):
    """Some shards failed; the others finished and are kept."""

    def __init__(self, failures: dict[str, str]):
        self.failures = failures
        names = ", ".join(f"{k} ({v})" for k, v in sorted(failures.items()))
        super().__init__(f"{len(failures)} shard(s) failed: {names}")


@dataclass
class RunResult:
    run_dir: Path
    funnel: dict  # the last round's selection summary
    rounds: list[dict] = field(default_factory=list)  # per round: selection summary + student metrics
    computed: dict[str, int] = field(default_factory=dict)  # "r<round>/<stage>" -> shards computed in this call
    skipped: dict[str, int] = field(default_factory=dict)  # "r<round>/<stage>" -> shards found done
    seconds: float = 0.0


def student_dir(run: RunDir, round_: int) -> Path:
    return run.path / f"round-{round_}" / "student"


def make_stage(name: str, cfg: RunConfig, round_: int = 0, run: RunDir | None = None, *, prescored: bool = False):
    """The callable for one stage of one round, with its model loaded (once)."""
    if name == "contexts":
        from distill.stages.contexts import ContextsStage

        return ContextsStage(cfg)
    if name == "candidates":
        from distill.stages.candidates import CandidatesStage

        return CandidatesStage(cfg)
    if name == "pairs":
        from distill.stages.pairs import PairsStage

        return PairsStage(cfg.tasks, round_=round_)
    if name == "critique":
        from distill.stages.critique import CritiqueStage

        return CritiqueStage(critique_config(cfg, round_), prescored=prescored)
    if name == "student_pairs":
        from distill.stages.student import StudentStage

        if run is None:
            raise ValueError("the student stage needs the run folder (for the previous round's checkpoint)")
        from distill.runtime import pick_device

        return StudentStage(student_dir(run, round_ - 1), cfg.student, seed=cfg.seed, round_=round_,
                            device=pick_device(cfg.train.student.device), tasks=tuple(cfg.tasks),
                            max_sentences_per_passage=cfg.candidates.max_sentences_per_passage,
                            generator=f"student:round-{round_ - 1}")
    raise ValueError(f"unknown stage '{name}' (allowed: {', '.join(ROUND0_STAGES + ('student_pairs',))})")


def critique_config(cfg: RunConfig, round_: int):
    """Round r >= 1 pairs share their source, so the paper selects per source instead of deduplicating."""
    return cfg.critique if round_ == 0 else cfg.critique.model_copy(update={"dedup": False})


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


def prev_sha(run: RunDir, round_: int, stage: str, name: str) -> str | None:
    """The checksum of the shard ``stage`` is made from (None for contexts, "missing" if absent)."""
    stages = round_stages(round_)
    if stage == stages[0]:
        return None
    e = run.stage(round_, stages[stages.index(stage) - 1]).entry(name)
    return e["sha256"] if e else "missing"


def first_todo(run: RunDir, round_: int, shard: int) -> str | None:
    """The first stage of ``shard`` that is missing or stale; None when the shard is finished."""
    name = shard_name(shard)
    for stage in round_stages(round_):
        if not run.stage(round_, stage).is_done(name, prev_sha(run, round_, stage, name)):
            return stage
    return None


def stage_input(cfg: RunConfig, run: RunDir, round_: int, stage: str, shard: int) -> pd.DataFrame:
    if stage == "contexts":
        from distill.stages.contexts import prefix_table

        return prefix_table(cfg, shard, round_=round_)
    stages = round_stages(round_)
    return run.stage(round_, stages[stages.index(stage) - 1]).read(shard_name(shard))


def finished_shards(run: RunDir, round_: int, n: int) -> list[str]:
    return [shard_name(i) for i in range(n) if first_todo(run, round_, i) is None]


def run_rounds(cfg: RunConfig, out: str | Path | None = None, *, progress: bool = True) -> RunResult:
    """Runs (or resumes) every round locally; raises ShardError naming failed shards after finishing the others."""
    run = prepare_run_dir(cfg, out)
    return drive_rounds(cfg, run, lambda r, n, result, failures: _local_round(cfg, run, r, n, result, failures,
                                                                              progress))


def drive_rounds(cfg: RunConfig, run: RunDir, run_round: Callable[[int, int, RunResult, dict], bool], *,
                 trainer: Callable | None = None) -> RunResult:
    """The round loop both runners share: ``run_round(r, n_shards, result, failures)`` takes round r's
    shards through its stages (returns whether any failed); then selection and the round's student.
    A round with a failed shard is selected and reported but ends the run: the next round would train on it."""
    from distill.stages.contexts import n_context_shards

    t0 = time.perf_counter()
    n = n_context_shards(cfg)
    result = RunResult(run.path, funnel={})
    failures: dict[str, str] = {}
    for r in range(cfg.rounds):
        failed = run_round(r, n, result, failures)
        result.rounds.append(finish_round(cfg, run, r, finished_shards(run, r, n), trainer=trainer, train=not failed))
        if failed:
            break
    result.funnel = result.rounds[-1] if result.rounds else {}
    result.seconds = time.perf_counter() - t0
    if failures:
        raise ShardError(failures)
    return result


def _local_round(cfg: RunConfig, run: RunDir, r: int, n: int, result: RunResult, failures: dict,
                 progress: bool) -> bool:
    """Round r in this process, stage after stage, shard after shard; returns whether any shard failed."""
    failed: set[str] = set()  # shard names whose lineage broke in this round; later stages skip them
    with _Progress(progress, r) as bar:
        for stage in round_stages(r):
            sdir = run.stage(r, stage)
            todo, done = [], 0
            for i in range(n):
                name = shard_name(i)
                if name in failed:
                    continue
                if sdir.is_done(name, prev_sha(run, r, stage, name)):
                    done += 1
                else:
                    todo.append(i)
            key = f"r{r}/{stage}"
            result.skipped[key], result.computed[key] = done, 0
            task = bar.add(stage, len(todo))
            if not todo:
                continue
            fn = make_stage(stage, cfg, r, run)
            for i in todo:
                name = shard_name(i)
                try:
                    sdir.write(name, fn(stage_input(cfg, run, r, stage, i)), prev_sha(run, r, stage, name))
                    result.computed[key] += 1
                except Exception as exc:  # noqa: BLE001 - reported by shard name, the others go on
                    failures[f"round-{r}/{stage}/{name}"] = f"{type(exc).__name__}: {exc}"
                    failed.add(name)
                bar.advance(task)
            del fn
    return bool(failed)


def finish_round(cfg: RunConfig, run: RunDir, r: int, shards: list[str], *, trainer: Callable | None = None,
                 train: bool = True) -> dict:
    """Selection into the round's corpus, then the round's student (reused when already trained).

    ``train=False`` (some shard failed): the finished shards are selected and reported, but no student
    is trained on a partial round."""
    from distill.select import select_round

    summary = select_round(run, cfg, r, shards)
    summary["student"] = train_round(cfg, run, r, trainer=trainer) if train else {"skipped": "round incomplete"}
    atomic_write_text(run.path / f"round-{r}" / "funnel.json", json.dumps(summary, indent=2, sort_keys=True))
    return summary


def training_pairs(cfg: RunConfig, run: RunDir, r: int) -> pd.DataFrame:
    """D_r, or D_0..D_r (``train.mix``), both tasks."""
    rounds = [r] if cfg.train.mix == "latest" else list(range(r + 1))
    parts = [run.stage(q, f"corpus/{task}").read(name)
             for q in rounds for task in cfg.tasks for name in run.stage(q, f"corpus/{task}").done_shards()]
    parts = [p for p in parts if len(p)]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def train_round(cfg: RunConfig, run: RunDir, r: int, *, trainer: Callable | None = None) -> dict:
    """Trains (or resumes, or reuses) round r's student on its training mix; returns its metrics."""
    from distill.runtime import pick_device
    from distill.stages.train import train_student

    pairs = training_pairs(cfg, run, r)
    if pairs.empty:
        return {"skipped": "no kept pairs to train on"}
    init = str(student_dir(run, r - 1)) if (r > 0 and cfg.train.init == "previous") else cfg.train.student.model
    critique = _LazyCritique(cfg)  # the NLI model loads only if the student has to be evaluated
    if trainer is None:
        return train_student(pairs, cfg.train, student_dir(run, r), init=init, seed=cfg.seed,
                             device=pick_device(cfg.train.student.device), critique=critique)
    return trainer(pairs, cfg.train, student_dir(run, r), init=init, seed=cfg.seed, critique=critique)


class _LazyCritique:
    """A CritiqueStage built on first use (evaluating a student needs the NLI model; reusing one does not)."""

    def __init__(self, cfg: RunConfig):
        self.cfg, self.stage = cfg, None

    def __call__(self, pairs: pd.DataFrame) -> pd.DataFrame:
        if self.stage is None:
            from distill.stages.critique import CritiqueStage

            self.stage = CritiqueStage(self.cfg.critique.model_copy(update={"dedup": False}))
        return self.stage(pairs)


class _Progress:
    """A rich progress bar per stage on a terminal; on anything else (a Ray job's log, CI, a file) one
    plain line per finished shard; nothing when disabled (tests, ``--quiet``)."""

    def __init__(self, enabled: bool, round_: int = 0):
        self.enabled, self.round = enabled, round_
        self.p = None
        self.plain: dict[int, list] = {}  # task id -> [name, done, total]
        self.t0 = time.perf_counter()

    def __enter__(self):
        if self.enabled and sys.stdout.isatty():
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.p = Progress(TextColumn("[bold]{task.description:<14}"), BarColumn(), MofNCompleteColumn(),
                              TextColumn("shards"), TimeElapsedColumn())
            self.p.__enter__()
        return self

    def __exit__(self, *exc):
        if self.p is not None:
            self.p.__exit__(*exc)

    def add(self, name: str, total: int):
        if self.p is not None:
            return self.p.add_task(f"r{self.round} {name}", total=total)
        if not self.enabled:
            return None
        self.plain[len(self.plain)] = [name, 0, total]
        return len(self.plain) - 1

    def advance(self, task) -> None:
        if self.p is not None:
            self.p.advance(task)
        elif task is not None:
            entry = self.plain[task]
            entry[1] += 1
            print(f"round {self.round} {entry[0]}: {entry[1]}/{entry[2]} shards "
                  f"({time.perf_counter() - self.t0:.0f} s)", flush=True)
