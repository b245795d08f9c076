"""End to end, on the real CLI with tiny real models: run, resume after SIGKILL, select, stage --explain."""

import json
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest

from conftest import REPO, SMOKE, distill_cmd, run_cli
from distill.config import load_config
from distill.store import RunDir

pytestmark = pytest.mark.slow


def corpus(run: Path, task: str, round_: int | str = 0) -> pd.DataFrame:
    """The kept pairs of ``task`` in round ``round_`` (``"all"``: every round), sorted by id."""
    pattern = "round-*" if round_ == "all" else f"round-{round_}"
    parts = sorted(run.glob(f"{pattern}/corpus/{task}/part-*.parquet"))
    df = pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True)
    return df.sort_values("id").reset_index(drop=True)


def critique(run: Path) -> pd.DataFrame:
    parts = sorted((run / "round-0" / "critique").glob("part-*.parquet"))
    return pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True).sort_values("pair_id").reset_index(drop=True)


def assert_same_corpus(a: Path, b: Path, round_: int | str = 0) -> None:
    for task in ("paraphrase", "summary"):
        x, y = corpus(a, task, round_), corpus(b, task, round_)
        assert list(x["id"]) == list(y["id"]), f"{task}: kept pairs differ"
        assert list(x["source"]) == list(y["source"]) and list(x["target"]) == list(y["target"])
        pd.testing.assert_frame_equal(x.drop(columns=["seed"]), y.drop(columns=["seed"]), check_exact=False, atol=1e-5)


def test_smoke_run_writes_both_corpora_and_a_funnel(smoke_run):
    cfg = load_config(SMOKE)
    funnel = json.loads((smoke_run / "round-0" / "funnel.json").read_text())
    for task in ("paraphrase", "summary"):
        df = corpus(smoke_run, task)
        assert len(df) > 0, f"no {task} pairs kept"
        f = funnel["tasks"][task]
        assert f["kept"] == len(df)
        assert f["pairs_in"] == f["kept"] + sum(f["removed"].values())  # nothing unaccounted for
        assert (df["nli_forward"] >= cfg.critique.nli.threshold).all()
        assert (df["numbers_match"] == 1.0).all()
        assert {"id", "task", "source", "target", "context", "round", "generator", "critic", "seed"} <= set(df.columns)
        assert (df["generator"] == "tiny-gpt2").all() and (df["critic"] == "tiny-nli").all()
    para, summ = corpus(smoke_run, "paraphrase"), corpus(smoke_run, "summary")
    assert para["length_ratio"].between(0.8, 1.5).all() and (para["diversity_rougeL"] <= 0.75).all()
    assert (para["nli_reverse"] >= 0.75).all()
    assert (summ["length_ratio"] < 0.8).all()
    # every critic had work: the funnel shows removals by the cheap critics and by NLI
    removed = funnel["tasks"]["paraphrase"]["removed"]
    assert removed["length"] > 0 and removed["nli"] > 0
    # the run folder is what the README says it is
    assert (smoke_run / "config.yaml").exists()
    for stage in ("contexts", "candidates", "pairs", "critique"):
        manifest = json.loads((smoke_run / "round-0" / stage / "_manifest.json").read_text())
        assert sorted(manifest["shards"]) == ["part-00000", "part-00001", "part-00002"]


