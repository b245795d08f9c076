"""Export of a hand-made run folder as a Hub dataset: the folder loads with ``datasets``, the card parses,
the push makes one commit through a (fake) Hub client with retries, and the token is written nowhere."""

import json
import logging
import os
import shutil
from pathlib import Path
from types import SimpleNamespace

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pandas as pd
import pyarrow.parquet as pq
import pytest

from distill.config import ConfigError, dump, validate
from distill.export import assign_splits, export_run, hash_unit, size_category, split_key
from distill.store import RunDir, atomic_write_text

TOKEN = "hf_FAKEtokenDoNotLeak0123456789abcdef"
N_RECORDS = 60
CORPUS_COLUMNS = ["id", "task", "source", "target", "context", "round", "length_ratio", "numbers_match",
                  "diversity_rougeL", "nli_forward", "nli_reverse", "generator", "critic", "seed"]
SUBJECTS = ["The mayor", "The company", "A local school", "The national team", "The museum", "Police"]
VERBS = [("opened", "has opened"), ("announced", "made public"), ("closed", "shut down"), ("won", "secured")]
OBJECTS = ["a new bridge", "its yearly results", "the main road", "the regional cup", "an exhibition on trade"]


def _pair(k):
    s, (v, v2), o = SUBJECTS[k % 6], VERBS[k % 4], OBJECTS[k % 5]
    day = ["Monday", "Tuesday", "Friday"][k % 3]
    para = (f"{s} {v} {o} on {day}.", f"On {day}, {s.lower()} {v2} {o}.")
    summ = (f"{s} {v} {o} on {day}, officials said in a statement issued late in the evening.", f"{s} {v} {o}.")
    return para, summ


def make_run(root: Path, rounds=(0,), n_passages=2) -> Path:
    """A run folder with ``N_RECORDS`` records over two shards; each record has a kept paraphrase pair,
    a kept summary pair and a rejected paraphrase pair."""
    cfg = validate({"name": "exp-test", "seed": 7, "contexts": {"n_passages": n_passages, "passages_per_shard": 1},
                    "teacher": {"model": "tiny-gpt2"}, "critique": {"nli": {"model": "tiny-nli"}}})
    root.mkdir(parents=True, exist_ok=True)
    atomic_write_text(root / "config.yaml", dump(cfg))
    run = RunDir(root)
    for r in rounds:
        for shard_i, shard in enumerate(["part-00000", "part-00001"]):
            rows = []
            for k in range(shard_i, N_RECORDS, 2):
                rec = f"r{r}-{shard_i}-{k:03d}-00"
                (ps, pt), (ss, st) = _pair(k)
                base = {"record_id": rec, "context": "(Reuters) --", "round": r, "generator": "tiny-gpt2",
                        "critic": "tiny-nli", "numbers_match": 1.0, "nli_forward": 0.91, "source_idx": 0,
                        "target_idx": 1}
                rows.append({**base, "pair_id": f"{rec}:paraphrase:0-1", "task": "paraphrase", "source": ps,
                             "target": pt, "length_ratio": len(pt) / len(ps), "diversity_rougeL": 0.6,
                             "nli_reverse": 0.9, "reject": ""})
                rows.append({**base, "pair_id": f"{rec}:summary:2-3", "task": "summary", "source": ss, "target": st,
                             "length_ratio": len(st) / len(ss), "diversity_rougeL": None, "nli_reverse": None,
                             "reject": ""})
                rows.append({**base, "pair_id": f"{rec}:paraphrase:1-4", "task": "paraphrase", "source": ps,
                             "target": ps + " Really.", "length_ratio": 1.1, "diversity_rougeL": 0.95,
                             "nli_forward": None, "nli_reverse": None, "reject": "diversity_too_similar"})
            crit = pd.DataFrame(rows)
            entry = run.stage(r, "critique").write(shard, crit, "sha-of-pairs")
            for task in ("paraphrase", "summary"):
                kept = crit[(crit["task"] == task) & (crit["reject"] == "")].rename(columns={"pair_id": "id"})
                kept = kept.assign(seed=cfg.seed)[CORPUS_COLUMNS]
                run.stage(r, f"corpus/{task}").write(shard, kept, entry["sha256"])
        funnel = {"round": r, "shards": 2, "records": N_RECORDS, "candidates": 4 * N_RECORDS,
                  "tasks": {"paraphrase": {"pairs_in": 2 * N_RECORDS, "kept": N_RECORDS,
                                           "removed": {"dedup": 0, "diversity": N_RECORDS, "length": 0, "nli": 0,
                                                       "numbers": 0}},
                            "summary": {"pairs_in": N_RECORDS, "kept": N_RECORDS,
                                        "removed": {"dedup": 0, "diversity": 0, "length": 0, "nli": 0,
                                                    "numbers": 0}}},
                  "kept": {"paraphrase": N_RECORDS, "summary": N_RECORDS},
                  "thresholds": cfg.critique.model_dump(mode="json", exclude={"resources"})}
        atomic_write_text(root / f"round-{r}" / "funnel.json", json.dumps(funnel, indent=2, sort_keys=True))
    return root


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("runs") / "exp-test", rounds=(0, 1))


