"""Round 0 on a real local Ray cluster (started on 127.0.0.1 by a fixture, stopped by PID after)."""

import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import pytest

from conftest import REPO, SMOKE, distill_cmd, run_cli
from distill.store import RunDir
from test_run import assert_same_corpus

pytestmark = [pytest.mark.ray, pytest.mark.slow]

if not os.environ.get("DISTILL_RAY_TESTS"):
    # Opt-in until they have been seen green on a 2-core CI machine (see the README's test section):
    #   DISTILL_RAY_TESTS=1 python -m pytest -q tests/test_ray.py
    pytest.skip("Ray cluster tests are opt-in: set DISTILL_RAY_TESTS=1", allow_module_level=True)
ONE_ROUND = ["rounds=1"]  # round 0 is the same whatever the number of rounds; one round keeps these tests short

ray = pytest.importorskip("ray")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ray_cluster():
    """A head node on loopback with its own temp dir; every process under it is killed by PID after."""
    temp = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # short: Ray's socket paths must stay under 107 bytes
    port, dash = _free_port(), _free_port()
    # token authentication on, as on a real cluster: the head, this driver and every subprocess share the token
    auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16)}
    mp = pytest.MonkeyPatch()
    for k, v in auth.items():
        mp.setenv(k, v)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "RAY_USAGE_STATS_ENABLED": "0"}
    subprocess.run([str(Path(sys.executable).parent / "ray"), "start", "--head", "--node-ip-address=127.0.0.1",
                    f"--port={port}", "--num-cpus=4", "--include-dashboard=true", "--dashboard-host=127.0.0.1",
                    f"--dashboard-port={dash}", f"--temp-dir={temp}", "--disable-usage-stats"],
                   check=True, capture_output=True, env=env, cwd=REPO)
    address = f"127.0.0.1:{port}"
    try:
        yield {"address": address, "dashboard": f"http://127.0.0.1:{dash}", "env": env}
    finally:
        if ray.is_initialized():
            ray.shutdown()
        mp.undo()
        victims = [p for p in psutil.process_iter(["pid", "cmdline"])
                   if any(temp in (arg or "") for arg in (p.info["cmdline"] or []))]
        for p in victims:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(victims, timeout=30)
        shutil.rmtree(temp, ignore_errors=True)


def _run_in_thread(cfg_path: Path, out: Path, address: str):
    """run_rounds_ray in this process (the driver), in a thread, so the test can act while it runs."""
    from distill.config import load_config
    from distill.ray_runner import run_rounds_ray

    box: dict = {}

    def target():
        try:
            box["result"] = run_rounds_ray(load_config(cfg_path, ONE_ROUND), out, address=address, progress=False)
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            box["error"] = exc

    t = threading.Thread(target=target, daemon=True)
    t.start()
    return t, box


def test_ray_run_equals_local_run(smoke_run, ray_cluster, tmp_path):
    out = tmp_path / "ray"
    t0 = time.perf_counter()
    t, box = _run_in_thread(SMOKE, out, ray_cluster["address"])
    t.join(900)
    assert "error" not in box, box.get("error")
    (tmp_path / "ray-wall.txt").write_text(f"{time.perf_counter() - t0:.1f}")
    assert box["result"].computed == {"r0/contexts": 3, "r0/candidates": 3, "r0/pairs": 3, "r0/critique": 3}
    assert_same_corpus(smoke_run, out)


def test_worker_killed_mid_stage_is_retried(smoke_run, ray_cluster, tmp_path):
    from ray.util.state import list_actors

    out = tmp_path / "killed-worker"
    t, box = _run_in_thread(SMOKE, out, ray_cluster["address"])
    contexts = RunDir(out).stage(0, "contexts")
    deadline = time.time() + 600
    while time.time() < deadline and len(contexts.done_shards()) < 1:
        time.sleep(0.2)
    # the candidates actor is busy with shard 0 now: kill its process
    victim = None
    while time.time() < deadline and victim is None:
        for a in list_actors(filters=[("state", "=", "ALIVE")], detail=True):
            if a.class_name == "StageWorker" and "candidates" in (a.name or "") and a.pid:
                victim = a.pid
        time.sleep(0.2)
    assert victim, "no candidates actor found"
    os.kill(victim, signal.SIGKILL)
    t.join(900)
    assert "error" not in box, box.get("error")
    assert_same_corpus(smoke_run, out)  # no pair lost, none duplicated


def test_driver_killed_resumes(smoke_run, ray_cluster, tmp_path):
    out = tmp_path / "killed-driver"
    env = {**ray_cluster["env"], "RAY_ADDRESS": ray_cluster["address"]}
    proc = subprocess.Popen(distill_cmd("run", str(SMOKE), "--out", str(out), "--ray", "--quiet", "--set", "rounds=1"), cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    cand = RunDir(out).stage(0, "candidates")
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None and len(cand.done_shards()) < 1:
        time.sleep(0.2)
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = len(cand.done_shards())
    res = run_cli("run", str(SMOKE), "--out", str(out), "--ray", "--quiet", "--set", "rounds=1", env=env)
    assert "reused" in res.stdout and done_before >= 1
    assert_same_corpus(smoke_run, out)


def test_failing_shard_is_named_on_ray(smoke_run, ray_cluster, tmp_path):
    out = tmp_path / "failing"
    shutil.copytree(smoke_run, out)
    pairs = RunDir(out).stage(0, "pairs")
    pairs.write("part-00002", pairs.read("part-00002").drop(columns=["target"]), pairs.entry("part-00002")["input"])
    (out / "round-0" / "critique" / "part-00000.parquet").write_bytes(b"corrupt")  # must be recomputed
    env = {**ray_cluster["env"], "RAY_ADDRESS": ray_cluster["address"]}
    res = run_cli("run", str(SMOKE), "--out", str(out), "--ray", "--quiet", env=env, check=False)
    assert res.returncode == 1
    assert "round-0/critique/part-00002" in res.stderr and "target" in res.stderr
    crit = RunDir(out).stage(0, "critique")
    assert crit.is_done("part-00000", pairs.entry("part-00000")["sha256"])  # recomputed, valid again
    assert crit.is_done("part-00001", pairs.entry("part-00001")["sha256"])


def test_ray_job_submit(smoke_run, ray_cluster, tmp_path):
    out = tmp_path / "job"
    ray_bin = str(Path(sys.executable).parent / "ray")
    cmd = [ray_bin, "job", "submit", "--address", ray_cluster["dashboard"], "--working-dir", ".",
           "--", "distill", "run", "configs/smoke.yaml", "--ray", "--quiet", "--set", "rounds=1", "--out", str(out)]
    for _ in range(30):  # the head's job agent may still be starting
        proc = subprocess.run(cmd, cwd=REPO, env=ray_cluster["env"], capture_output=True, text=True, timeout=900)
        if "No available agent" not in proc.stderr + proc.stdout:
            break
        time.sleep(2)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "succeeded" in (proc.stdout + proc.stderr).lower()
    assert_same_corpus(smoke_run, out)
