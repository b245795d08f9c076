"""Critics as pure scoring logic: hand-written pairs, one expected reason per case. No network."""

from __future__ import annotations

import os
import random
import sys
import types
from itertools import combinations

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np
import pandas as pd
import pytest
from rouge_score import rouge_scorer

from distill.filters.base import Filter
from distill.filters.chain import decide, funnel, merge_funnels, run_critics
from distill.filters.dedup import EDGE_COLUMNS, DedupFilter
from distill.filters.diversity import DiversityFilter
from distill.filters.length import LengthFilter
from distill.filters.nli import HFNLIScorer, NLIFilter, StandInScorer
from distill.filters.numbers import NumbersFilter, extract_numbers, format_set, number_set

# ------------------------------------------------------------------------------------------------
# helpers


def row(source, target, task="paraphrase", i=0, j=1, rid="r1", **extra):
    d = dict(
        pair_id=f"{rid}:{task}:{i}-{j}",
        record_id=rid,
        task=task,
        source=source,
        target=target,
        source_idx=i,
        target_idx=j,
    )
    d.update(extra)
    return d


def frame(*rows):
    return pd.DataFrame(list(rows))


class Counting:
    """Wraps a scorer, counting calls and scored rows."""

    def __init__(self, scorer):
        self.scorer, self.calls, self.rows = scorer, 0, 0

    def __call__(self, premises, hypotheses):
        self.calls += 1
        self.rows += len(premises)
        return self.scorer(premises, hypotheses)


def one(filter_: Filter, r: dict) -> str:
    """Score and decide a single hand-written pair; return its reason."""
    df = frame(r)
    return filter_.decide(filter_.score(df))[0]


# ------------------------------------------------------------------------------------------------
# length


@pytest.mark.parametrize(
    "source, target, task, reason",
    [
        ("a" * 10, "b" * 10, "paraphrase", ""),
        ("a" * 10, "b" * 8, "paraphrase", ""),  # exactly 0.8 keeps
        ("a" * 10, "b" * 15, "paraphrase", ""),  # exactly 1.5 keeps
        ("a" * 10, "b" * 7, "paraphrase", "length_too_short"),
        ("a" * 10, "b" * 16, "paraphrase", "length_too_long"),
        ("The committee approved the budget after a long debate.", "The budget passed.", "summary", ""),
        ("a" * 10, "b" * 8, "summary", "length_too_long"),  # summary needs r < 0.8 (strict)
        ("a" * 10, "b" * 7, "summary", ""),
        ("a" * 10, "b" * 12, "summary", "length_too_long"),
        ("", "b", "paraphrase", "length_too_long"),  # empty source -> inf
    ],
)
def test_length(source, target, task, reason):
    assert one(LengthFilter(), row(source, target, task)) == reason


def test_length_ratio_and_not_scored():
    f = LengthFilter()
    df = f.score(frame(row("abcd", "abc"), row("abcd", "ab", "summary")))
    assert df["length_ratio"].tolist() == pytest.approx([0.75, 0.5])
    df.loc[0, "length_ratio"] = np.nan
    assert list(f.decide(df)) == ["length_not_scored", ""]
    assert list(f.decide(df.drop(columns="length_ratio"))) == ["length_not_scored"] * 2
    assert list(LengthFilter(paraphrase_min=0.7).decide(f.score(frame(row("abcd", "abc"))))) == [""]


# ------------------------------------------------------------------------------------------------
# numbers


@pytest.mark.parametrize(
    "text, expected",
    [
        ("He bought 3 apples.", "3"),
        ("He bought three apples.", "3"),
        ("The city has 1,200 residents and 12,000,000 visitors.", "1200,12000000"),
        ("Prices rose 3.5% (or 3.50 percent).", "3.5"),
        ("Unemployment hit 12%.", "12"),
        ("twenty-five or twenty five", "25"),
        ("one hundred and five", "105"),
        ("3 million, three million and 3,000,000", "3000000"),
        ("3.5 billion", "3500000000"),
        ("a thousand", "1000"),
        ("two thousand and ten", "2010"),
        ("at first, he came second", ""),
        ("the twenty-first floor and the 21st century", "21"),
        ("between 2010-2012, 3, 4", "3,4,2010,2012"),
        ("hundreds of people", ""),
        ("No numbers here.", ""),
    ],
)
def test_extract_numbers(text, expected):
    assert format_set(number_set(text)) == expected


