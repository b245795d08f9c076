"""The rounds on a Ray cluster: the same stage classes, as actor pools, streaming shard by shard.

Why actors and a driver loop rather than one Ray Data pipeline: every output shard is keyed by its
input shard (so local and Ray runs write the same files and resume each other), dedup needs all
pairs of a context together, and the driver must record each finished shard in the manifest the
moment it lands. So each model stage is a pool of actors (``__init__`` loads the model once per
actor; ``num_gpus`` may be fractional so the generator and the NLI critic share a GPU), the
model-free steps (pairs, the cheap critics) are CPU tasks, and the driver streams: as soon as shard
i leaves one stage it is submitted to the next, so generation, critique and writing overlap.

The driver writes every shard (atomically) and every manifest entry, so the run folder only needs
to be on the driver's disk; workers exchange batches through Ray's object store. A worker that
dies is restarted by Ray and its task retried (``max_restarts``/``max_task_retries``); a shard
whose stage raises is reported by name and the other shards go on. Each round's student trains with
Ray Train (``TorchTrainer``, data parallel). The run folder (and so the students' checkpoints, which
student actors load) must be on storage every node can read when workers run on several nodes.
"""

from __future__ import annotations

import os
import time
import uuid
from collections import deque
from pathlib import Path

from distill.config import RunConfig
from distill.runner import (RunResult, ShardError, _Progress, critique_config, finish_round, finished_shards,
                            first_todo, make_stage, prepare_run_dir, prev_sha, round_stages, stage_input)
from distill.store import RunDir, shard_name

# model stages run in actor pools; the others are stateless CPU tasks
ACTOR_STAGES = ("contexts", "candidates", "student_pairs", "critique")
RETRIES = 3


def _require_ray():
    try:
        import ray
    except ImportError:  # pragma: no cover - depends on the install
        raise RuntimeError("Ray is not installed: pip install 'distill[ray]'") from None
    return ray


def steps_of(round_: int) -> tuple[str, ...]:
    """The round's stages, with the critique split into a CPU step ("cheap") and the NLI actor step."""
    stages = round_stages(round_)
    return stages[:-1] + ("cheap", "critique")


class StageWorker:
    """An actor hosting one stage object (its model loaded once, in ``__init__``)."""

    def __init__(self, stage: str, cfg_json: dict, round_: int, run_path: str):
        from distill.config import validate

        cfg = validate(cfg_json, "ray job config")
        self.fn = make_stage(stage, cfg, round_, RunDir(run_path), prescored=(stage == "critique"))

    def process(self, batch):
        return self.fn(batch)


def _cpu_step(step: str, cfg_json: dict, round_: int, batch):
    from distill.config import validate

    cfg = validate(cfg_json, "ray job config")
    if step == "pairs":
        from distill.stages.pairs import PairsStage

        return PairsStage(cfg.tasks, round_=round_)(batch)
    from distill.stages.critique import CheapScores

    return CheapScores(critique_config(cfg, round_))(batch)


def init_ray(address: str | None = None) -> None:
    """Connects to ``address`` / ``RAY_ADDRESS`` if given, else starts a local Ray instance."""
    ray = _require_ray()
    if not ray.is_initialized():
        addr = address or os.environ.get("RAY_ADDRESS") or None
        ray.init(address=addr, log_to_driver=True, logging_level="WARNING")


def run_rounds_ray(cfg: RunConfig, out: str | Path | None = None, *, address: str | None = None,
                   progress: bool = True) -> RunResult:
    """Runs (or resumes) every round on Ray; the same files and the same corpus as ``run_rounds``."""
    from distill.stages.contexts import n_context_shards
    from distill.stages.train import train_student_ray

    t0 = time.perf_counter()
    run = prepare_run_dir(cfg, out)
    init_ray(address)
    n = n_context_shards(cfg)
    result = RunResult(run.path, funnel={})
    failures: dict[str, str] = {}
    for r in range(cfg.rounds):
        failed = _stream_round(cfg, run, r, n, result, failures, progress)
        result.rounds.append(finish_round(cfg, run, r, finished_shards(run, r, n), trainer=train_student_ray,
                                          train=not failed))
        if failed:
            break  # the next round trains on this one: do not build on a partial round
    result.funnel = result.rounds[-1] if result.rounds else {}
    result.seconds = time.perf_counter() - t0
    if failures:
        raise ShardError(failures)
    return result