def test_two_rounds_two_students_and_round1_pairs(smoke_run):
    for r in (0, 1):
        student = smoke_run / f"round-{r}" / "student"
        assert (student / "model.safetensors").is_file() and (student / "tokenizer.json").is_file()
        metrics = json.loads((student / "metrics.json").read_text())
        assert metrics["train_pairs"] > 0 and metrics["train_loss"] == metrics["train_loss"]  # not NaN
    assert not list(smoke_run.glob("round-*/student/*.bin"))  # safetensors only
    r1 = pd.concat([pd.read_parquet(p) for p in (smoke_run / "round-1" / "critique").glob("part-*.parquet")])
    assert len(r1) > 0 and set(r1["round"]) == {1} and set(r1["generator"]) == {"student:round-0"}
    assert set(r1["task"]) == {"paraphrase", "summary"}
    funnel = json.loads((smoke_run / "round-1" / "funnel.json").read_text())
    # the student's pairs pass the critics, for both tasks (the bar; smoke keeps a few paraphrases)
    assert funnel["round"] == 1 and funnel["kept"]["paraphrase"] > 0 and funnel["kept"]["summary"] > 0
    for task in ("paraphrase", "summary"):
        kept = corpus(smoke_run, task, 1)
        assert len(kept) == funnel["kept"][task] and set(kept["round"]) == {1}
    # round 1's records are held out from round 0's
    ctx0 = set(pd.concat([pd.read_parquet(p) for p in (smoke_run / "round-0" / "contexts").glob("*.parquet")])["record_id"])
    ctx1 = set(pd.concat([pd.read_parquet(p) for p in (smoke_run / "round-1" / "contexts").glob("*.parquet")])["record_id"])
    assert ctx0 and ctx1 and not ctx0 & ctx1
    # the student answers on the command line
    proc = run_cli("generate", str(smoke_run / "round-1" / "student"), "Police said 12 people were hurt.", "-n", "2")
    assert len(proc.stdout.strip().splitlines()) == 2


def test_rerun_of_a_finished_run_computes_nothing(smoke_run, tmp_path):
    run = tmp_path / "copy"
    shutil.copytree(smoke_run, run)
    before = {p: p.stat().st_mtime_ns for p in run.glob("round-0/*/part-*.parquet")}
    proc = run_cli("run", str(SMOKE), "--out", str(run), "--quiet")
    assert "computed 0 shard(s), reused 21" in proc.stdout  # 4 stages x 3 shards in round 0, 3 x 3 in round 1
    assert before == {p: p.stat().st_mtime_ns for p in run.glob("round-0/*/part-*.parquet")}
    assert_same_corpus(smoke_run, run)


def test_killed_run_resumes_to_the_same_corpus(smoke_run, tmp_path):
    run = tmp_path / "killed"
    one_round = ("--set", "rounds=1")  # round 0 is the same whatever the number of rounds
    proc = subprocess.Popen(distill_cmd("run", str(SMOKE), "--out", str(run), "--quiet", *one_round), cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    cand = RunDir(run).stage(0, "candidates")
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None and len(cand.done_shards()) < 1:
        time.sleep(0.2)
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)  # mid-stage: candidates shard 1 is being generated
    proc.wait()
    assert not (run / "round-0" / "funnel.json").exists()
    out = run_cli("run", str(SMOKE), "--out", str(run), "--quiet", *one_round)
    assert "reused" in out.stdout
    assert_same_corpus(smoke_run, run)


def test_truncated_shard_is_recomputed_not_read(smoke_run, tmp_path):
    run = tmp_path / "truncated"
    shutil.copytree(smoke_run, run)
    shard = run / "round-0" / "candidates" / "part-00001.parquet"
    shard.write_bytes(shard.read_bytes()[:200])
    proc = run_cli("run", str(SMOKE), "--out", str(run), "--quiet")
    # only the candidates shard is recomputed: it comes out byte-identical (row seeds), so the pairs and
    # critique shards made from it still match their recorded input checksum and are reused
    assert "computed 1 shard(s), reused 20" in proc.stdout
    assert RunDir(run).stage(0, "candidates").is_done("part-00001", RunDir(run).stage(0, "contexts").entry("part-00001")["sha256"])
    assert_same_corpus(smoke_run, run)


def test_resume_with_another_config_is_refused(smoke_run, tmp_path):
    run = tmp_path / "other"
    shutil.copytree(smoke_run, run)
    proc = run_cli("run", str(SMOKE), "--out", str(run), "--set", "seed=7", check=False)
    assert proc.returncode == 2 and "made with another config (seed: 0 -> 7)" in proc.stderr


