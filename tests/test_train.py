"""The student: control codes, training (overfit, checkpoint, resume, OOM split), student sampling, Ray Train.

Tiny models only (``tiny-t5``: d_model 64, 2+2 layers); everything runs on CPU with one torch thread
(on a shared 2-core machine two threads are ~100x slower for these tiny matrices).
"""

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

os.environ["HF_HUB_OFFLINE"] = "1"

from distill.config import ModelConfig, ResourcesConfig, StudentGenConfig, TrainConfig  # noqa: E402
from distill.records import PAIR_COLUMNS  # noqa: E402
from distill.stages import train as T  # noqa: E402
from distill.stages.student import (StudentStage, best_paraphrase_per_source, generate,  # noqa: E402
                                    sample_seq2seq_split_on_oom)

PAIRS = [  # (record, task, source, target)
    ("p0000001-s01", "paraphrase", "The mayor opened the new bridge on Monday.",
     "On Monday the new bridge was opened by the mayor."),
    ("p0000002-s01", "paraphrase", "Rain fell over the city for three days.", "For three days it rained over the city."),
    ("p0000003-s02", "paraphrase", "The company hired forty new workers last year.",
     "Last year the firm took on forty new employees."),
    ("p0000004-s01", "paraphrase", "Scientists found a new species of frog.",
     "A new frog species was discovered by scientists."),
    ("p0000005-s03", "summary", "The council voted to raise taxes after a long debate on Tuesday evening.",
     "The council voted to raise taxes."),
    ("p0000006-s01", "summary", "A fire destroyed two houses in the village before firefighters arrived at dawn.",
     "A fire destroyed two houses."),
]
VAL_PAIRS = [  # records that the hash holds out at validation_fraction=0.3
    ("p0000008-s01", "paraphrase", "The museum will reopen in spring after repairs.",
     "After repairs, the museum is set to reopen in spring."),
    ("p0000009-s01", "summary", "The team won the final after a late goal in extra time on Sunday night.",
     "The team won the final."),
]


def make_pairs(rows=PAIRS, kind="0-1") -> pd.DataFrame:
    df = pd.DataFrame([{"id": f"{r}:{task}:{kind}", "task": task, "source": s, "target": t} for r, task, s, t in rows])
    df["length_ratio"] = [len(t) / len(s) for s, t in zip(df["source"], df["target"])]
    df["diversity_rougeL"] = np.nan  # computed by prepare_pairs (as for summaries in a real corpus)
    return df


@pytest.fixture(scope="module", autouse=True)
def _single_threaded(one_thread):  # conftest's one_thread, for every test of this module
    yield


@pytest.fixture(scope="module")
def base_model() -> str:
    return "tiny-t5"  # built by distill.models on first use (distill/tiny.py)


def cfg_for(base: str, **kw) -> TrainConfig:
    args = dict(student=ModelConfig(model=base), epochs=60, learning_rate=1e-2, batch_size=3,
                validation_fraction=0.0, eval_samples=6)
    args.update(kw)
    return TrainConfig(**args)


