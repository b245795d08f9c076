"""The throughput harness (benchmarks/throughput.py): the reference approach keeps what the project keeps, except
for the documented deviations; the tiny run writes every field; the random-weight workload is what it says."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # benchmarks/ is not installed with the package
    sys.path.insert(0, str(REPO))

from benchmarks import throughput as tp  # noqa: E402
from distill.config import CritiqueConfig  # noqa: E402
from distill.filters.chain import run_critics  # noqa: E402
from distill.filters.dedup import DedupFilter  # noqa: E402
from distill.filters.nli import StandInScorer, content_words  # noqa: E402
from distill.filters.numbers import number_set  # noqa: E402
from distill.records import CANDIDATE_COLUMNS  # noqa: E402
from distill.stages.critique import build_filters  # noqa: E402
from distill.stages.pairs import PairsStage  # noqa: E402
from distill.text import split_sentences  # noqa: E402

# A paraphrase that drops a number of its source: the project's numbers check rejects it (the sets differ), the
# reference's keeps it (its source-side check compared the target with itself; only "target within source" works).
DROPS_A_NUMBER = ("Seven schools were closed in Colombo on Monday, 3 officials said.",
                  "On Monday officials said that seven schools in Colombo had closed.")


def corpus_contexts(n: int = 14, seed: int = 5) -> dict[str, list[str]]:
    """Candidate sets: the sentences of two passages of distill's synthetic corpus per context (restatements of
    the same facts, digits and number words, unrelated sentences), plus one context with DROPS_A_NUMBER."""
    from distill import tiny

    passages = tiny.corpus(2 * n, seed)
    out = {}
    for c in range(n):
        sents = [s.split(" -- ", 1)[-1] for p in passages[2 * c:2 * c + 2] for s in split_sentences(p)]
        out[f"r{c:03d}"] = list(dict.fromkeys(sents))[:10]
    out["r999"] = list(DROPS_A_NUMBER) + ["The roads in Lagos will be repaired by June, the mayor said."]
    return out


def candidates_frame(contexts: dict[str, list[str]]) -> pd.DataFrame:
    rows = [{"record_id": rid, "prefix": "", "context": "", "candidate_idx": i, "candidate": c, "seed": 0,
             "generator": "test"} for rid, cands in contexts.items() for i, c in enumerate(cands)]
    return pd.DataFrame(rows, columns=CANDIDATE_COLUMNS)


def project_kept(contexts, scorer, *, dedup: bool) -> tuple[set, pd.DataFrame]:
    pairs = PairsStage(["paraphrase"])(candidates_frame(contexts))
    filters, _ = build_filters(CritiqueConfig(dedup=dedup), scorer)
    scored, _ = run_critics(pairs, filters, DedupFilter(scorer) if dedup else None)
    kept = scored[scored["reject"] == ""]
    return set(zip(kept["record_id"], kept["source_idx"], kept["target_idx"])), scored


def reference_kept(contexts, scorer, *, order: str, dedup: bool) -> set:
    kept = set()
    for rid, cands in contexts.items():
        for p in tp.reference_filter(tp.reference_pairs(cands), scorer, order=order, dedup=dedup):
            kept.add((rid, p.orig_idx, p.new_idx))
    return kept


def table_scorer(table: dict):
    """An NLI stand-in: p(entail) from ``table[(premise, hypothesis)]`` (0.1 when absent), the rest neutral."""
    def scorer(premises, hypotheses):
        p = np.array([table.get((x, y), 0.1) for x, y in zip(premises, hypotheses)])
        return np.stack([p, 1 - p, np.zeros_like(p)], axis=1)
    return scorer


def number_blind(premises, hypotheses) -> np.ndarray:
    """StandInScorer's content-word rule without its number rule, so NLI does not hide the numbers deviation."""
    out = np.empty((len(premises), 3))
    for i, (p, h) in enumerate(zip(premises, hypotheses)):
        ch = content_words(h)
        cover = len(ch & content_words(p)) / len(ch) if ch else 1.0
        out[i] = (0.05 + 0.9 * cover, 0.9 * (1.0 - cover), 0.05)
    return out


