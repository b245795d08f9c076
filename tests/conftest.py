"""Shared test set-up: offline Hugging Face, the tiny models' cache, the smoke run built once."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "configs" / "smoke.yaml"


def distill_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "distill.cli", *args]


def run_cli(*args: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(distill_cmd(*args), capture_output=True, text=True, cwd=REPO, **kw)
    if check and proc.returncode != 0:
        raise AssertionError(f"distill {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def one_thread():
    """Small models run faster single-threaded, and do not stall when the machine is busy."""
    from distill.runtime import torch_threads

    with torch_threads(1):
        yield


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory) -> Path:
    """``distill run configs/smoke.yaml`` once, through the real CLI; the tests only read it."""
    out = tmp_path_factory.mktemp("smoke") / "run"
    t0 = time.perf_counter()
    proc = run_cli("run", str(SMOKE), "--out", str(out), "--quiet")
    (out / "cli-output.txt").write_text(proc.stdout + f"\nwall {time.perf_counter() - t0:.1f} s\n")
    return out