def test_extract_numbers_keeps_order_and_repeats():
    assert [str(v) for v in extract_numbers("3 cats, 3 dogs and one bird")] == ["3", "3", "1"]


@pytest.mark.parametrize(
    "source, target, task, reason",
    [
        ("He bought 3 apples.", "He purchased three apples.", "paraphrase", ""),
        ("He bought three apples.", "He purchased 3 apples.", "paraphrase", ""),
        ("12 people came.", "13 people came.", "paraphrase", "numbers_mismatch"),
        ("The 2 teams met in 1998.", "The teams met.", "paraphrase", "numbers_mismatch"),  # dropped
        ("The teams met.", "The 2 teams met.", "paraphrase", "numbers_mismatch"),  # introduced
        ("The city has 1,200 residents.", "1200 people live in the city.", "paraphrase", ""),
        ("The city has 1,200 residents.", "One thousand two hundred people live there.", "paraphrase", ""),
        ("The city has 1,200 residents.", "The city has 1,300 residents.", "paraphrase", "numbers_mismatch"),
        ("It cost 3 million dollars.", "It cost $3,000,000.", "paraphrase", ""),
        ("3 cats and 3 dogs", "three cats and some dogs", "paraphrase", ""),  # sets, not multisets
        ("The 2 teams met in 1998 in Paris.", "The teams met in 1998.", "summary", ""),  # may drop
        ("The teams met in Paris in 1998.", "The 2 teams met in 1998.", "summary", "numbers_mismatch"),
        ("The teams met in Paris.", "They met.", "summary", ""),
    ],
)
def test_numbers(source, target, task, reason):
    assert one(NumbersFilter(), row(source, target, task)) == reason


def test_numbers_columns_explain():
    df = NumbersFilter().score(frame(row("Sales of 1,200 cars rose 12%.", "Twelve percent more: 1300 cars.")))
    assert df.loc[0, "numbers_source"] == "12,1200"
    assert df.loc[0, "numbers_target"] == "12,1300"
    assert df.loc[0, "numbers_match"] == 0.0
    df.loc[0, "numbers_match"] = np.nan
    assert NumbersFilter().decide(df)[0] == "numbers_not_scored"


# ------------------------------------------------------------------------------------------------
# diversity

DIVERSITY_CASES = [
    ("The cat sat on the mat.", "The cat sat on the mat today."),
    ("The cat sat on the mat.", "A cat was sitting on a mat."),
    ("Officials said the bridge will reopen next week.", "The bridge will reopen next week, officials said."),
    ("Officials said the bridge will reopen next week.", "Next week traffic returns to the repaired crossing."),
    ("The company reported record profits this year.", "The company reported record profits this quarter."),
    ("Heavy rain flooded the streets of the old town.", "Streets in the historic centre were under water."),
]


def test_diversity_matches_rouge_score():
    ref = rouge_scorer.RougeScorer(["rougeL"])
    f = DiversityFilter()
    df = f.score(frame(*[row(s, t, i=0, j=k + 1) for k, (s, t) in enumerate(DIVERSITY_CASES)]))
    expected = np.array([ref.score(s, t)["rougeL"].fmeasure for s, t in DIVERSITY_CASES])
    np.testing.assert_allclose(df["diversity_rougeL"].to_numpy(), expected, rtol=0, atol=1e-12)
    assert (expected > 0.75).sum() >= 2 and (expected <= 0.75).sum() >= 2  # both sides exercised
    reasons = f.decide(df)
    assert list(reasons) == ["diversity_too_similar" if e > 0.75 else "" for e in expected]
    # a looser threshold, decided offline from the stored column
    assert list(DiversityFilter(max_rougeL=1.0).decide(df)) == [""] * len(expected)


def test_diversity_summary_rows_nan_and_pass():
    f = DiversityFilter()
    df = f.score(frame(row("The cat sat on the mat.", "The cat sat on the mat.", "summary")))
    assert np.isnan(df.loc[0, "diversity_rougeL"])
    assert f.decide(df)[0] == ""
    para = f.score(frame(row("x y", "x y")))
    para.loc[0, "diversity_rougeL"] = np.nan
    assert f.decide(para)[0] == "diversity_not_scored"