def assert_differs_only_by_numbers(contexts, proj: set, scored: pd.DataFrame, ref: set) -> set:
    """The reference keeps everything the project keeps; what only the reference keeps, the project rejected for
    numbers alone, and there the target's numbers are a strict subset of the source's."""
    assert proj <= ref
    reasons = {(r, s, t): why for r, s, t, why in
               zip(scored["record_id"], scored["source_idx"], scored["target_idx"], scored["reject"])}
    extra = ref - proj
    for rid, i, j in extra:
        assert reasons[(rid, i, j)] == "numbers_mismatch", (rid, i, j, reasons[(rid, i, j)])
        src, tgt = number_set(contexts[rid][i]), number_set(contexts[rid][j])
        assert tgt < src and tp.ref_numbers_keep(contexts[rid][i], contexts[rid][j])
    return extra


@pytest.mark.parametrize("order", ["code", "all_pairs"])
def test_reference_keeps_the_projects_pairs_with_the_standin_scorer(order):
    contexts = corpus_contexts()
    scorer = StandInScorer()
    proj, scored = project_kept(contexts, scorer, dedup=False)
    ref = reference_kept(contexts, scorer, order=order, dedup=False)
    assert proj, "the corpus contexts should give some kept paraphrases"
    assert_differs_only_by_numbers(contexts, proj, scored, ref)
    # the numbers deviation is there at the critic level (source numbers dropped by the target) ...
    dropped = scored["reject"].eq("numbers_mismatch").to_numpy() & np.array(
        [tp.ref_numbers_keep(s, t) for s, t in zip(scored["source"], scored["target"])])
    assert dropped.any()
    # ... but StandInScorer's own number rule fails those pairs in the reverse direction: same kept set
    assert proj == ref


@pytest.mark.parametrize("order", ["code", "all_pairs"])
def test_kept_sets_differ_only_by_the_numbers_check_when_nli_ignores_numbers(order):
    contexts = corpus_contexts()
    proj, scored = project_kept(contexts, number_blind, dedup=False)
    ref = reference_kept(contexts, number_blind, order=order, dedup=False)
    extra = assert_differs_only_by_numbers(contexts, proj, scored, ref)
    assert ("r999", 0, 1) in extra  # DROPS_A_NUMBER: kept by the reference, rejected by the project


def test_dedup_keep_rule_is_the_documented_difference():
    """Three mutual paraphrases, all three pairs pass every per-pair critic: both keep ONE pair of the group;
    the project the most entailed (highest forward + reverse, the paper's rule), the reference the one with the
    lowest reverse NLI (the code's rule)."""
    a = "The council closed seven schools in Colombo on Monday."
    b = "On Monday, seven Colombo schools were shut by the council."
    c = "Seven schools in Colombo were shut down by city officials on Monday."
    table = {(a, b): 0.95, (b, a): 0.80, (a, c): 0.99, (c, a): 0.90, (b, c): 0.85, (c, b): 0.95}
    scorer = table_scorer(table)

    contexts = {"r0": [a, b, c]}
    no_dedup, _ = project_kept(contexts, scorer, dedup=False)
    assert no_dedup == {("r0", 0, 1), ("r0", 0, 2), ("r0", 1, 2)} == reference_kept(
        contexts, scorer, order="code", dedup=False)
    proj, _ = project_kept(contexts, scorer, dedup=True)
    assert proj == {("r0", 0, 2)}  # forward + reverse: 1.75, 1.89, 1.80
    for order in ("code", "all_pairs"):
        assert reference_kept(contexts, scorer, order=order, dedup=True) == {("r0", 0, 1)}  # reverse 0.80 lowest