@pytest.fixture(scope="module")
def exported(run_dir, tmp_path_factory):
    # the embedding measure is tested in test_report.py; here the report skips it (fast, same export logic)
    return export_run(run_dir, dry_run_dir=tmp_path_factory.mktemp("out") / "dataset", with_rejected=True,
                      embedding_model=None)


def _all_files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


# ------------------------------------------------------------------------------------------------


def test_split_and_size_helpers():
    assert split_key("p01-002-03:paraphrase:4-7") == "p01-002-03"
    assert split_key("p01-002-03:paraphrase:4-7", "pair") == "p01-002-03:paraphrase:4-7"
    assert 0.0 <= hash_unit("x") < 1.0 and hash_unit("x") == hash_unit("x")
    ids = [f"rec{i}:paraphrase:0-1" for i in range(2000)] + [f"rec{i}:summary:0-1" for i in range(2000)]
    splits = assign_splits(ids, 0.05)
    share = (splits == "validation").mean()
    assert 0.03 < share < 0.07
    assert (splits[:2000] == splits[2000:]).all()  # both tasks of one record: same split
    assert [size_category(n) for n in (0, 999, 1000, 54_321, 4_200_000)] == [
        "n<1K", "n<1K", "1K<n<10K", "10K<n<100K", "1M<n<10M"]
    with pytest.raises(ConfigError):
        assign_splits(ids, 1.5)


def test_dry_run_folder_loads_with_datasets(run_dir, exported, tmp_path):
    from datasets import load_dataset

    assert isinstance(exported, Path)
    files = _all_files(exported)
    assert "README.md" in files and "figures/round-0-funnel.png" in files and "figures/round-1-lengths.png" in files
    assert not any(name.endswith("report.json") for name in files)
    for task in ("paraphrase", "summary"):
        ds = load_dataset(str(exported), task, cache_dir=str(tmp_path / "hf"))
        assert set(ds) == {"train", "validation"}
        feats = ds["train"].features
        assert list(feats) == CORPUS_COLUMNS
        assert {k: feats[k].dtype for k in ("id", "source", "round", "nli_forward", "seed")} == {
            "id": "string", "source": "string", "round": "int64", "nli_forward": "float64", "seed": "int64"}
        # 2 rounds x N_RECORDS kept pairs; validation = exactly the pairs whose record hashes below 5%
        want_val = sorted(f"r{r}-{k % 2}-{k:03d}-00" for r in (0, 1) for k in range(N_RECORDS)
                          if hash_unit(f"r{r}-{k % 2}-{k:03d}-00") < 0.05)
        assert ds["train"].num_rows + ds["validation"].num_rows == 2 * N_RECORDS
        assert sorted(i.rsplit(":", 2)[0] for i in ds["validation"]["id"]) == want_val
        assert set(ds["train"]["task"]) == {task} and set(ds["train"]["round"]) == {0, 1}
        assert set(ds["train"]["seed"]) == {7} and set(ds["train"]["generator"]) == {"tiny-gpt2"}
    rejected = load_dataset(str(exported), "rejected", cache_dir=str(tmp_path / "hf"))
    assert list(rejected) == ["train"] and rejected["train"].num_rows == 2 * N_RECORDS
    assert set(rejected["train"]["reject"]) == {"diversity_too_similar"}
    assert "reject" in rejected["train"].features and rejected["train"].features["reject"].dtype == "string"
    assert all(x is None for x in rejected["train"]["nli_forward"])  # never scored -> null, not 0


