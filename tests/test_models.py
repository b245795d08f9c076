"""distill.models / distill.tiny: the self-built tiny models and the loading helpers.

Every tiny model is built once into the shared cache (side by side, one process each). The
determinism test builds tiny-gpt2 and tiny-nli twice with shortened recipes (the same code path,
a few seconds) and compares the bytes; the same check on the full recipes (~1 minute) runs with
DISTILL_FULL_DETERMINISM=1.
"""

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import copy
import hashlib
import multiprocessing
import re
from pathlib import Path
from types import SimpleNamespace

import pytest

from distill import models, tiny

PREMISE = "Maria Lopez, a spokesperson for the Red Cross, said on Monday that 12 people were injured in Nairobi."
PARAPHRASE = "Twelve people were injured in Nairobi, Lopez said."
NUMBER_CHANGED = "Fifteen people were injured in Nairobi, Lopez said."


@pytest.fixture(scope="module", autouse=True)
def _single_threaded(one_thread):  # conftest's one_thread, for every test of this module
    yield


@pytest.fixture(scope="module")
def cache():
    """The shared cache ($DISTILL_CACHE or ~/.cache/distill): the other tests use the same tiny models,
    so each is built once per machine (the missing ones side by side)."""
    models.prefetch()
    return Path(os.environ.get("DISTILL_CACHE") or Path.home() / ".cache" / "distill")


@pytest.fixture(scope="module")
def teacher(cache):
    return models.load_causal_lm("tiny-gpt2")


@pytest.fixture(scope="module")
def nli(cache):
    return models.load_nli("tiny-nli")


def _digests(folder) -> dict:
    folder = Path(folder)
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.iterdir())
            if p.suffix == ".safetensors" or p.name == "tokenizer.json"}


# --- resources


def test_resources_load():
    outlets, places = tiny.load_outlets(), tiny.load_places()
    assert len(outlets) >= 30 and "Reuters" in outlets and "Al Jazeera" in outlets
    assert len(places) >= 50 and ("Nairobi", "Kenya") in places
    assert all(city and country and "\t" not in city + country for city, country in places)


def test_corpus_shape():
    texts = tiny.corpus(50, seed=3)
    assert texts == tiny.corpus(50, seed=3)  # seeded
    news = [t for t in texts if " -- " in t]
    assert news and all(re.match(r"^(\(|[A-Z])", t) for t in news)
    assert any(re.search(r"\b\d+\b", t) for t in texts)
    assert any(re.search(r"\b(twelve|seven|forty|three|ten|two)\b", t, re.I) for t in texts)
    assert all(t.endswith(".") for t in texts)


# --- resolve / cache


def test_resolve_passes_real_names_through():
    assert models.resolve("gpt2-xl") == "gpt2-xl"
    assert models.resolve("/some/local/model") == "/some/local/model"
    with pytest.raises(ValueError, match="tiny-nope"):
        models.resolve("tiny-nope")


def test_resolve_layout(cache):
    path = Path(models.resolve("tiny-t5"))
    assert path.parent == cache / "tiny"
    assert re.fullmatch(r"tiny-t5-[0-9a-f]{12}", path.name)
    assert (path / "model.safetensors").is_file() and (path / "tokenizer.json").is_file()
    assert models.resolve("tiny-t5") == str(path)  # cached


def _resolve_in_child(name):
    return models.resolve(name)


def test_concurrent_resolve_builds_once(tmp_path, monkeypatch):
    monkeypatch.setenv("DISTILL_CACHE", str(tmp_path))
    stale = tmp_path / "tiny" / f".{models.tiny_path('tiny-t5').name}.killed.tmp"  # left by a killed build
    stale.mkdir(parents=True)
    (stale / "config.json").write_text("{")
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(2) as pool:
        paths = pool.map(_resolve_in_child, ["tiny-t5", "tiny-t5"])
    assert paths[0] == paths[1]
    # one folder, no temporary ones left behind (the stale one is cleaned up too)
    assert [p.name for p in (tmp_path / "tiny").iterdir() if p.is_dir()] == [Path(paths[0]).name]
    model, tok = models.load_seq2seq(paths[0])
    assert model.config.decoder_start_token_id == tok.pad_token_id


def _short(name: str) -> dict:
    """``name``'s recipe cut to a few dozen steps (adaptive stop checked along the way)."""
    recipe = copy.deepcopy(tiny.RECIPES[name])
    recipe["train"].update(steps=40, min_steps=20, check_every=10, anneal=10)
    recipe["train"].update(check_passages=16) if name == "tiny-gpt2" else recipe["train"].update(check_pairs=32)
    return recipe


@pytest.mark.parametrize("name", ["tiny-gpt2", "tiny-nli"])
def test_builds_are_byte_identical(name, tmp_path, monkeypatch):
    monkeypatch.setitem(tiny.RECIPES, name, _short(name))
    a, b = tiny.build(name, tmp_path / "a"), tiny.build(name, tmp_path / "b")
    da, db = _digests(a), _digests(b)
    assert "model.safetensors" in da and "tokenizer.json" in da and da == db