@pytest.fixture(scope="module")
def trained(base_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("student") / "ckpt"
    logs: list[str] = []
    metrics = T.train_student(make_pairs(), cfg_for(base_model), out, init=base_model, seed=0, log=logs.append)
    return out, metrics, logs


# ------------------------------------------------------------------------------------------------
# control codes and data


def test_buckets_and_format():
    assert [T.length_bucket(r) for r in (0.0, 0.49, 0.5, 0.6, 0.7, 0.95, 1.0, 1.1, 1.29, 1.3, 3.0)] == \
        [0, 0, 1, 1, 2, 3, 3, 4, 4, 5, 5]
    assert [T.diversity_bucket(r) for r in (0.0, 0.19, 0.2, 0.39, 0.4, 0.6, 0.75, 1.0)] == [0, 0, 1, 1, 2, 3, 3, 3]
    with pytest.raises(ValueError):
        T.length_bucket(float("nan"))
    with pytest.raises(ValueError):
        T.diversity_bucket(1.5)
    assert T.format_input("paraphrase", "A  cat\nsat.") == "paraphrase length: 3 diversity: 0 text: A cat sat."
    assert T.format_input("summary", "A cat sat.") == "summarize length: 1 diversity: 2 text: A cat sat."
    assert T.format_input("summary", "x", length=0, diversity=3) == "summarize length: 0 diversity: 3 text: x"
    with pytest.raises(ValueError):
        T.format_input("translate", "x")
    with pytest.raises(ValueError):
        T.format_input("paraphrase", "x", length=6)
    # a pair's own codes: 18/33 chars -> 0.545 -> length bucket 1; ROUGE-L F1 3/7 -> diversity bucket 2
    df = T.prepare_pairs(pd.DataFrame([{"id": "p1-s1:paraphrase:0-1", "task": "paraphrase",
                                        "source": "the cat sat on the warm mat today", "target": "a dog sat on a mat",
                                        "length_ratio": np.nan, "diversity_rougeL": np.nan}]))
    # LCS(source 8 tokens, target 6 tokens) = "sat on mat" = 3: P = 3/6, R = 3/8, F1 = 3/7
    assert df["diversity_rougeL"].iloc[0] == pytest.approx(3 / 7)
    assert df["length_ratio"].iloc[0] == pytest.approx(18 / 33)
    assert df["input"].iloc[0] == "paraphrase length: 1 diversity: 2 text: the cat sat on the warm mat today"


def test_split_by_record_hash():
    ids = [f"p{i:07d}-s{j:02d}:{task}:{k}" for i in range(300) for j in range(2) for task in ("paraphrase", "summary")
           for k in ("0-1", "r1-4")]
    df = pd.DataFrame({"id": ids, "task": [i.split(":")[1] for i in ids], "source": "a b c d", "target": "a b",
                       "length_ratio": 0.5, "diversity_rougeL": np.nan})
    train, val = T.split_pairs(df, 0.2)
    assert len(train) + len(val) == len(df)
    assert 0.14 < len(val) / len(df) < 0.26
    # every pair of one record lands on the same side, in any order of the input, for every round's ids
    assert not set(map(T.record_of, train["id"])) & set(map(T.record_of, val["id"]))
    train2, val2 = T.split_pairs(df.sample(frac=1.0, random_state=1), 0.2)
    assert list(val2["id"]) == list(val["id"]) and list(train2["id"]) == list(train["id"])
    assert T.record_of("p0000012-s03:paraphrase:r1-4") == "p0000012-s03"
    assert len(T.split_pairs(df, 0.0)[1]) == 0


def test_epoch_batches_grouped_and_seeded():
    lens = [5, 30, 6, 31, 7, 29, 8, 28, 9]
    a = T.epoch_batches(lens, 3, seed=1, epoch=0)
    assert a == T.epoch_batches(lens, 3, seed=1, epoch=0)
    assert a != T.epoch_batches(lens, 3, seed=1, epoch=1)
    assert sorted(i for b in a for i in b) == list(range(len(lens)))
    # one chunk (< 50 batches): sorted by length, so a batch holds neighbours in length
    assert sorted(sorted(lens[i] for i in b) for b in a) == [[5, 6, 7], [8, 9, 28], [29, 30, 31]]


# ------------------------------------------------------------------------------------------------
# training


def test_overfit_reproduces_training_targets(trained):
    out, metrics, logs = trained
    assert metrics["train_loss"] < 0.1, metrics["train_loss_by_epoch"]
    assert metrics["train_loss_by_epoch"][0] > 5 * metrics["train_loss"]
    assert metrics["train_pairs"] == 6 and metrics["validation_pairs"] == 0 and metrics["steps"] == 120
    for pid, task, source, target in PAIRS[:1] + PAIRS[4:5]:
        codes = dict(length=T.length_bucket(len(target) / len(source)), diversity=T.diversity_bucket(T.rouge_l(source, target)))
        assert generate(out, task, source, greedy=True, **codes) == [target]
    # evaluate on (a copy of) the training pairs: the outputs are the targets; critics see (source, output)
    seen = []

    def critique(p: pd.DataFrame) -> pd.DataFrame:
        seen.append(p.copy())
        return p.assign(reject=np.where(p["task"] == "summary", "length_too_long", ""))

    ev = T.evaluate(out, make_pairs(), critique=critique, n=6, seed=0)
    # greedy outputs are the targets up to a stray token: a 120-step overfit is not bit-stable across CPUs
    assert ev["rougeL"] > 0.95 and ev["eval_pairs"] == 6
    assert ev["critic_pass_rate"] == pytest.approx(4 / 6)
    assert list(seen[0].columns) == PAIR_COLUMNS and seen[0]["record_id"].is_unique
    assert T.evaluate(out, make_pairs(), n=2)["eval_pairs"] == 2


def test_checkpoint_files_and_stored_metrics(trained, base_model, monkeypatch):
    out, metrics, _ = trained
    for name in ("model.safetensors", "config.json", "tokenizer_config.json", "training_config.json", "metrics.json",
                 "eval_outputs.parquet"):
        assert (out / name).is_file(), name
    assert not (out / "last").exists() and not list(out.glob(".last-*"))
    tc = json.loads((out / "training_config.json").read_text())
    assert tc["init"] == base_model and tc["seed"] == 0 and tc["train_pairs"] == 6 and tc["steps"] == 120
    assert tc["train"]["learning_rate"] == 1e-2 and tc["format"]["length_edges"] == list(T.LENGTH_EDGES)
    assert json.loads((out / "metrics.json").read_text()) == metrics
    assert metrics["rougeL"] is None  # no validation pairs here

    def no_training(*a, **k):
        raise AssertionError("trained again")

    monkeypatch.setattr(T._Trainer, "run", no_training)
    assert T.train_student(make_pairs(), cfg_for(base_model), out, init=base_model, seed=0) == metrics
    with pytest.raises(ValueError, match="other settings"):
        T.train_student(make_pairs(), cfg_for(base_model, learning_rate=1e-3), out, init=base_model, seed=0)


def _weights(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path / "model.safetensors"))