# ------------------------------------------------------------------------------------------------
# NLI filter + stand-in scorer


def test_standin_scorer_rule():
    s = StandInScorer()
    p = s(
        ["The cat sat on the mat.", "The cat sat on the mat.", "He has 3 dogs.", "He has 3 dogs."],
        ["The cat sat on the red mat.", "On the mat sat the cat.", "He has 4 dogs.", "He has three dogs."],
    )
    assert p.shape == (4, 3)
    np.testing.assert_allclose(p.sum(axis=1), 1.0)
    np.testing.assert_allclose(p[0], [0.05 + 0.9 * 0.75, 0.9 * 0.25, 0.05])  # "red" is new: cover 3/4
    np.testing.assert_allclose(p[1], [0.95, 0.0, 0.05])
    np.testing.assert_allclose(p[2], [0.05, 0.15, 0.80])  # number conflict
    np.testing.assert_allclose(p[3], [0.95, 0.0, 0.05])


@pytest.mark.parametrize(
    "source, target, task, reason",
    [
        ("The cat sat on the mat.", "On the mat sat the cat.", "paraphrase", ""),
        ("The cat sat on the mat.", "The cat sat on the red mat.", "paraphrase", "nli_forward_low"),
        ("The cat sat on the red mat.", "The cat sat on the mat.", "paraphrase", "nli_reverse_low"),
        ("He has 3 dogs.", "He has 4 dogs.", "paraphrase", "nli_forward_low"),
        ("The cat sat on the red mat yesterday.", "The cat sat on the mat.", "summary", ""),
        ("The cat sat on the mat.", "The dog sat on the mat.", "summary", "nli_forward_low"),
    ],
)
def test_nli_filter(source, target, task, reason):
    assert one(NLIFilter(StandInScorer()), row(source, target, task)) == reason


def test_nli_one_call_both_directions_and_columns():
    scorer = Counting(StandInScorer())
    f = NLIFilter(scorer)
    df = f.score(
        frame(
            row("The cat sat on the mat.", "The cat sat on the red mat."),
            row("The cat sat on the red mat.", "The cat sat on the mat.", "summary"),
            row("The cat sat on the mat.", "On the mat sat the cat.", i=0, j=2),
        )
    )
    assert scorer.calls == 1 and scorer.rows == 3 + 2  # forward for all, reverse for paraphrases
    assert df["nli_forward"].tolist() == pytest.approx([0.725, 0.95, 0.95])
    assert df.loc[0, "nli_reverse"] == pytest.approx(0.95)
    assert np.isnan(df.loc[1, "nli_reverse"])
    # looser / tighter thresholds decided offline
    assert list(NLIFilter(None, threshold=0.7).decide(df)) == ["", "", ""]
    assert list(NLIFilter(None, threshold=0.96).decide(df)) == ["nli_forward_low"] * 3
    df.loc[2, "nli_reverse"] = np.nan
    df.loc[1, "nli_forward"] = np.nan
    assert list(f.decide(df)) == ["nli_forward_low", "nli_not_scored", "nli_not_scored"]
    assert NLIFilter(scorer).score(frame(row("a", "b")).iloc[:0]).shape[0] == 0 and scorer.calls == 1


# ------------------------------------------------------------------------------------------------
# dedup


def all_edges(rid, idxs, mutual_pairs):
    """An edge table over all pairs of ``idxs`` with the given unordered pairs mutually entailing."""
    mutual_pairs = {tuple(sorted(p)) for p in mutual_pairs}
    rows = [
        dict(record_id=rid, a_idx=a, b_idx=b, mutual_entail=(a, b) in mutual_pairs, p_ab=0.5, p_ba=0.5)
        for a, b in combinations(sorted(idxs), 2)
    ]
    return pd.DataFrame(rows, columns=list(EDGE_COLUMNS))


def scored_row(i, j, fwd, rev, task="paraphrase", rid="r1"):
    return row(f"cand {i}", f"cand {j}", task, i, j, rid, nli_forward=fwd, nli_reverse=rev)


