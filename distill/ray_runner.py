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
import sys
import uuid
from collections import deque
from pathlib import Path

from distill.config import ConfigError, RunConfig
from distill.runner import (RunResult, _Progress, critique_config, drive_rounds, first_todo, make_stage,
                            prepare_run_dir, prev_sha, round_stages, stage_input)
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
        _check_reachable(addr)
        try:
            ray.init(address=addr, log_to_driver=True, logging_level="WARNING")
        except (ConnectionError, RuntimeError, ValueError) as exc:
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            hint = ("; a cluster with token authentication also needs RAY_AUTH_MODE=token and its token "
                    "(~/.ray/auth_token or RAY_AUTH_TOKEN)") if addr else ""
            raise ConfigError(f"cannot reach the Ray cluster at {addr or 'a new local instance'}: {reason}{hint}") from None


def _check_reachable(addr: str | None) -> None:
    """A plain ``host:port`` that nothing listens on makes ``ray.init`` retry for many minutes: fail fast."""
    import socket

    if not addr or "://" in addr or addr == "auto" or ":" not in addr:
        return
    host, _, port = addr.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=5):
            pass
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot reach the Ray cluster at {addr}: {exc}; start it (ray start --head / ray up) "
                          f"or pass the head's address with --address or RAY_ADDRESS") from None


def run_rounds_ray(cfg: RunConfig, out: str | Path | None = None, *, address: str | None = None,
                   progress: bool = True) -> RunResult:
    """Runs (or resumes) every round on Ray; the same files and the same corpus as ``run_rounds``."""
    from distill.stages.train import train_student_ray

    run = prepare_run_dir(cfg, out)  # config errors before Ray starts
    _warn_if_ephemeral(run)
    init_ray(address)
    _warn_if_small(cfg)
    return drive_rounds(cfg, run, lambda r, n, result, failures: _stream_round(cfg, run, r, n, result, failures,
                                                                               progress),
                        trainer=train_student_ray)


