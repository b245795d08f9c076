"""Round 0 on a real local Ray cluster (started on 127.0.0.1 by a fixture, stopped by PID after)."""

import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest

from conftest import REPO, SMOKE, distill_cmd, run_cli
from distill.store import RunDir
from test_run import assert_same_corpus

pytestmark = [pytest.mark.ray, pytest.mark.slow]

ray = pytest.importorskip("ray")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ray_cluster():
    """A head node on loopback with its own temp dir and 2 CPUs (a CI machine, a laptop: fewer CPUs than
    the stage pools ask for); every process under it is killed by PID after."""
    temp = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # short: Ray's socket paths must stay under 107 bytes
    port, dash = _free_port(), _free_port()
    # token authentication on, as on a real cluster: the head, this driver and every subprocess share the token
    auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16)}
    mp = pytest.MonkeyPatch()
    for k, v in auth.items():
        mp.setenv(k, v)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "RAY_USAGE_STATS_ENABLED": "0"}
    subprocess.run([str(Path(sys.executable).parent / "ray"), "start", "--head", "--node-ip-address=127.0.0.1",
                    f"--port={port}", "--num-cpus=2", "--include-dashboard=true", "--dashboard-host=127.0.0.1",
                    f"--dashboard-port={dash}", f"--temp-dir={temp}", "--disable-usage-stats"],
                   check=True, capture_output=True, env=env, cwd=REPO)
    address = f"127.0.0.1:{port}"
    try:
        yield {"address": address, "dashboard": f"http://127.0.0.1:{dash}", "env": env, "temp": temp}
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


def _env(cluster: dict) -> dict:
    return {**cluster["env"], "RAY_ADDRESS": cluster["address"]}


def _start_run(cluster: dict, out: Path, *extra: str) -> subprocess.Popen:
    """``distill run configs/smoke.yaml --ray`` as its own driver process. (Drivers are separate processes:
    Ray reads its token settings when it is first imported, before a fixture could set them.)"""
    log = open(out.parent / f"{out.name}.log", "w")
    return subprocess.Popen(distill_cmd("run", str(SMOKE), "--out", str(out), "--ray", "--quiet", *extra),
                            cwd=REPO, env=_env(cluster), stdout=log, stderr=subprocess.STDOUT)


def _stage_workers(cluster: dict) -> list[psutil.Process]:
    """The cluster's stage actor processes (Ray titles them ``ray::StageWorker...``), busy ones first."""
    roots = [p for p in psutil.process_iter(["cmdline"])
             if any(cluster["temp"] in (arg or "") for arg in (p.info["cmdline"] or []))]
    found = {}
    for root in roots:
        try:
            for child in root.children(recursive=True):
                title = " ".join(child.cmdline())
                if title.startswith("ray::StageWorker"):
                    found[child.pid] = (child, ".process" in title)
        except psutil.NoSuchProcess:
            continue
    return [p for p, busy in sorted(found.values(), key=lambda pb: not pb[1])]


def test_ray_run_equals_local_run(smoke_run, ray_cluster, tmp_path):
    """The whole smoke config (2 rounds: teacher, critics, Ray Train student, student generation) on the
    cluster gives the local run's corpus, round by round, and one student checkpoint per round."""
    out = tmp_path / "ray"
    t0 = time.perf_counter()
    res = run_cli("run", str(SMOKE), "--out", str(out), "--ray", "--quiet", env=_env(ray_cluster), timeout=900)
    (tmp_path / "ray-wall.txt").write_text(f"{time.perf_counter() - t0:.1f}")
    # 3 pools + CPU tasks ask for 4 CPUs, the head has 2: the run says so, and completes (pools start late,
    # close early)
    assert "ask for 4 CPUs, the cluster has 2" in res.stderr
    assert "reused" not in res.stdout or "reused 0" in res.stdout, res.stdout
    for r in (0, 1):
        assert_same_corpus(smoke_run, out, round_=r)
        assert (out / f"round-{r}" / "student" / "model.safetensors").is_file()
    assert not (out / "round-0" / "student" / "ray").exists()  # Ray Train's own folder is cleaned up


def test_worker_killed_mid_stage_is_retried(smoke_run, ray_cluster, tmp_path):
    out = tmp_path / "killed-worker"
    proc = _start_run(ray_cluster, out, "--set", "rounds=1")
    contexts = RunDir(out).stage(0, "contexts")
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None and len(contexts.done_shards()) < 1:
        time.sleep(0.2)
    # a stage actor is busy with a shard now (the teacher, most likely): kill its process
    victim = None
    while time.time() < deadline and proc.poll() is None and victim is None:
        workers = _stage_workers(ray_cluster)
        victim = workers[0] if workers else None
        time.sleep(0.1)
    assert victim is not None, "no stage actor found"
    victim.kill()
    assert proc.wait(900) == 0, (out.parent / f"{out.name}.log").read_text()[-3000:]
    assert_same_corpus(smoke_run, out)  # no pair lost, none duplicated
    assert not psutil.pid_exists(victim.pid) or victim.status() == psutil.STATUS_ZOMBIE


def test_driver_killed_resumes(smoke_run, ray_cluster, tmp_path):
    out = tmp_path / "killed-driver"
    env = _env(ray_cluster)
    proc = _start_run(ray_cluster, out, "--set", "rounds=1")
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
    res = run_cli("run", str(SMOKE), "--out", str(out), "--ray", "--quiet", env=_env(ray_cluster), check=False)
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


def test_unreachable_address_is_one_line_exit_2(tmp_path):
    """No cluster behind the address: one line naming it, exit 2, within seconds (ray.init alone retries
    for minutes)."""
    port = _free_port()
    t0 = time.perf_counter()
    res = run_cli("run", str(SMOKE), "--out", str(tmp_path / "run"), "--ray", "--address", f"127.0.0.1:{port}",
                  check=False, timeout=120)
    assert res.returncode == 2 and time.perf_counter() - t0 < 60
    assert res.stderr.strip().splitlines() == [res.stderr.strip()]
    assert f"cannot reach the Ray cluster at 127.0.0.1:{port}" in res.stderr


def test_run_folder_inside_a_jobs_working_dir_copy_is_flagged(tmp_path, capsys):
    from distill.ray_runner import _warn_if_ephemeral

    _warn_if_ephemeral(RunDir(tmp_path / "runs" / "smoke"))
    assert capsys.readouterr().err == ""
    inside = tmp_path / "session_1" / "runtime_resources" / "working_dir_files" / "_ray_pkg_ab12" / "runs" / "smoke"
    _warn_if_ephemeral(RunDir(inside))
    err = capsys.readouterr().err
    assert "inside Ray's temporary copy" in err and str(inside) in err and len(err.strip().splitlines()) == 1
