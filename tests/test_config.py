"""Config loading: typed defaults, dotted overrides, one-line errors with exit code 2."""

import subprocess
import sys

import pytest

from distill.config import ConfigError, diff, load_config

BAD = [
    ("name: x\ncritique:\n  nli:\n    treshold: 0.8\n", "unknown key 'critique.nli.treshold'", "threshold"),
    ("name: x\ncandidates:\n  k: -3\n", "candidates.k=-3 is not allowed", "greater than or equal to 2"),
    ("name: x\ndomain: law\n", "domain='law' is not allowed", "'news' or 'bio'"),
    ("critique: {}\n", "missing required key 'name'", "name"),
    ("name: [x\n", "is not valid YAML", "line"),
    ("name: x\ntasks: []\n", "tasks must name at least one", "paraphrase"),
    ("name: x\ncritique:\n  length:\n    paraphrase_min: 2.0\n", "paraphrase_min must not exceed", "paraphrase_max"),
]


@pytest.mark.parametrize("body,expected,allowed", BAD)
def test_bad_config_one_line(tmp_path, body, expected, allowed):
    path = tmp_path / "bad.yaml"
    path.write_text(body)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    msg = str(err.value)
    assert "\n" not in msg
    assert str(path) in msg and expected in msg and allowed in msg


def test_shipped_configs_validate_with_paper_defaults():
    news = load_config("configs/news.yaml")
    assert news.teacher.model == "gpt2-xl" and news.critique.nli.model == "alisawuffles/roberta-large-wanli"
    assert (news.candidates.k, news.candidates.temperature, news.candidates.top_p) == (100, 0.7, 0.9)
    assert news.critique.nli.threshold == 0.75 and news.critique.diversity.max_rougeL == 0.75
    assert load_config("configs/bio.yaml").teacher.model == "microsoft/BioGPT-Large"
    assert load_config("configs/smoke.yaml").teacher.trust_remote_code is False  # off unless turned on


def test_dotted_overrides_are_typed_and_checked():
    cfg = load_config("configs/smoke.yaml", ["critique.nli.threshold=0.9", "candidates.k=5"])
    assert cfg.critique.nli.threshold == 0.9 and cfg.candidates.k == 5
    with pytest.raises(ConfigError, match="candidates.k='abc'"):
        load_config("configs/smoke.yaml", ["candidates.k=abc"])
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        load_config("configs/smoke.yaml", ["candidates.k"])


def test_diff_names_changed_keys():
    a = load_config("configs/smoke.yaml")
    b = load_config("configs/smoke.yaml", ["seed=3"])
    assert diff(a, b) == ["seed: 0 -> 3"]


@pytest.mark.parametrize("args", [["run", "BAD"], ["select", "RUNDIR"], ["stage", "critique", "--config", "BAD", "--output", "o", "--input", "x.parquet"]])
def test_cli_bad_input_exits_2_with_one_line(tmp_path, args):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ncandidates:\n  kk: 3\n")
    args = [str(bad) if a == "BAD" else str(tmp_path) if a == "RUNDIR" else a for a in args]
    out = tmp_path / "o"
    proc = subprocess.run([sys.executable, "-m", "distill.cli", *args], capture_output=True, text=True, cwd=tmp_path,
                          env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert "Traceback" not in proc.stderr
    assert not out.exists()  # nothing written on bad input