def test_dedup_transitive_components_and_keep_rule():
    # A=(0->4), B=(1->5), C=(2->6), D=(3->7): A~B (sources 0,1), B~C (targets 5,6), A and C not
    # directly similar, D alone -> components {A, B, C}, {D}; keep B (highest forward + reverse).
    surv = frame(
        scored_row(0, 4, 0.90, 0.90),
        scored_row(1, 5, 0.95, 0.95),
        scored_row(2, 6, 0.99, 0.70),
        scored_row(3, 7, 0.80, 0.80),
    )
    edges = all_edges("r1", range(8), [(0, 1), (5, 6), (0, 6), (4, 2)])  # cross-role edges do not link
    reasons = DedupFilter(None).decide_with_edges(surv, edges)
    assert list(reasons) == ["dedup_duplicate", "", "dedup_duplicate", ""]
    # without the B~C link, C is on its own
    edges2 = all_edges("r1", range(8), [(0, 1)])
    assert list(DedupFilter(None).decide_with_edges(surv, edges2)) == ["dedup_duplicate", "", "", ""]


def test_dedup_same_candidate_counts_and_groups_by_task():
    surv = frame(
        scored_row(0, 1, 0.9, 0.9),
        scored_row(0, 2, 0.9, 0.95),  # same source as above -> duplicate even with no edges true
        scored_row(0, 1, 0.9, np.nan, task="summary"),  # other task: its own group
        scored_row(1, 2, 0.8, 0.8, rid="r2"),  # other record: its own group
    )
    edges = pd.concat([all_edges("r1", range(3), []), all_edges("r2", range(3), [])], ignore_index=True)
    assert list(DedupFilter(None).decide_with_edges(surv, edges)) == ["dedup_duplicate", "", "", ""]


def test_dedup_tie_smallest_pair_id_and_nan_reverse_counts_zero():
    surv = frame(
        scored_row(3, 1, 0.9, 0.8, task="summary"),  # 0.9 + 0.8 = 1.7
        scored_row(2, 1, 0.9, 0.8, task="summary"),  # tie -> smallest pair_id "r1:summary:2-1" kept
        scored_row(4, 1, 1.0, np.nan, task="summary"),  # NaN reverse counts 0: 1.0 < 1.7
    )
    edges = all_edges("r1", range(5), [])
    assert list(DedupFilter(None).decide_with_edges(surv, edges)) == ["dedup_duplicate", "", "dedup_duplicate"]


def test_dedup_missing_edge_raises():
    surv = frame(scored_row(0, 4, 0.9, 0.9), scored_row(1, 5, 0.9, 0.9))
    edges = all_edges("r1", [0, 1], [])  # (4, 5) is needed but missing
    with pytest.raises(ValueError, match="lacks"):
        DedupFilter(None).decide_with_edges(surv, edges)
    with pytest.raises(ValueError, match="lacks"):
        DedupFilter(None).decide_with_edges(surv, edges.iloc[:0])
    reasons = DedupFilter(None).decide_with_edges(surv, edges, missing="not_scored")
    assert list(reasons) == ["dedup_not_scored"] * 2


def test_dedup_score_edges():
    scorer = Counting(StandInScorer())
    surv = frame(
        row("The cat sat on the mat.", "On the mat sat the cat.", i=0, j=1),
        row("The cat sat on the mat.", "A dog barked loudly.", "summary", i=0, j=2),
        row("He has 3 dogs.", "He has three dogs.", i=5, j=7, rid="r2"),
    )
    edges = DedupFilter(scorer).score_edges(surv)
    assert list(edges.columns) == list(EDGE_COLUMNS)
    assert scorer.calls == 1 and scorer.rows == 2 * (3 + 1)  # m(m-1) directional calls per record
    got = {(r.record_id, r.a_idx, r.b_idx): r.mutual_entail for r in edges.itertuples()}
    assert got == {("r1", 0, 1): True, ("r1", 0, 2): False, ("r1", 1, 2): False, ("r2", 5, 7): True}
    assert (edges["a_idx"] < edges["b_idx"]).all()
    assert edges.loc[0, "p_ab"] == pytest.approx(0.95)


# ------------------------------------------------------------------------------------------------
# chain: generated pairs