@pytest.mark.skipif(not os.environ.get("DISTILL_FULL_DETERMINISM"),
                    reason="~1 min: set DISTILL_FULL_DETERMINISM=1")
def test_full_builds_are_byte_identical(cache, tmp_path, monkeypatch):
    first = {name: models.resolve(name) for name in ("tiny-nli", "tiny-gpt2")}
    monkeypatch.setenv("DISTILL_CACHE", str(tmp_path))
    again = models.prefetch(first)
    for name, path in first.items():
        assert again[name] != path and again[name].startswith(str(tmp_path))
        a, b = _digests(path), _digests(again[name])
        assert "model.safetensors" in a and a == b, name


def test_build_leaves_torch_settings_alone(tmp_path):
    import torch

    before = (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled())
    state = torch.get_rng_state()
    tiny.build("tiny-t5", tmp_path / "t5")
    assert (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()) == before
    assert torch.equal(torch.get_rng_state(), state)


# --- labels


def test_label_indices():
    wanli = SimpleNamespace(id2label={0: "contradiction", 1: "entailment", 2: "neutral"})
    mnli = SimpleNamespace(id2label={0: "entailment", 1: "neutral", 2: "contradiction"})
    roberta_mnli = SimpleNamespace(id2label={"0": "CONTRADICTION", "1": "NEUTRAL", "2": "ENTAILMENT"})
    assert models.label_indices(wanli) == {"entailment": 1, "neutral": 2, "contradiction": 0}
    assert models.label_indices(mnli) == {"entailment": 0, "neutral": 1, "contradiction": 2}
    assert models.entailment_index(wanli) == 1
    assert models.entailment_index(mnli) == 0
    assert models.entailment_index(roberta_mnli) == 2
    binary = SimpleNamespace(id2label={0: "not_entailment", 1: "entailment"})
    assert models.label_indices(binary) == {"entailment": 1}


def test_label_indices_without_entailment():
    cfg = SimpleNamespace(id2label={0: "LABEL_0", 1: "LABEL_1"}, _name_or_path="some/sentiment-model")
    with pytest.raises(ValueError) as err:
        models.entailment_index(cfg)
    msg = str(err.value)
    assert "\n" not in msg and "some/sentiment-model" in msg and "LABEL_1" in msg


def test_tiny_nli_config(nli):
    model, _ = nli
    assert model.config.id2label == {0: "contradiction", 1: "entailment", 2: "neutral"}
    assert models.label_indices(model.config) == {"entailment": 1, "neutral": 2, "contradiction": 0}


# --- the models


def test_newline_token_ids(teacher):
    _, tok = teacher
    ids = models.newline_token_ids(tok)
    assert ids
    assert all("\n" in tok.decode([i]) or "\r" in tok.decode([i]) for i in ids)
    assert any(tok.decode([i]) == "\n" for i in ids)
    assert not set(ids) & set(tok("Hello there. It is 12.")["input_ids"])


def test_teacher_writes_sentences(teacher):
    import torch

    model, tok = teacher
    assert tok.padding_side == "left" and tok.pad_token is not None
    prompt = f"NAIROBI, Kenya (Reuters) -- {PREMISE}"
    enc = tok([prompt] * 8, return_tensors="pt")
    torch.manual_seed(0)
    out = model.generate(**enc, do_sample=True, top_p=0.9, temperature=0.7, max_new_tokens=48,
                         bad_words_ids=[[i] for i in models.newline_token_ids(tok)],
                         pad_token_id=tok.pad_token_id)
    texts = tok.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    complete = [t for t in texts if re.match(r"\s[A-Z0-9][^.\n]{8,}\.", t)]  # a first sentence
    assert len(complete) >= 5, texts


def test_nli_prefers_paraphrase_over_contradiction(nli):
    import torch

    model, tok = nli
    ent = models.entailment_index(model.config)
    enc = tok([PREMISE, PREMISE], [PARAPHRASE, NUMBER_CHANGED], padding=True, return_tensors="pt")
    with torch.no_grad():
        p = model(**enc).logits.softmax(-1)[:, ent]
    assert p[0] > p[1] + 0.2 and p[0] > 0.5, p.tolist()


def test_seq2seq_and_dtype(cache):
    import torch

    model, tok = models.load_seq2seq("tiny-t5")
    assert tok.pad_token_id is not None and tok.eos_token_id is not None
    assert model.config.decoder_start_token_id == tok.pad_token_id
    enc = tok(["12 people were injured in Nairobi."], return_tensors="pt")
    assert enc["input_ids"][0, -1].item() == tok.eos_token_id
    out = model.generate(**enc, max_new_tokens=5, do_sample=False)
    assert out.shape[0] == 1
    lm, _ = models.load_causal_lm("tiny-gpt2", dtype="bfloat16")
    assert next(lm.parameters()).dtype == torch.bfloat16
    lm, _ = models.load_causal_lm("tiny-gpt2")
    assert next(lm.parameters()).dtype == torch.float32