def test_dataset_card_metadata_and_body(exported):
    from huggingface_hub import DatasetCard

    card = DatasetCard.load(exported / "README.md")
    data = card.data.to_dict()
    assert data["license"] == "other"
    assert data["language"] == ["en"]
    assert data["size_categories"] == ["n<1K"]  # 240 kept pairs
    assert set(data["task_categories"]) >= {"summarization", "text2text-generation"}
    assert data["pretty_name"].startswith("distill exp-test")
    configs = {c["config_name"]: c for c in data["configs"]}
    assert set(configs) == {"paraphrase", "summary", "rejected"}
    assert configs["paraphrase"]["data_files"] == [
        {"split": "train", "path": "data/paraphrase/train-*.parquet"},
        {"split": "validation", "path": "data/paraphrase/validation-*.parquet"}]
    body = card.text
    assert "@inproceedings{jung-etal-2024-impossible" in body and "Low-quality Model" in body
    assert "`tiny-gpt2`" in body and "`tiny-nli`" in body  # teacher (generator) and critic
    assert "```yaml\nname: exp-test" in body  # config snapshot
    assert "### Round 1" in body and "removed by diversity" in body  # funnel per round
    assert "paper's figure (Jung et al. 2024, Table 1): DIMPLE (4.2M pairs)" in body
    for link in ("figures/round-0-funnel.png", "figures/round-0-nli_forward.png"):
        assert f"({link})" in body and (exported / link).is_file()


def test_dry_run_is_deterministic_and_replaces_an_earlier_export(run_dir, exported, tmp_path):
    again = export_run(run_dir, dry_run_dir=exported, with_rejected=True, embedding_model=None)  # same folder: replaced
    assert again == exported
    other = export_run(run_dir, dry_run_dir=tmp_path / "second", with_rejected=True, embedding_model=None)
    for rel in ("data/paraphrase/train-00000-of-00001.parquet", "data/summary/validation-00000-of-00001.parquet"):
        assert pq.read_table(exported / rel).equals(pq.read_table(other / rel))
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="holds more than an earlier export"):
        export_run(run_dir, dry_run_dir=tmp_path / "busy", embedding_model=None)
    assert (tmp_path / "busy" / "notes.txt").read_text() == "mine"


# ------------------------------------------------------------------------------------------------
# incomplete run folders and user errors


def test_incomplete_run_folder_names_the_round_and_stage(tmp_path):
    run = make_run(tmp_path / "a")
    (run / "round-0" / "corpus" / "summary" / "_manifest.json").unlink()
    with pytest.raises(ConfigError) as e:
        export_run(run, dry_run_dir=tmp_path / "out")
    assert str(e.value) == f"{run}: round-0/corpus/summary has no finished shards; run 'distill run' first"
    assert not (tmp_path / "out").exists()

    run = make_run(tmp_path / "b", n_passages=3)  # the config calls for 3 shards, 2 exist
    with pytest.raises(ConfigError, match=r"round-0/critique has 2 of 3 shards finished \(missing part-00002\)"):
        export_run(run, dry_run_dir=tmp_path / "out")

    run = make_run(tmp_path / "c", rounds=(0, 1))
    (run / "round-1" / "funnel.json").unlink()
    with pytest.raises(ConfigError, match=r"round-1/funnel.json is missing"):
        export_run(run, dry_run_dir=tmp_path / "out")

    run = make_run(tmp_path / "d")
    shard = run / "round-0" / "corpus" / "paraphrase" / "part-00001.parquet"
    shard.write_bytes(shard.read_bytes()[:-10])  # truncated: not a finished shard
    with pytest.raises(ConfigError, match=r"round-0/corpus/paraphrase lacks finished shards part-00001") as e:
        export_run(run, dry_run_dir=tmp_path / "out")
    assert "\n" not in str(e.value)

    with pytest.raises(ConfigError, match="config.yaml is missing"):
        export_run(tmp_path, dry_run_dir=tmp_path / "out")
    with pytest.raises(ConfigError, match="nothing to do"):
        export_run(run)
    with pytest.raises(ConfigError, match="expected OWNER/NAME"):
        export_run(run, repo_id="no-slash", token=TOKEN)


# ------------------------------------------------------------------------------------------------
# pushing through a fake Hub client


class FakeHub:
    """Records calls; ``upload_folder`` fails with ``errors`` first, then commits (keeps the folder's files)."""

    def __init__(self, errors=()):
        self.errors = list(errors)
        self.calls = []
        self.commits = []

    def create_repo(self, repo_id, **kw):
        self.calls.append(("create_repo", repo_id, kw))
        return f"https://huggingface.co/datasets/{repo_id}"

    def upload_folder(self, **kw):
        self.calls.append(("upload_folder", kw["repo_id"], kw))
        if self.errors:
            raise self.errors.pop(0)
        self.commits.append(_all_files(Path(kw["folder_path"])))
        return SimpleNamespace(oid="c0ffee", commit_url=f"https://huggingface.co/datasets/{kw['repo_id']}/commit/c0ffee")

    def create_tag(self, repo_id, **kw):
        self.calls.append(("create_tag", repo_id, kw))