SUBJECTS = [("council", "board"), ("company", "firm"), ("team", "squad"), ("school", "academy")]
VERBS = [("approved", "passed", "backed"), ("hired", "recruited", "took on"), ("opened", "launched", "unveiled")]
THINGS = [("projects", "plans", "schemes"), ("engineers", "workers"), ("offices", "branches")]
TAILS = [
    "",
    "",
    " on Monday",
    " after a long and heated debate that lasted until late in the evening",
    " despite strong objections from several local residents and business owners",
]
NUMS = {2: "two", 3: "three", 5: "five", 12: "twelve", 40: "forty"}


def make_candidates(rng, k):
    subj, verb, thing = rng.choice(SUBJECTS), rng.choice(VERBS), rng.choice(THINGS)
    n = rng.choice(sorted(NUMS))
    cands = []

    def pick(words):  # mostly the first word, so that many candidates stay close
        return words[0] if rng.random() < 0.85 else rng.choice(words)

    while len(cands) < k:
        m = n if rng.random() > 0.2 else n + 1
        num = NUMS.get(m, str(m)) if rng.random() < 0.5 else str(m)
        adj = "new " if rng.random() < 0.7 else rng.choice(["", "major "])
        text = f"The {pick(subj)} {pick(verb)} {num} {adj}{pick(thing)}{rng.choice(TAILS)}."
        if rng.random() < 0.3:
            text = f"{rng.choice(['On Monday', 'Officials said', 'In the end'])}, " + text[0].lower() + text[1:]
        if text not in cands:
            cands.append(text)
    return cands


def make_pairs(n_records=12, k=6, seed=0):
    rng = random.Random(seed)
    rows = []
    for r in range(n_records):
        rid = f"s0-{r}-0"
        cands = make_candidates(rng, k)
        for i, j in combinations(range(k), 2):
            rows.append(row(cands[i], cands[j], "paraphrase", i, j, rid))
            a, b = (i, j) if len(cands[i]) >= len(cands[j]) else (j, i)
            rows.append(row(cands[a], cands[b], "summary", a, b, rid))
    return pd.DataFrame(rows)


def critics(scorer, **kw):
    filters = [
        LengthFilter(**kw.get("length", {})),
        NumbersFilter(),
        DiversityFilter(**kw.get("diversity", {})),
        NLIFilter(scorer, **kw.get("nli", {})),
    ]
    return filters, DedupFilter(scorer)


@pytest.fixture(scope="module")
def generated():
    return make_pairs()


def test_cheap_first_equals_score_all(generated):
    assert len(generated) >= 300
    cheap_scorer, all_scorer = Counting(StandInScorer()), Counting(StandInScorer())
    out_cheap, edges_cheap = run_critics(generated, *critics(cheap_scorer))
    out_all, edges_all = run_critics(generated, *critics(all_scorer), score_all=True)
    assert len(out_cheap) == len(out_all) == len(generated)
    kept_cheap = set(out_cheap.loc[out_cheap["reject"] == "", "pair_id"])
    kept_all = set(out_all.loc[out_all["reject"] == "", "pair_id"])
    assert kept_cheap == kept_all
    assert out_cheap["reject"].tolist() == out_all["reject"].tolist()  # first failing reason identical
    pd.testing.assert_frame_equal(edges_cheap, edges_all)
    # the NLI critic saw fewer rows cheap-first (dedup's edge rows are the same in both modes)
    edge_rows = 2 * len(edges_cheap)
    assert cheap_scorer.rows - edge_rows < all_scorer.rows - edge_rows
    # the generated data exercises every critic
    counts = funnel(out_cheap)
    for task in ("paraphrase", "summary"):
        assert counts[task]["kept"] > 0 and counts[task]["removed"]["length"] > 0
    removed = merge_funnels([{"x": counts["paraphrase"]}, {"x": counts["summary"]}])["x"]["removed"]
    assert all(removed[n] > 0 for n in ("length", "numbers", "diversity", "nli", "dedup")), removed
    # not-yet-rejected rows only were NLI-scored: rejected-before-NLI rows have NaN
    cheap_rejected = out_cheap["reject"].str.match(r"(length|numbers|diversity)_")
    assert out_cheap.loc[cheap_rejected, "nli_forward"].isna().all()
    assert out_cheap.loc[~cheap_rejected, "nli_forward"].notna().all()