class Interrupted(Exception):
    pass


@pytest.fixture(scope="module")
def dropout_model(base_model, tmp_path_factory) -> str:
    """The tiny T5 with dropout 0.1, so resuming must restore the RNG state to match."""
    model, tok = T.load_student(base_model)
    model.config.dropout_rate = 0.1
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.1
    out = tmp_path_factory.mktemp("t5-dropout")
    T.save_model(model, tok, out)
    return str(out)


def test_resume_after_interruption_matches_uninterrupted(dropout_model, tmp_path):
    pairs = make_pairs(PAIRS + VAL_PAIRS)
    cfg = cfg_for(dropout_model, epochs=4, batch_size=2, validation_fraction=0.3, eval_samples=2)
    full = T.train_student(pairs, cfg, tmp_path / "a", init=dropout_model, seed=3, save_every_steps=5)

    def interrupt(msg: str) -> None:
        if msg.endswith("at step 5"):
            raise Interrupted(msg)

    with pytest.raises(Interrupted):
        T.train_student(pairs, cfg, tmp_path / "b", init=dropout_model, seed=3, log=interrupt, save_every_steps=5)
    assert (tmp_path / "b" / "last" / "trainer_state.pt").is_file() and not (tmp_path / "b" / "metrics.json").exists()
    logs: list[str] = []
    resumed = T.train_student(pairs, cfg, tmp_path / "b", init=dropout_model, seed=3, log=logs.append,
                              save_every_steps=5)
    assert any("resuming" in m and "at step 5/" in m for m in logs), logs
    assert resumed["steps"] == full["steps"]
    assert resumed["validation_pairs"] == 2 and resumed["validation_loss"] is not None
    assert resumed["train_loss"] == pytest.approx(full["train_loss"], rel=1e-6)
    assert resumed["validation_loss"] == pytest.approx(full["validation_loss"], rel=1e-6)
    wa, wb = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    # a different seed gives different weights (the check above is not vacuous)
    other = T.train_student(pairs, cfg.model_copy(update={"epochs": 1}), tmp_path / "c", init=dropout_model, seed=4)
    assert other["steps"] < full["steps"]