class _Pool:
    """One stage's actors. Created when the stage's first shard arrives and killed as soon as no shard
    is left for it, so a small cluster runs stages one after another instead of waiting forever for
    resources that the pools of finished (or not yet started) stages hold."""

    def __init__(self, stage: str, cfg: RunConfig, cfg_json: dict, r: int, run_path: str):
        self.stage, self.cfg, self.cfg_json, self.r, self.run_path = stage, cfg, cfg_json, r, run_path
        self.actors: list = []
        self.idle: deque = deque()
        self.closed = False

    def ready(self) -> bool:
        if not self.actors and not self.closed:
            self._start()
        return bool(self.idle)

    def _start(self) -> None:
        ray = _require_ray()
        res = _resources(self.cfg, self.stage)
        actor_cls = ray.remote(StageWorker)
        for j in range(res.concurrency):
            # named so that the dashboard can tell the pools apart
            actor = actor_cls.options(
                name=f"distill-r{self.r}-{self.stage}-{j}-{uuid.uuid4().hex[:8]}", num_gpus=res.num_gpus,
                num_cpus=res.num_cpus, max_restarts=RETRIES, max_task_retries=RETRIES,
            ).remote(self.stage, self.cfg_json, self.r, self.run_path)
            self.actors.append(actor)
            self.idle.append(actor)

    def close(self) -> None:
        ray = _require_ray()
        for actor in self.actors:
            ray.kill(actor)
        self.actors, self.idle, self.closed = [], deque(), True


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

    left = {st: todo(st) for st in stages}  # shards still to leave each stage in this call
    pools = {s: _Pool(s, cfg, cfg_json, r, str(run.path.resolve())) for s in steps if s in ACTOR_STAGES}
    cpu_task = ray.remote(_cpu_step).options(num_cpus=cfg.critique.resources.num_cpus, max_retries=RETRIES)

    def leave(stage: str, count_later: bool) -> None:
        """A shard left ``stage`` (and, when it failed, every later one): close pools nobody needs."""
        for st in stages[stages.index(stage):] if count_later else [stage]:
            left[st] -= 1
            if left[st] == 0 and st in pools:
                pools[st].close()

    pending: dict = {}  # ObjectRef -> (step, shard, actor or None)
    failed = False
    try:
        with _Progress(progress, r) as bar:
            tasks = {s: bar.add(s, todo(s)) for s in stages}
            while pending or any(queues.values()):
                for step in steps:  # submit whatever can start
                    while queues[step] and (step not in pools or pools[step].ready()):
                        i = queues[step].popleft()
                        batch = batches.pop(i)
                        if step in pools:
                            actor = pools[step].idle.popleft()
                            pending[actor.process.remote(batch)] = (step, i, actor)
                        else:
                            pending[cpu_task.remote(step, cfg_json, r, batch)] = (step, i, None)
                if not pending:
                    break
                ready, _ = ray.wait(list(pending), num_returns=1)
                step, i, actor = pending.pop(ready[0])
                if actor is not None:
                    pools[step].idle.append(actor)
                name = shard_name(i)
                stage = "critique" if step == "cheap" else step
                try:
                    df = ray.get(ready[0])
                except Exception as exc:  # noqa: BLE001 - the shard is reported by name; the others go on
                    failures[f"round-{r}/{stage}/{name}"] = _reason(exc)
                    failed = True
                    leave(stage, count_later=True)
                    continue
                if step == "cheap":  # intermediate: straight on to the NLI actors
                    batches[i] = df
                    queues["critique"].append(i)
                    continue
                run.stage(r, stage).write(name, df, prev_sha(run, r, stage, name))
                result.computed[f"r{r}/{stage}"] += 1
                bar.advance(tasks[stage])
                leave(stage, count_later=False)
                if stage != stages[-1]:
                    nxt = stages[stages.index(stage) + 1]
                    batches[i] = df
                    queues["cheap" if nxt == "critique" else nxt].append(i)
    finally:
        for pool in pools.values():
            pool.close()
    return failed


def _warn_if_ephemeral(run: RunDir) -> None:
    """A ``ray job submit --working-dir .`` driver runs in Ray's unpacked copy of that folder, which Ray
    deletes: a relative run folder (the default ``runs/<name>``) would go with it."""
    parts = run.path.resolve().parts
    if "runtime_resources" in parts or any(p.startswith("_ray_pkg_") for p in parts):
        print(f"note: the run folder {run.path.resolve()} is inside Ray's temporary copy of the job's working "
              f"dir, which Ray deletes; pass --out with an absolute path (shared storage on a multi-node cluster)",
              file=sys.stderr, flush=True)


def _warn_if_small(cfg: RunConfig) -> None:
    """One line on stderr when the stage pools together ask for more CPUs than the cluster has now: the
    run still completes (pools start late and close early), but the stages overlap less."""
    ray = _require_ray()
    have = ray.cluster_resources().get("CPU", 0.0)
    pools = [_resources(cfg, s) for s in steps_of(0) if s in ACTOR_STAGES]
    want = sum(res.num_cpus * res.concurrency for res in pools) + cfg.critique.resources.num_cpus
    if want > have:
        print(f"note: the stage pools and CPU tasks ask for {want:g} CPUs, the cluster has {have:g} now: stages "
              f"will overlap less (or wait for the autoscaler); see the stages' 'resources' in the config",
              file=sys.stderr, flush=True)


def _resources(cfg: RunConfig, stage: str):
    return {"contexts": cfg.contexts, "candidates": cfg.candidates, "student_pairs": cfg.student,
            "critique": cfg.critique}[stage].resources


def _reason(exc: BaseException) -> str:
    """The stage's own exception, not Ray's wrapper around it."""
    cause = getattr(exc, "cause", None) or exc.__cause__ or exc
    text = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {text[-1] if text else ''}"