def test_decide_rethreshold(generated):
    scorer = Counting(StandInScorer())
    out, edges = run_critics(generated, *critics(scorer))
    # re-deciding with the same thresholds reproduces the run
    filters, dedup = critics(None)
    assert decide(out, filters, dedup, edges).tolist() == out["reject"].tolist()

    # tighter thresholds: every needed score exists, so offline == a fresh run
    tight = dict(length={"paraphrase_max": 1.2}, diversity={"max_rougeL": 0.6}, nli={"threshold": 0.9})
    fresh, _ = run_critics(generated, *critics(StandInScorer(), **tight))
    filters, dedup = critics(None, **tight)
    calls = scorer.calls
    offline = decide(out, filters, dedup, edges)
    assert scorer.calls == calls  # no model
    assert offline.tolist() == fresh["reject"].tolist()
    assert (offline != out["reject"]).any()

    # loosened length: rows the run never NLI-scored are flagged, never silently kept
    loose = dict(length={"paraphrase_min": 0.1, "paraphrase_max": 10.0, "summary_max": 2.0})
    fresh, _ = run_critics(generated, *critics(StandInScorer(), **loose))
    filters, dedup = critics(None, **loose)
    offline = decide(out, filters, dedup, edges)
    flagged = offline == "nli_not_scored"
    assert flagged.sum() > 0
    assert out.loc[flagged, "nli_forward"].isna().all()
    assert out.loc[flagged, "reject"].str.startswith("length_").all()
    # where the scores exist, the critics decide as a fresh run would (before dedup, whose groups
    # grow in the fresh run because it NLI-scores the new rows)
    pre_offline, pre_fresh = decide(out, filters), decide(fresh, filters)
    assert (pre_offline[~flagged] == pre_fresh[~flagged]).all()
    assert (pre_fresh[flagged] != "nli_not_scored").all()  # a fresh run does score them

    # loosened NLI: new survivors need dedup edges the run never computed -> visible, not a pass
    filters, dedup = critics(None, nli={"threshold": 0.5})
    with pytest.raises(ValueError, match="lacks"):
        decide(out, filters, dedup, edges)
    relaxed = decide(out, filters, dedup, edges, missing_edges="not_scored")
    assert (relaxed == "dedup_not_scored").any()


def test_all_rejected_batch():
    scorer = Counting(StandInScorer())
    pairs = frame(
        row("Short.", "This target is far too long for a paraphrase of it.", i=0, j=1),
        row("Tiny one.", "And this one is also much longer than its source.", "summary", i=2, j=3),
    )
    out, edges = run_critics(pairs, *critics(scorer))
    assert out["reject"].tolist() == ["length_too_long", "length_too_long"]
    assert scorer.calls == 0
    assert edges.empty and list(edges.columns) == list(EDGE_COLUMNS)
    assert out["nli_forward"].isna().all()
    f = funnel(out)
    assert f["paraphrase"]["kept"] == 0 and f["summary"]["kept"] == 0
    assert f["paraphrase"]["removed"]["length"] == 1 and f["summary"]["removed"]["length"] == 1
    # an empty batch does not crash either
    empty, edges = run_critics(pairs.iloc[:0], *critics(scorer))
    assert empty.empty and edges.empty and scorer.calls == 0
    assert funnel(empty)["paraphrase"] == {
        "pairs_in": 0,
        "removed": {"length": 0, "numbers": 0, "diversity": 0, "nli": 0, "dedup": 0},
        "kept": 0,
    }


def test_funnel_shards_add_up(generated):
    out, _ = run_critics(generated, *critics(StandInScorer()))
    whole = funnel(out)
    for task, entry in whole.items():
        assert entry["pairs_in"] == entry["kept"] + sum(entry["removed"].values())
    shards = [funnel(g) for _, g in out.groupby(out["record_id"].str.split("-").str[1].astype(int) % 3)]
    assert merge_funnels(shards) == whole
    # reasons are attributed by registered name, not by the text before the first "_"
    odd = pd.DataFrame({"task": ["paraphrase"] * 3, "reject": ["nli_reverse_low", "dedup_not_scored", "weird"]})
    assert funnel(odd)["paraphrase"]["removed"] == {
        "length": 0, "numbers": 0, "diversity": 0, "nli": 1, "dedup": 1, "other": 1
    }