def _stream_round(cfg: RunConfig, run: RunDir, r: int, n: int, result: RunResult, failures: dict,
                  progress: bool) -> bool:
    """One round's shards through its stages, streaming; returns whether any shard failed."""
    ray = _require_ray()
    stages, steps = round_stages(r), steps_of(r)
    cfg_json = cfg.model_dump(mode="json")
    queues: dict[str, deque] = {s: deque() for s in steps}
    batches: dict[int, object] = {}
    starts = {i: first_todo(run, r, i) for i in range(n)}  # lineage by checksum: where each shard resumes
    for st in stages:
        result.computed[f"r{r}/{st}"] = 0
        result.skipped[f"r{r}/{st}"] = sum(1 for s0 in starts.values()
                                           if s0 is None or stages.index(s0) > stages.index(st))
    for i, start in starts.items():
        if start is not None:
            batches[i] = stage_input(cfg, run, r, start, i)
            queues["cheap" if start == "critique" else start].append(i)

    def todo(stage: str) -> int:  # shards that will pass through ``stage`` in this call
        return sum(1 for s0 in starts.values() if s0 and stages.index(s0) <= stages.index(stage))

    idle: dict[str, deque] = {s: deque() for s in steps if s in ACTOR_STAGES}
    actors: list = []
    for stage in idle:
        if not todo(stage):
            continue  # no model is loaded for a stage with nothing to do
        res = _resources(cfg, stage)
        actor_cls = ray.remote(StageWorker).options(
            num_gpus=res.num_gpus, num_cpus=res.num_cpus, max_restarts=RETRIES, max_task_retries=RETRIES)
        for j in range(res.concurrency):
            # named so that the dashboard (and a test) can tell the pools apart
            actor = actor_cls.options(name=f"distill-r{r}-{stage}-{j}-{uuid.uuid4().hex[:8]}").remote(
                stage, cfg_json, r, str(run.path.resolve()))
            actors.append(actor)
            idle[stage].append(actor)
    cpu_task = ray.remote(_cpu_step).options(num_cpus=cfg.critique.resources.num_cpus, max_retries=RETRIES)

    pending: dict = {}  # ObjectRef -> (step, shard, actor or None)
    failed = False
    with _Progress(progress, r) as bar:
        tasks = {s: bar.add(s, todo(s)) for s in stages}
        while pending or any(queues.values()):
            for step in steps:  # submit whatever can start
                while queues[step] and (step not in idle or idle[step]):
                    i = queues[step].popleft()
                    batch = batches.pop(i)
                    if step in idle:
                        actor = idle[step].popleft()
                        pending[actor.process.remote(batch)] = (step, i, actor)
                    else:
                        pending[cpu_task.remote(step, cfg_json, r, batch)] = (step, i, None)
            if not pending:
                break
            ready, _ = ray.wait(list(pending), num_returns=1)
            step, i, actor = pending.pop(ready[0])
            if actor is not None:
                idle[step].append(actor)
            name = shard_name(i)
            stage = "critique" if step == "cheap" else step
            try:
                df = ray.get(ready[0])
            except Exception as exc:  # noqa: BLE001 - the shard is reported by name; the others go on
                failures[f"round-{r}/{stage}/{name}"] = _reason(exc)
                failed = True
                continue
            if step == "cheap":  # intermediate: straight on to the NLI actors
                batches[i] = df
                queues["critique"].append(i)
                continue
            run.stage(r, stage).write(name, df, prev_sha(run, r, stage, name))
            result.computed[f"r{r}/{stage}"] += 1
            bar.advance(tasks[stage])
            if stage != stages[-1]:
                nxt = stages[stages.index(stage) + 1]
                batches[i] = df
                queues["cheap" if nxt == "critique" else nxt].append(i)
    for actor in actors:
        ray.kill(actor)
    return failed


def _resources(cfg: RunConfig, stage: str):
    return {"contexts": cfg.contexts, "candidates": cfg.candidates, "student_pairs": cfg.student,
            "critique": cfg.critique}[stage].resources


def _reason(exc: BaseException) -> str:
    """The stage's own exception, not Ray's wrapper around it."""
    cause = getattr(exc, "cause", None) or exc.__cause__ or exc
    text = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {text[-1] if text else ''}"