def test_oom_batch_is_split_not_skipped(base_model, tmp_path, monkeypatch):
    pairs = make_pairs()
    cfg = cfg_for(base_model, epochs=2, batch_size=6, eval_samples=0)
    ref = T.train_student(pairs, cfg, tmp_path / "ref", init=base_model, seed=1, save_every_steps=None)
    real = T._batch_loss
    sizes = []

    def small_memory(model, src, tgt, pad_id, device):
        if len(src) > 3:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        sizes.append(len(src))
        return real(model, src, tgt, pad_id, device)

    monkeypatch.setattr(T, "_batch_loss", small_memory)
    logs: list[str] = []
    got = T.train_student(pairs, cfg, tmp_path / "oom", init=base_model, seed=1, log=logs.append, save_every_steps=None)
    assert sum(sizes) == 6 * got["steps"] and set(sizes) == {3}  # every pair of every step, in halves
    assert any("out of memory" in m for m in logs)
    assert got["train_loss"] == pytest.approx(ref["train_loss"], rel=1e-4)
    wa, wb = _weights(tmp_path / "ref"), _weights(tmp_path / "oom")
    # the same gradients up to float rounding (Adam's first steps move each weight by about +-lr = 1e-2)
    assert max(float((wa[k] - wb[k]).abs().max()) for k in wa) < 1e-3


# ------------------------------------------------------------------------------------------------
# the student as a candidate generator


RECORDS = pd.DataFrame({"record_id": ["p0000101-s01", "p0000102-s04"],
                        "context": ["(Reuters) -- Earlier text.", "(AP) -- Other text."],
                        "sentence": PAIRS[0][2:3] + PAIRS[4][2:3]})


def test_student_stage_pairs_are_row_seeded(trained):
    out, _, _ = trained
    gen = StudentGenConfig(k=4, max_new_tokens=24, rows_per_batch=64, temperature=1.5, top_p=1.0)
    stage = StudentStage(out, gen, seed=7, round_=1)
    a = stage(RECORDS)
    assert list(a.columns) == PAIR_COLUMNS and len(a) > 2
    assert set(a["task"]) == {"paraphrase", "summary"}
    assert (a["source_idx"] == -1).all() and (a["round"] == 1).all() and (a["generator"] == str(out)).all()
    assert a["pair_id"].is_unique
    assert all(pid == f"{r}:{t}:r1-{i}" for pid, r, t, i in zip(a["pair_id"], a["record_id"], a["task"], a["target_idx"]))
    src = dict(zip(RECORDS["record_id"], RECORDS["sentence"]))
    assert all(s == src[r] for r, s in zip(a["record_id"], a["source"]))
    assert not a.duplicated(["record_id", "task", "target"]).any() and (a["target"].str.len() > 0).all()
    pd.testing.assert_frame_equal(a, stage(RECORDS))
    other = StudentStage(out, gen.model_copy(update={"rows_per_batch": 3}), seed=7, round_=1)
    b = other(RECORDS.iloc[::-1].reset_index(drop=True))
    key = lambda df: df.sort_values("pair_id").reset_index(drop=True)  # noqa: E731
    pd.testing.assert_frame_equal(key(a), key(b))
    c = StudentStage(out, gen, seed=8, round_=1)(RECORDS)
    assert set(c["target"]) != set(a["target"])  # the seed matters
    # only one task
    p = StudentStage(out, gen, seed=7, round_=1, tasks=("paraphrase",))(RECORDS)
    pd.testing.assert_frame_equal(p.reset_index(drop=True), a[a["task"] == "paraphrase"].reset_index(drop=True))
    assert list(StudentStage(out, gen, seed=7, round_=1)(RECORDS.head(0)).columns) == PAIR_COLUMNS


def test_sampling_splits_on_oom(trained, monkeypatch):
    from distill.stages import student as S

    out, _, _ = trained
    model, tok = T.load_student(out)
    inputs = [T.format_input("paraphrase", s) for _, _, s, _ in PAIRS]
    kw = dict(max_new_tokens=12, temperature=1.3, top_p=0.95)
    ref = sample_seq2seq_split_on_oom(model, tok, inputs, list(range(6)), **kw)
    real = S.sample_seq2seq

    def small(model, tokenizer, inputs, seeds, **k):
        if len(inputs) > 1:
            raise RuntimeError("CUDA out of memory.")
        return real(model, tokenizer, inputs, seeds, **k)

    monkeypatch.setattr(S, "sample_seq2seq", small)
    assert sample_seq2seq_split_on_oom(model, tok, inputs, list(range(6)), **kw) == ref