def test_run_critics_keeps_index_and_resets_stale_scores():
    pairs = frame(
        row("The cat sat on the mat.", "On the mat sat the cat."),
        row("The cat sat.", "The cat sat on the mat all day long, purring.", i=0, j=2),
    )
    pairs.index = [10, 20]
    pairs["nli_forward"] = [0.0, 0.99]  # stale values from an earlier run
    out, _ = run_critics(pairs, *critics(StandInScorer()))
    assert list(out.index) == [10, 20]
    assert out["reject"].tolist() == ["", "length_too_long"]
    assert out.loc[10, "nli_forward"] == pytest.approx(0.95) and np.isnan(out.loc[20, "nli_forward"])


# ------------------------------------------------------------------------------------------------
# HFNLIScorer on a tiny random-init model

ID2LABEL = {0: "contradiction", 1: "entailment", 2: "neutral"}

NLI_PREMISES = [
    "the cat sat on the mat",
    "a man is playing a guitar on the stage tonight",
    "two dogs run",
    "the council approved three new projects after a long debate on monday",
    "rain",
    "she reads a book in the garden while the sun sets slowly behind the hills",
    "the team hired twelve engineers",
]
NLI_HYPOTHESES = [
    "a cat is on a mat",
    "a man plays music",
    "animals are running outside in the park",
    "projects were approved",
    "it is raining heavily in the city today",
    "a woman is reading",
    "nobody was hired",
]


def _fallback_models_module():
    """Stand-in for distill.models while it is being written (used only if it is missing)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    mod = types.ModuleType("distill.models")

    def load_nli(name_or_path, *, device="cpu", dtype="auto", trust_remote_code=False):
        model = AutoModelForSequenceClassification.from_pretrained(
            name_or_path, dtype=dtype, trust_remote_code=trust_remote_code
        ).to(device)
        tok = AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
        return model.eval(), tok

    def label_indices(config):
        names = {str(v).lower(): int(k) for k, v in config.id2label.items()}
        return {name: names[name] for name in ("entailment", "neutral", "contradiction")}

    mod.load_nli, mod.label_indices = load_nli, label_indices
    return mod


@pytest.fixture(scope="module")
def tiny_nli_path(tmp_path_factory):
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast, RobertaConfig, RobertaForSequenceClassification

    path = tmp_path_factory.mktemp("tiny-nli")
    specials = ["<s>", "<pad>", "</s>", "<unk>"]
    words = sorted({w for s in NLI_PREMISES + NLI_HYPOTHESES for w in s.split()})
    vocab = {t: i for i, t in enumerate(specials + words)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>",
        pair="<s> $A </s> </s> $B </s>",
        special_tokens=[(t, vocab[t]) for t in ("<s>", "</s>")],
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>",
        model_max_length=64,
    )
    fast.save_pretrained(path)
    torch.manual_seed(0)
    config = RobertaConfig(
        vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=72, type_vocab_size=1, pad_token_id=1,
        bos_token_id=0, eos_token_id=2, num_labels=3, id2label=ID2LABEL,
        label2id={v: k for k, v in ID2LABEL.items()}, initializer_range=0.5,
    )
    model = RobertaForSequenceClassification(config).eval()
    with torch.no_grad():  # distinct label biases make a reordering mistake obvious
        model.classifier.out_proj.bias.copy_(torch.tensor([-1.0, 1.5, 0.2]))
    model.save_pretrained(path)
    return str(path)


@pytest.fixture
def nli_models(monkeypatch):
    try:
        import distill.models as real

        if hasattr(real, "load_nli") and hasattr(real, "label_indices"):
            return real
    except ImportError:
        pass
    fallback = _fallback_models_module()
    monkeypatch.setitem(sys.modules, "distill.models", fallback)
    return fallback


def _reference_probs(scorer, premises, hypotheses):
    """Softmax of the model's own label order, one unpadded row at a time."""
    import torch

    out = []
    for p, h in zip(premises, hypotheses):
        enc = scorer.tokenizer(p, h, return_tensors="pt", truncation=True, max_length=scorer.max_length)
        with torch.inference_mode():
            out.append(torch.softmax(scorer.model(**enc).logits.float(), -1)[0].numpy())
    return np.array(out, dtype=np.float64)