def http_error(status):
    from huggingface_hub.errors import HfHubHTTPError

    response = SimpleNamespace(status_code=status, headers={}, request=None)
    return HfHubHTTPError(f"{status} Server Error", response=response)


def test_push_retries_a_transient_error_then_commits_once_and_never_leaks_the_token(run_dir, capsys, caplog):
    caplog.set_level(logging.DEBUG)
    hub = FakeHub(errors=[http_error(503)])
    slept = []
    url = export_run(run_dir, repo_id="someone/lemonade", private=True, tag="v1", with_rejected=True, token=TOKEN,
                     api=hub, sleep=slept.append, backoff_s=0.5, embedding_model=None)
    assert url == "https://huggingface.co/datasets/someone/lemonade/commit/c0ffee"
    assert [c[0] for c in hub.calls] == ["create_repo", "upload_folder", "upload_folder", "create_tag"]
    _, repo, kw = hub.calls[0]
    assert repo == "someone/lemonade" and kw["repo_type"] == "dataset" and kw["exist_ok"] is True
    assert kw["private"] is True and kw["token"] == TOKEN
    assert hub.calls[1][2]["repo_type"] == "dataset"
    assert len(hub.commits) == 1 and slept == [0.5]  # one retry after backoff, exactly one commit
    assert hub.calls[3][2]["tag"] == "v1" and hub.calls[3][2]["revision"] == "c0ffee"
    files = hub.commits[0]
    assert "README.md" in files and "data/rejected/train-00000-of-00001.parquet" in files
    assert "data/paraphrase/validation-00000-of-00001.parquet" in files
    for name, content in files.items():
        assert TOKEN.encode() not in content, name
    for path in Path(run_dir).rglob("*"):
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), path
    out = capsys.readouterr()
    assert TOKEN not in out.out + out.err
    assert TOKEN not in caplog.text and "retrying" in caplog.text


def test_push_takes_the_token_from_hf_token_and_retries_connection_errors(run_dir, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    hub = FakeHub(errors=[ConnectionError("connection reset"), http_error(429)])
    slept = []
    export_run(run_dir, repo_id="someone/lemonade", api=hub, sleep=slept.append, backoff_s=1.0,
               embedding_model=None)
    assert slept == [1.0, 2.0] and len(hub.commits) == 1  # exponential backoff
    assert all(c[2]["token"] == TOKEN for c in hub.calls)
    assert "create_tag" not in [c[0] for c in hub.calls]


def test_push_does_not_retry_a_refusal(run_dir):
    hub = FakeHub(errors=[http_error(401)])
    with pytest.raises(ConfigError, match=r"refused access to someone/lemonade \(HTTP 401\)") as e:
        export_run(run_dir, repo_id="someone/lemonade", token=TOKEN, api=hub, sleep=lambda s: None,
                   embedding_model=None)
    assert TOKEN not in str(e.value)
    assert [c[0] for c in hub.calls] == ["create_repo", "upload_folder"] and not hub.commits


def test_no_token_is_a_one_line_error_before_any_work(run_dir, monkeypatch):
    import huggingface_hub

    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    hub = FakeHub()
    with pytest.raises(ConfigError) as e:
        export_run(run_dir, repo_id="someone/lemonade", api=hub)
    assert str(e.value) == "no Hugging Face token: set HF_TOKEN or run 'huggingface-cli login'"
    assert hub.calls == []


def test_export_of_a_run_with_one_task_and_without_rejected(tmp_path):
    from huggingface_hub import DatasetCard

    run = make_run(tmp_path / "one")
    cfg_text = (run / "config.yaml").read_text().replace("- paraphrase\n- summary\n", "- summary\n")
    (run / "config.yaml").write_text(cfg_text)
    shutil.rmtree(run / "round-0" / "corpus" / "paraphrase")
    out = export_run(run, dry_run_dir=tmp_path / "ds", embedding_model=None)
    data = DatasetCard.load(out / "README.md").data.to_dict()
    assert [c["config_name"] for c in data["configs"]] == ["summary"]
    assert data["task_categories"] == ["summarization", "text-generation"]
    assert not (out / "data" / "paraphrase").exists() and not (out / "data" / "rejected").exists()


def test_the_real_client_in_offline_mode_is_a_user_error_without_network(run_dir):
    from huggingface_hub import constants

    if not constants.HF_HUB_OFFLINE:
        pytest.skip("huggingface_hub was imported without HF_HUB_OFFLINE=1")
    with pytest.raises(ConfigError, match="HF_HUB_OFFLINE is set"):
        export_run(run_dir, repo_id="someone/lemonade", token=TOKEN, embedding_model=None)