def test_dedup_last_keeps_every_context_with_survivors():
    """With dedup on, each side keeps a subset of its no-dedup set. Where dedup runs last (the project; the
    reference in the issue's all-pairs accounting), a context with survivors keeps >= 1 pair."""
    contexts = corpus_contexts()
    scorer = StandInScorer()
    proj_all, _ = project_kept(contexts, scorer, dedup=False)
    proj, _ = project_kept(contexts, scorer, dedup=True)
    ref = reference_kept(contexts, scorer, order="all_pairs", dedup=True)
    assert proj <= proj_all and ref <= proj_all and proj != proj_all  # dedup removed something
    with_survivors = {rid for rid, _, _ in proj_all}
    assert {rid for rid, _, _ in proj} == with_survivors == {rid for rid, _, _ in ref}


def test_reference_code_order_dedup_can_empty_a_context():
    """In the reference's code order dedup runs BEFORE numbers and ROUGE-L: per component it keeps the pair with
    the lowest reverse NLI, and if that one then fails ROUGE-L, the context loses a pair the project keeps."""
    a = "Seven schools were closed in Colombo on Monday, officials said."
    b = "On Monday officials said seven schools in Colombo were closed."  # a diverse paraphrase of a
    c = "Seven schools were closed in Colombo on Monday, the officials said."  # near copy of a
    table = {(a, b): 0.95, (b, a): 0.95, (a, c): 0.99, (c, a): 0.90, (b, c): 0.95, (c, b): 0.95}
    scorer = table_scorer(table)

    contexts = {"r0": [a, b, c]}
    proj, scored = project_kept(contexts, scorer, dedup=True)
    assert proj == {("r0", 0, 1)}  # (a, c) fails diversity, (b, c) too; (a, b) survives
    assert reference_kept(contexts, scorer, order="code", dedup=True) == set()  # kept (a, c), then ROUGE-L
    assert reference_kept(contexts, scorer, order="all_pairs", dedup=True) == {("r0", 0, 1)}


def test_reference_numbers_check_is_the_codes():
    assert tp.ref_numbers_keep(*DROPS_A_NUMBER)  # a dropped number passes (the bug)
    assert not tp.ref_numbers_keep("Seven schools closed.", "Seven schools and 3 roads closed.")  # an added one fails
    assert tp.ref_numbers_keep("No numbers here.", "None here either.")


def test_reference_generation_helpers():
    assert tp.reference_first_sentence("  The mayor spoke. Then he left") == "The mayor spoke."
    assert tp.reference_qualifies("The mayor spoke.") and not tp.reference_qualifies("The mayor spoke")
    pairs = tp.reference_pairs(["a.", "b.", "a."])  # duplicates are paired as in the code
    assert [(p.orig_idx, p.new_idx) for p in pairs] == [(0, 1), (0, 2), (1, 2)]


def test_end_token_rate_is_exact_after_temperature_and_top_k():
    import torch

    torch.manual_seed(0)
    scores = torch.randn(8, 5000)
    scores[0, 7] = -float("inf")  # banned stays banned
    for top_k in (None, 50):
        out = tp.EndTokenRate(7, 0.04, 0.7, top_k=top_k)(None, scores) / 0.7
        if top_k:
            out = out.masked_fill(out < torch.topk(out, top_k, dim=-1).values[:, -1:], -float("inf"))
        p = out.softmax(-1)[:, 7]
        assert p[0] == 0
        assert torch.allclose(p[1:], torch.full_like(p[1:], 0.04), atol=1e-4)


def test_standin_pass_rate_and_argmax():
    prem = [f"premise {i}" for i in range(4000)]
    hyp = [f"hypothesis {i % 97}" for i in range(4000)]
    probs = tp.standin_probs(prem, hyp, 0.3)
    passed = probs[:, 0] >= 0.75
    assert abs(passed.mean() - 0.3) < 0.03
    assert np.array_equal(passed, probs.argmax(1) == 0)
    assert np.allclose(probs.sum(1), 1) and np.array_equal(probs, tp.standin_probs(prem, hyp, 0.3))


