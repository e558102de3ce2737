"""Metric formulas on hand-built numbers whose answers are worked out by hand."""

import json
import math

import pytest
import torch

from editcore.metrics import conflicts as C
from editcore.metrics import counterfact as cf
from editcore.metrics.general import first_number, lcs_length, ngram_entropy, ngram_entropy_one, rouge_l
from editcore.metrics.matching import exact_match, normalise, starts_with_answer
from editcore.metrics.multihop import MultiHopSummary, multihop_outcome
from editcore.metrics.scoring import PairScore
from editcore.metrics.shifts import top_shifts
from editcore.metrics.numeric import LOG_FLOOR


class FakeScorer:
    """Answers pairs() from a table {(prompt, target): PairScore} and greedy() from {prompt: text}."""

    def __init__(self, pairs=None, texts=None):
        self.table, self.texts = pairs or {}, texts or {}

    def pairs(self, prompts, targets):
        return [self.table[(p, t)] for p, t in zip(prompts, targets)]

    def greedy(self, prompts, n):
        return [self.texts[p] for p in prompts]


def ps(*probs, correct=None):
    lp = tuple(math.log(p) if p > 0 else float("-inf") for p in probs)
    lp = tuple(max(x, LOG_FLOOR) for x in lp)
    return PairScore(lp, tuple(correct if correct is not None else [False] * len(probs)))


def test_pair_score_conventions_multi_token():
    s = ps(0.5, 0.2)  # product 0.1; mean NLL = -(ln .5 + ln .2)/2 -> exp(-mean) = sqrt(0.1)
    assert s.value("product") == pytest.approx(0.1)
    assert s.value("rome_mean_nll") == pytest.approx(math.sqrt(0.1))
    assert ps(0.5, 0.2, correct=[True, False]).token_acc == 0.5


def test_counterfact_by_hand_and_conventions_disagree():
    E, P1, N1, N2 = "edit", "para", "n1", "n2"
    table = {
        # edit prompt: new is a 2-token target 0.6*0.6=0.36 vs true 0.3 -> product: ES=1
        (E, "London"): ps(0.6, 0.6, correct=[True, True]), (E, "Paris"): ps(0.3),
        # paraphrase: new 0.5*0.1=0.05 vs true 0.2: product fails; mean-NLL: sqrt(.05)=0.224 > 0.2 succeeds
        (P1, "London"): ps(0.5, 0.1, correct=[True, False]), (P1, "Paris"): ps(0.2),
        # neighbour 1: true 0.4 vs new 0.1 -> kept; neighbour 2: exact tie -> failure
        (N1, "Paris"): ps(0.4), (N1, "London"): ps(0.1),
        (N2, "Paris"): ps(0.25), (N2, "London"): ps(0.25),
    }
    sc = FakeScorer(table)
    r = cf.counterfact_from_scores(E, [P1], [(N1, "Paris"), (N2, "Paris")], "London", "Paris", sc, "product")
    assert (r.es.mean, r.ps.mean, r.ns.mean) == (1.0, 0.0, 0.5)
    assert r.em.mean == pytest.approx(0.36 - 0.3)
    assert r.pm.mean == pytest.approx(0.05 - 0.2)
    assert r.nm.mean == pytest.approx(((0.4 - 0.1) + 0.0) / 2)
    assert r.score == 0.0  # harmonic mean with PS = 0
    assert r.edit_token_acc.mean == 1.0 and r.paraphrase_token_acc.mean == 0.5
    assert r.convention == "product"
    r2 = cf.counterfact_from_scores(E, [P1], [(N1, "Paris"), (N2, "Paris")], "London", "Paris", sc, "rome_mean_nll")
    assert r2.ps.mean == 1.0
    assert r2.score == pytest.approx(3 / (1 + 1 + 2))  # harmonic(1, 1, 0.5)
    assert r2.convention == "rome_mean_nll"
    json.dumps(r2.to_dict(), allow_nan=False)


def test_counterfact_zero_probabilities_are_finite():
    table = {("e", "A"): ps(0.0), ("e", "B"): ps(0.0)}
    r = cf.counterfact_from_scores("e", [], [], "A", "B", FakeScorer(table), "product")
    assert r.es.mean == 0.0  # both floored to the same value: a tie, so a failure
    assert math.isfinite(r.em.mean)
    json.dumps(r.to_dict(), allow_nan=False)


def test_conflict_formulas():
    assert C.conflict_magnitude(0.8, 0.2) == pytest.approx(0.75)
    assert C.conflict_magnitude(0.1, 0.9) == -1.0  # clamped
    assert C.conflict_magnitude(0.0, 0.0) == 0.0  # floored denominator, no NaN
    assert C.tied_fact_damage(0.5, 0.1) == pytest.approx(0.8)
    o = C.ConflictOutcome("x", "coverage", "rome_mean_nll", p1_o1=0.6, p2_o1=0.3, p2_o2=0.3,
                          p0_tied=None, p2_tied=None)
    assert o.conflict is False  # tie is not a conflict win
    assert o.magnitude == pytest.approx(0.5)
    s = C.ConflictSummary([o, C.ConflictOutcome("y", "composite", "product", 0.5, 0.5, 0.9, 0.4, 0.1)])
    assert s.cs.mean == 0.5 and s.cm.mean == pytest.approx(0.25) and s.tfd.mean == pytest.approx(0.75)
    assert s.tfd.n == 1