def test_select_rethresholds_without_a_model(smoke_run, tmp_path):
    run = tmp_path / "select"
    shutil.copytree(smoke_run, run)
    base = corpus(run, "paraphrase")
    # no model may load: point the tiny-model cache at an empty folder, so any load would have to build
    env = {"HF_HUB_OFFLINE": "1", "DISTILL_CACHE": str(tmp_path / "empty-cache"), "PATH": "/usr/bin:/bin"}
    proc = run_cli("select", str(run), "--set", "critique.nli.threshold=0.9", env=env)
    assert not (tmp_path / "empty-cache").exists()
    strict = corpus(run, "paraphrase")
    assert set(strict["id"]) <= set(base["id"])
    assert (strict["nli_forward"] >= 0.9).all() and (strict["nli_reverse"] >= 0.9).all()
    assert json.loads((run / "round-0" / "funnel.json").read_text())["thresholds"]["nli"]["threshold"] == 0.9
    # the printed funnel: a column per task, a row per step; round 0's "kept" row is the new corpus's size
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("round 0:") and "teacher candidates" in lines[0]
    header = next(line for line in lines if "paraphrase" in line)
    kept = next(line for line in lines if line.strip("│ ").startswith("kept")).strip("│ ").split("│")
    cols = [c.strip() for c in header.strip("┃ ").split("┃")]
    assert int(kept[cols.index("paraphrase")]) == len(strict)
    # back to the run's own thresholds: the original corpus again, exactly
    run_cli("select", str(run), env=env)
    assert_same_corpus(smoke_run, run)


def test_select_refuses_changing_models(smoke_run):
    proc = run_cli("select", str(smoke_run), "--set", "critique.nli.model=other", check=False)
    assert proc.returncode == 2 and "only changes thresholds" in proc.stderr


def test_stage_explain_on_a_shard_of_the_run(smoke_run, tmp_path):
    shard = smoke_run / "round-0" / "pairs" / "part-00000.parquet"
    proc = run_cli("stage", "critique", "--config", str(SMOKE), "--input", str(shard), "--output", str(tmp_path),
                   "--limit", "30", "--explain")
    out = pd.read_parquet(tmp_path / "part-00000.parquet")
    assert len(out) == 30 and "reject" in out.columns
    for reason in set(out["reject"]) - {""}:
        assert reason in proc.stdout
    assert ("kept" in proc.stdout) == (out["reject"] == "").any()


def test_stage_rejects_a_shard_of_the_wrong_stage(smoke_run, tmp_path):
    shard = smoke_run / "round-0" / "contexts" / "part-00000.parquet"
    proc = run_cli("stage", "critique", "--config", str(SMOKE), "--input", str(shard), "--output", str(tmp_path),
                   check=False)
    assert proc.returncode == 2 and "missing column(s)" in proc.stderr and "part-00000.parquet" in proc.stderr
    assert not (tmp_path / "part-00000.parquet").exists()


def test_a_failing_shard_is_named_and_the_others_are_kept(smoke_run, tmp_path):
    run = tmp_path / "failing"
    shutil.copytree(smoke_run, run)
    pairs = RunDir(run).stage(0, "pairs")
    bad = pairs.read("part-00001").drop(columns=["source"])  # a shard the critics cannot read
    pairs.write("part-00001", bad, pairs.entry("part-00001")["input"])
    proc = run_cli("run", str(SMOKE), "--out", str(run), "--quiet", check=False)
    assert proc.returncode == 1
    assert "round-0/critique/part-00001" in proc.stderr and "source" in proc.stderr
    crit = RunDir(run).stage(0, "critique")
    assert crit.is_done("part-00000", pairs.entry("part-00000")["sha256"])
    assert crit.is_done("part-00002", pairs.entry("part-00002")["sha256"])


def test_progress_off_a_terminal_is_one_line_per_shard(capsys):
    """In a Ray job's log or CI (stdout is not a terminal) progress is plain lines, not a live bar."""
    from distill.runner import _Progress

    with _Progress(True, 1) as bar:
        task = bar.add("critique", 2)
        bar.advance(task)
        bar.advance(task)
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(" (")[0] for line in lines] == ["round 1 critique: 1/2 shards", "round 1 critique: 2/2 shards"]
    with _Progress(False, 0) as quiet:
        quiet.advance(quiet.add("contexts", 3))
    assert capsys.readouterr().out == ""