def test_hf_scorer_shape_order_and_reordering(tiny_nli_path, nli_models):
    scorer = HFNLIScorer(tiny_nli_path, max_tokens_per_batch=64, max_length=32)
    probs = scorer(NLI_PREMISES, NLI_HYPOTHESES)
    assert probs.shape == (len(NLI_PREMISES), 3) and probs.dtype == np.float64
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-9)
    ref = _reference_probs(scorer, NLI_PREMISES, NLI_HYPOTHESES)
    # id2label {0: contradiction, 1: entailment, 2: neutral} -> output [entail, neutral, contra] = ref[:, [1, 2, 0]]
    np.testing.assert_allclose(probs[:, 0], ref[:, 1], atol=1e-5)
    np.testing.assert_allclose(probs, ref[:, [1, 2, 0]], atol=1e-5)
    assert probs[:, 0].std() > 1e-3  # the rows really differ (not a constant model)

    # input order and batch budget do not matter
    perm = np.random.default_rng(0).permutation(len(NLI_PREMISES))
    shuffled = scorer([NLI_PREMISES[i] for i in perm], [NLI_HYPOTHESES[i] for i in perm])
    np.testing.assert_allclose(shuffled, probs[perm], atol=1e-5)
    for budget in (1, 40, 100_000):
        other = HFNLIScorer.__new__(HFNLIScorer)
        other.__dict__.update(scorer.__dict__, max_tokens_per_batch=budget)
        np.testing.assert_allclose(other(NLI_PREMISES, NLI_HYPOTHESES), probs, atol=1e-5)
    assert scorer([], []).shape == (0, 3)
    with pytest.raises(ValueError):
        scorer(["a"], [])


def test_hf_scorer_token_budget_batches(tiny_nli_path, nli_models):
    scorer = HFNLIScorer(tiny_nli_path, max_tokens_per_batch=50, max_length=32)
    seen = []
    forward = scorer._forward

    def spy(batch):
        seen.append(tuple(batch["input_ids"].shape))
        return forward(batch)

    scorer._forward = spy
    scorer(NLI_PREMISES, NLI_HYPOTHESES)
    assert sum(rows for rows, _ in seen) == len(NLI_PREMISES)
    assert all(rows == 1 or rows * width <= 50 for rows, width in seen)
    widths = [w for _, w in seen]
    assert widths == sorted(widths, reverse=True)  # longest first


class OOMAbove(HFNLIScorer):
    """Raises a CUDA out-of-memory error for batches of more than ``limit`` rows."""

    limit = 2
    error = "torch"

    def _forward(self, batch):
        import torch

        if batch["input_ids"].shape[0] > self.limit:
            if self.error == "torch":
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
            raise RuntimeError("CUDA error: out of memory")
        return super()._forward(batch)


@pytest.mark.parametrize("error", ["torch", "runtime"])
def test_hf_scorer_oom_split(tiny_nli_path, nli_models, error):
    plain = HFNLIScorer(tiny_nli_path, max_tokens_per_batch=100_000, max_length=32)
    expected = plain(NLI_PREMISES, NLI_HYPOTHESES)
    oom = OOMAbove(tiny_nli_path, max_tokens_per_batch=100_000, max_length=32)
    oom.error = error
    got = oom(NLI_PREMISES, NLI_HYPOTHESES)
    assert got.shape == expected.shape  # no row dropped
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert oom.oom_splits > 0

    oom.limit = 0  # even a single row runs out of memory: raise, never drop it
    with pytest.raises(RuntimeError, match="out of memory"):
        oom(NLI_PREMISES[:2], NLI_HYPOTHESES[:2])


def test_hf_scorer_other_errors_propagate(tiny_nli_path, nli_models):
    class Broken(HFNLIScorer):
        def _forward(self, batch):
            raise RuntimeError("shape mismatch")

    scorer = Broken(tiny_nli_path, max_length=32)
    with pytest.raises(RuntimeError, match="shape mismatch"):
        scorer(NLI_PREMISES, NLI_HYPOTHESES)
    assert scorer.oom_splits == 0