def test_generate_samples_and_greedy(trained):
    out, _, _ = trained
    a = generate(out, "paraphrase", PAIRS[1][2], n=3, seed=5, gen=StudentGenConfig(temperature=1.5, max_new_tokens=16))
    assert len(a) == 3 and a == generate(out, "paraphrase", PAIRS[1][2], n=3, seed=5,
                                          gen=StudentGenConfig(temperature=1.5, max_new_tokens=16))
    assert len(generate(out, "summary", PAIRS[4][2], greedy=True)) == 1


def test_best_paraphrase_per_source():
    df = pd.DataFrame([
        ("r1:paraphrase:r1-0", "r1", "paraphrase", "S1", "a", 0.50, ""),
        ("r1:paraphrase:r1-1", "r1", "paraphrase", "S1", "b", 0.30, ""),
        ("r1:paraphrase:r1-2", "r1", "paraphrase", "S1", "c", 0.10, "nli_forward_low"),  # lowest, but rejected
        ("r1:paraphrase:r1-3", "r1", "paraphrase", "S1", "d", 0.30, ""),  # tie with r1-1: larger pair_id
        ("r2:paraphrase:r1-0", "r2", "paraphrase", "S2", "e", 0.60, ""),
        ("r3:paraphrase:r1-0", "r3", "paraphrase", "S3", "f", 0.20, "dedup_duplicate"),  # no survivor
        ("r1:summary:r1-0", "r1", "summary", "S1", "g", np.nan, ""),
        ("r1:summary:r1-1", "r1", "summary", "S1", "h", np.nan, ""),
        ("r1:summary:r1-2", "r1", "summary", "S1", "i", np.nan, "length_too_long"),
    ], columns=["pair_id", "record_id", "task", "source", "target", "diversity_rougeL", "reject"])
    kept = best_paraphrase_per_source(df.sample(frac=1.0, random_state=0))
    assert sorted(kept["pair_id"]) == ["r1:paraphrase:r1-1", "r1:summary:r1-0", "r1:summary:r1-1", "r2:paraphrase:r1-0"]
    assert list(kept.columns) == list(df.columns)
    assert len(best_paraphrase_per_source(df[df["reject"] != ""])) == 0


# ------------------------------------------------------------------------------------------------
# Ray Train


@pytest.mark.ray
@pytest.mark.slow
def test_ray_train_writes_loadable_checkpoint(base_model, tmp_path):
    ray = pytest.importorskip("ray")
    cfg = cfg_for(base_model, epochs=2, batch_size=2, eval_samples=2, validation_fraction=0.3,
                  resources=ResourcesConfig(concurrency=2, num_cpus=1))
    out = tmp_path / "ray-student"
    temp = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # short: Ray's socket paths must stay under 107 bytes
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _temp_dir=temp)
    try:
        metrics = T.train_student_ray(make_pairs(PAIRS + VAL_PAIRS), cfg, out, init=base_model, seed=0)
    finally:
        ray.shutdown()
        shutil.rmtree(temp, ignore_errors=True)
    assert metrics["world_size"] == 2 and metrics["train_pairs"] == 6 and metrics["validation_pairs"] == 2
    assert metrics["steps"] == 2 * 2  # 6 pairs = 3 batches of 2 per epoch, 2 workers: 2 steps per epoch
    assert metrics["eval_pairs"] == 2 and metrics["rougeL"] is not None
    assert (out / "model.safetensors").is_file() and not (out / "ray").exists() and not (out / "last").exists()
    assert json.loads((out / "metrics.json").read_text()) == metrics
    model, tok = T.load_student(out)
    assert generate(out, "paraphrase", PAIRS[0][2], greedy=True)  # loadable and generates