def test_synthetic_tokenizer_round_trip():
    tok = tp.synthetic_tokenizer(50257, tp.GPT2_SPECIALS, kind="gpt2")
    ids = [500, 12345, tp.GPT2_END_ID, 777]
    text = tok.decode(ids)
    assert text == f"{tp.word(500)} {tp.word(12345)} . {tp.word(777)}"
    assert tok(text)["input_ids"] == ids and len(tok) == 50257 and tok.pad_token_id == tp.GPT2_EOS_ID
    assert split_sentences(text)[0] == f"{tp.word(500)} {tp.word(12345)} ."
    assert not number_set(" ".join(tp.word(i) for i in range(50257)))  # no word reads as a number
    nli = tp.synthetic_tokenizer(50265, tp.ROBERTA_SPECIALS, kind="roberta")
    a, b, c = tp.word(100), tp.word(2000), tp.word(50000)
    assert nli([f"{a} {b} ."], [f"{c} ."])["input_ids"][0] == [0, 100, 2000, 4, 2, 2, 50000, 4, 2]


def _check_result(result: dict) -> None:
    for key in tp.TOP_FIELDS:
        assert key in result, key
    for key in tp.MACHINE_FIELDS:
        assert key in result["machine"], key
    for name in ("project", *tp.REFERENCES):
        for key in (*tp.APPROACH_FIELDS, *(k for k, _ in tp.METRICS)):
            assert key in result[name], (name, key)
        block = result[name]
        assert block["gen_new_tokens"] > 0 and block["gen_seconds"] > 0 and block["seconds_per_context"] > 0
        assert block["peak_rss_mb"] > 0 and block["peak_gpu_mem_mb"] is None  # CPU run
    for name in tp.REFERENCES:
        assert set(result["ratio"][name]) == {k for k, _ in tp.METRICS}


def test_tiny_run_end_to_end(tmp_path):
    md = tmp_path / "BENCHMARKS.md"
    md.write_text("# Benchmarks\n\nheader stays.\n")
    out = tmp_path / "results"
    rc = tp.main(["--scale", "tiny", "--contexts", "2", "--k", "4", "--out", str(out), "--benchmarks-md", str(md),
                  "--quiet"])
    assert rc == 0
    [path] = out.glob("tiny-*.json")
    result = json.loads(path.read_text())
    _check_result(result)
    assert result["settings"]["contexts"] == 2 and result["settings"]["k"] == 4
    assert result["project"]["generate_calls"] == 1 and result["reference"]["generate_calls"] == 2
    ref = result["reference"]
    assert ref["gen_rows"] == 2 * 4 and ref["gen_token_slots"] <= 2 * 4 * tp.MAX_NEW_TOKENS
    assert ref["gen_token_slots"] % 4 == 0  # no per-row stop: all k rows of a call run to the same length
    text = md.read_text()
    assert text.startswith("# Benchmarks\n\nheader stays.\n")
    assert "### tiny scale, " in text and "| seconds per context, end to end |" in text
    assert text.count("| metric | project |") == 1


def test_random_weight_path_on_small_shapes(tmp_path):
    """The paper-scale code path (random weights, synthetic tokenizer, sentence-end rate, stand-in NLI) with
    GPT-2 / RoBERTa shrunk to 2 layers, on the CPU."""
    rc = tp.main(["--scale", "paper", "--allow-cpu", "--device", "cpu", "--threads", "1", "--contexts", "2",
                  "--reference-contexts", "1", "--contexts-per-call", "2", "--k", "4",
                  "--lm-set", "n_layer=1", "--lm-set", "n_embd=32", "--lm-set", "n_head=2",
                  "--nli-set", "num_hidden_layers=1", "--nli-set", "hidden_size=32", "--nli-set",
                  "num_attention_heads=2", "--nli-set", "intermediate_size=64",
                  "--out", str(tmp_path), "--no-markdown", "--quiet"])
    assert rc == 0
    [path] = tmp_path.glob("paper-*.json")
    result = json.loads(path.read_text())
    _check_result(result)
    assert result["workload"]["nli"]["standin_pass_rate_per_direction"] == 0.3
    assert result["project"]["candidates"] > 0 and result["reference"]["candidates"] > 0


def test_paper_scale_refuses_a_cpu_only_machine(capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is available")
    assert tp.main(["--scale", "paper"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --scale paper needs a CUDA GPU") and "\n" not in err and "--allow-cpu" in err