def test_round_trip_formulas():
    o = C.RoundOutcome("r", "product", p1_new=0.6, p1_old=0.2, p2_old=0.1, p2_new=0.4, p0_old=0.5,
                       others_pre=[0.2, 0.3, 0.1], others_post=[0.1, 0.3, 0.05])
    assert o.success == 0.5  # first edit worked, the way back did not
    assert o.ignore_rate == pytest.approx(2 / 3)  # two of three others fell; equal is not a fall
    assert o.failed is True
    assert o.n_objects == 4
    p, q = [0.1, 0.1, 0.3, 0.05], [0.5, 0.2, 0.3, 0.1]
    pn, qn = [x / sum(p) for x in p], [x / sum(q) for x in q]
    m = [(a + b) / 2 for a, b in zip(pn, qn)]
    js = 0.5 * sum(a * math.log(a / c) for a, c in zip(pn, m)) + 0.5 * sum(b * math.log(b / c) for b, c in zip(qn, m))
    assert o.distortion == pytest.approx(js)
    same = C.RoundOutcome("s", "product", 0.6, 0.2, 0.5, 0.1, 0.5, [0.2], [0.2])
    assert same.distortion == pytest.approx(0.0, abs=1e-12) and same.success == 1.0 and same.ignore_rate == 0.0


def test_rouge_l_by_hand():
    # LCS("the cat sat on the mat", "the cat is on the mat") = the cat on the mat = 5
    assert lcs_length("a b c d".split(), "a c d".split()) == 3
    p, r = 5 / 6, 5 / 6
    assert rouge_l("The cat sat on the mat.", "the cat is on the mat") == pytest.approx(2 * p * r / (p + r))
    assert rouge_l("", "anything") == 0.0
    assert rouge_l("x y", "z") == 0.0
    assert rouge_l("a b", "a b c d") == pytest.approx(2 * 1 * 0.5 / 1.5)


def test_ngram_entropy_by_hand():
    # "a b a b": bigrams ab, ba, ab -> H2 = -(2/3 log2 2/3 + 1/3 log2 1/3); trigrams aba, bab -> H3 = 1
    h2 = -(2 / 3 * math.log2(2 / 3) + 1 / 3 * math.log2(1 / 3))
    assert ngram_entropy_one("a b a b") == pytest.approx((2 / 3 * h2 + 4 / 3 * 1.0) / 2)
    assert ngram_entropy_one("a a a a a") == 0.0  # one repeated n-gram: no entropy (degenerate text)
    assert ngram_entropy(["a b a b", "a a a a a"]) == pytest.approx((2 / 3 * h2 + 4 / 3) / 4)


def test_matching_and_numbers():
    assert normalise("The  Nile!") == "nile"
    assert starts_with_answer(" Paris, France. It is", ["Paris"])
    assert not starts_with_answer(" Parisian food", ["Paris"])
    assert exact_match("the Blue Whale", ["blue whale"])
    assert first_number("The answer is 1,200 apples") == "1200"
    assert first_number("none") is None


def test_multihop_ew_iw_mh():
    from editcore.metrics.multihop import SINGLE_HOP_DEMOS, Hop, qa_prompt

    texts = {"Hey Jude was performed by": " Madonna and",
             qa_prompt("Where was Madonna born?", SINGLE_HOP_DEMOS): " Bay City\nQ:",
             qa_prompt("What language does the singer of Hey Jude speak?"): " French\n",
             qa_prompt("Which tongue does the Hey Jude performer use?"): " english\nQ: next"}
    sc = FakeScorer(texts=texts)
    hops = [Hop("Hey Jude was performed by", "Who sang Hey Jude?", ("Madonna",), True),
            Hop("Madonna was born in", "Where was Madonna born?", ("Detroit",), False)]
    o = multihop_outcome(sc, "m", [("Hey Jude was performed by", ("Madonna",))], hops,
                         ["What language does the singer of Hey Jude speak?",
                          "Which tongue does the Hey Jude performer use?"], ["English", "en"])
    assert o.ew == 1.0
    assert o.iw is False  # one single hop wrong
    assert o.mh is True  # any question suffices
    s = MultiHopSummary([o])
    assert (s.ew.mean, s.iw.mean, s.mh.mean) == (1.0, 0.0, 1.0)


class _Tok:
    def decode(self, ids):
        return f"t{ids[0]}"


def test_top_shifts_by_hand():
    pre = torch.tensor([0.5, 0.3, 0.2, 1e-9]).log()
    post = torch.tensor([0.2, 0.3, 0.5 - 1e-6, 1e-6]).log()
    up, down = top_shifts(pre, post, k=3, min_prob=1e-3, tok=_Tok())
    assert [t.token for t in up] == ["t2"]  # token 3 rose 1000x but stays invisible (below min_prob)
    assert [t.token for t in down] == ["t0"]
    assert up[0].p_pre == pytest.approx(0.2) and up[0].p_post == pytest.approx(0.5, rel=1e-4)
    assert down[0].dlogp == pytest.approx(math.log(0.2 / 0.5), rel=1e-5)
