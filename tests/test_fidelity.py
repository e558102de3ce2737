"""Numbers comparable with the papers' (issue 24): each fixed metric on a case worked out by hand under the
reference definition, and a case that tells the two conventions apart where there are two."""

import json
import logging
import math

import pytest

from editcore.metrics import conflicts as C
from editcore.metrics import counterfact as cf
from editcore.metrics import multihop as mh
from editcore.metrics.general import rouge_mean, rouge_n, standard_error
from editcore.metrics.numeric import LOG_FLOOR
from editcore.metrics.scoring import PairScore


def ps(*probs):
    return PairScore(tuple(max(math.log(p), LOG_FLOOR) for p in probs), tuple(False for _ in probs))


class Table:
    """pairs() from {(prompt, target): PairScore}; greedy() answers by the longest key the prompt ends with."""

    def __init__(self, pairs=None, texts=None):
        self.table, self.texts = pairs or {}, texts or {}

    def pairs(self, prompts, targets):
        return [self.table[(p, t)] for p, t in zip(prompts, targets)]

    def greedy(self, prompts, n):
        out = []
        for p in prompts:
            keys = [k for k in self.texts if p.endswith(k)]
            out.append(self.texts[max(keys, key=len)] if keys else "")
        return out


# ---- CounterFact ------------------------------------------------------------------------------------------

def _fact(es, ps_, ns):
    """A CounterFact result dict with the given per-prompt successes (magnitudes 0)."""
    row = lambda s: {"success": s, "p_expected": 0.5, "p_other": 0.5}  # noqa: E731
    return {"convention": "rome_mean_nll", "edit": [row(x) for x in es], "paraphrase": [row(x) for x in ps_],
            "neighbourhood": [row(x) for x in ns], "score": None}


def test_score_is_the_harmonic_mean_of_dataset_level_rates():
    # Fact A: ES 1, PS 1, NS 1/2 -> its own Score 3/(1+1+2) = 0.75. Fact B: ES 1, PS 0, NS 1 -> Score 0.
    # Dataset: ES 1, PS 1/2, NS 3/4 -> Score = 3/(1 + 2 + 4/3) = 9/13; the mean of per-fact Scores is 0.375.
    a, b = _fact([True], [True, True], [True, False]), _fact([True], [False, False], [True, True])
    a["score"], b["score"] = 0.75, 0.0
    agg = cf.aggregate([a, b])
    assert (agg["es"]["mean"], agg["ps"]["mean"], agg["ns"]["mean"]) == (1.0, 0.5, 0.75)
    assert agg["score"] == pytest.approx(9 / 13)
    assert agg["mean_of_fact_scores"] == pytest.approx(0.375)
    assert agg["es"]["n"] == 2 and agg["convention"] == "rome_mean_nll"


def test_counterfact_defaults_to_rome_and_carries_the_product_too():
    # New target "London" has two tokens, 0.5 and 0.2: product 0.1 < P(Paris) = 0.2, but the mean-NLL value
    # exp((ln .5 + ln .2)/2) = sqrt(0.1) = 0.316 > 0.2: ES is 1 in ROME's convention, 0 in the product one.
    sc = Table({("e", "London"): ps(0.5, 0.2), ("e", "Paris"): ps(0.2)})
    r = cf.counterfact_from_scores("e", [], [], "London", "Paris", sc)
    assert r.convention == "rome_mean_nll" and r.es.mean == 1.0
    assert r.em.mean == pytest.approx(math.sqrt(0.1) - 0.2)
    assert r.other["convention"] == "product" and r.other["es"] == 0.0
    assert r.other["em"] == pytest.approx(0.1 - 0.2)
    json.dumps(r.to_dict(), allow_nan=False)


def test_aggregate_refuses_mixed_conventions():
    a = _fact([True], [], [])
    b = {**_fact([True], [], []), "convention": "product"}
    with pytest.raises(ValueError, match="mix"):
        cf.aggregate([a, b])


# ---- MQuAKE -----------------------------------------------------------------------------------------------

def test_mquake_edit_wise_is_pooled_over_edits():
    # Instance 1: 4 edits, 1 recalled; instance 2: 1 edit, recalled. Pooled: 2/5 = 0.4; the mean of
    # per-instance shares would be (0.25 + 1)/2 = 0.625.
    o1 = mh.MultiHopOutcome("a", [True, False, False, False], [True], [False], [""])
    o2 = mh.MultiHopOutcome("b", [True], [True], [True], [""])
    s = mh.MultiHopSummary([o1, o2])
    assert s.ew.mean == pytest.approx(0.4) and s.ew.n == 5
    assert s.iw.mean == 1.0 and s.mh.mean == 0.5


def test_mquake_aliases_count_and_prompts_follow_the_few_shot_structure():
    hops = [mh.Hop("Hey Jude was performed by", "Who performed Hey Jude?", ("Madonna", "Madonna Ciccone"), True),
            mh.Hop("The capital of Australia is", "What is the capital of Australia?", ("Canberra", "Canberra ACT"),
                   False)]
    texts = {"Hey Jude was performed by": " Madonna Ciccone, who",  # the alias, as a cloze continuation
             "Q: What is the capital of Australia? A:": " Canberra ACT\nQ: What",  # an alias, asked few-shot
             "Q: Which city is the capital of the country of the Hey Jude singer? A:": " Canberra\nQ:"}
    o = mh.multihop_outcome(Table(texts=texts), "x", [("Hey Jude was performed by", ("Madonna", "Madonna Ciccone"))],
                            hops, ["Which city is the capital of the country of the Hey Jude singer?"],
                            ["Canberra", "Canberra ACT"])
    assert o.edit_wise == [True] and o.single_hops == [True, True] and o.iw and o.mh
    prompt = mh.qa_prompt("Who?")
    assert prompt.count("\nQ: ") == len(mh.MULTIHOP_DEMOS) and prompt.endswith("Q: Who? A:")
    assert all(f"Q: {q} A: {a}\n" in prompt for q, a in mh.MULTIHOP_DEMOS)


def test_mquake_cot_answer_is_read_after_answer():
    cot = mh.cot_prompt("Q?")
    assert cot.endswith("Question: Q?\nThoughts:") and cot.count("\nAnswer: ") == len(mh.COT_DEMOS)
    assert mh.is_answer(" X is in Y. Y's capital is Z.\nAnswer: Z\n\nQuestion:", "cot", ["Z"])
    assert not mh.is_answer(" X is in Y. Y's capital is Z.", "cot", ["Z"])  # never reached "Answer:"
    assert not mh.is_answer(" Zed", "few-shot", ["Z"])  # exact match, not a prefix


def test_mquake_loader_keeps_hop_aliases_and_questions(tmp_path):
    from editcore.benchmarks import load_benchmark
    from editcore.metrics.multihop import case_hops, edit_targets

    rw = {"prompt": "{} was performed by", "subject": "Hey Jude", "target_new": {"str": "Madonna"},
          "target_true": {"str": "The Beatles"}, "relation_id": "P175", "question": "Who performed Hey Jude?"}
    hop = {"question": "Who performed Hey Jude?", "cloze": "Hey Jude was performed by", "answer": "Madonna",
           "answer_alias": ["Madonna Ciccone"]}
    hop2 = {"question": "Who is Madonna's spouse?", "cloze": "Madonna is married to", "answer": "Guy Ritchie",
            "answer_alias": []}
    rec = {"case_id": 1, "requested_rewrite": [rw], "questions": ["q?"], "answer": "a", "new_answer": "b",
           "new_answer_alias": ["bee"], "new_single_hops": [hop, hop2], "single_hops": []}
    path = tmp_path / "mq.json"
    path.write_text(json.dumps([rec]))
    case = load_benchmark("mquake", path)[0]
    assert case.new_single_hops[0].aliases == ("Madonna Ciccone",)
    assert [h.edited for h in case_hops(case)] == [True, False]
    assert case_hops(case)[1].question == "Who is Madonna's spouse?"
    assert edit_targets(case) == [("Hey Jude was performed by", ("Madonna", "Madonna Ciccone"))]


# ---- ConflictEdit -----------------------------------------------------------------------------------------

def test_conflict_score_explicit_and_implicit_differ():
    # After both edits: P(q1 -> o1) = 0.3; edit 2's own fact 0.5 (> 0.3: a conflict, explicit); what edit 2
    # implies for q1 0.2 (< 0.3: no conflict, implicit).
    o = C.ConflictOutcome("r", "reverse", "rome_mean_nll", p1_o1=0.6, p2_o1=0.3, p2_o2=0.5, p0_tied=None,
                          p2_tied=None, p2_o2_implicit=0.2)
    assert o.conflict is True and o.conflict_implicit is False
    s = C.ConflictSummary([o])
    assert s.cs.mean == 1.0 and s.cs_implicit.mean == 0.0 and s.succ.n == 0 and "explicit" in s.cs_variant


def test_coverage_success_is_edit_two_alone():
    # Edit 2 alone: P(q2 -> o2) = 0.4 > P(q1 -> o1) = 0.1 -> Succ 1; after both edits a tie (0.3, 0.3) -> CS 0.
    o = C.ConflictOutcome("c", "coverage", "rome_mean_nll", 0.6, 0.3, 0.3, None, None, 0.3, alone_o1=0.1, alone_o2=0.4)
    s = C.ConflictSummary([o])
    assert o.success is True and s.succ.mean == 1.0 and s.cs.mean == 0.0


def test_conflict_query_counts_every_template_as_released():
    # The edit prompt is also among the relation's templates: the released code averages over both copies.
    q = C.query("{} is in", "X", "Y", ["{} is in", "{} lies in"])
    assert q.prompts == ("X is in", "X is in", "X lies in")
    sc = Table({("X is in", "Y"): ps(0.6), ("X lies in", "Y"): ps(0.3)})
    assert C.prob(sc, q, "rome_mean_nll") == pytest.approx((0.6 + 0.6 + 0.3) / 3)


def test_conflict_spec_from_a_reverse_record():
    rec = {"type": "reverse", "triples": [], "edits": [
        {"relation": {"id": "P1", "prompt": "The spouse of {} is"}, "subject": {"label": "A"},
         "object": {"label": "B"}, "new_object": {"label": "C"}},
        {"relation": {"id": "P2", "prompt": "The spouse of {} is"}, "subject": {"label": "C"},
         "object": {"label": "A"}, "new_object": {"label": "D"}}]}
    spec = C.conflict_spec_from_record(rec, {})
    assert spec.q2.prompts == ("The spouse of C is",) and spec.q2.target == "D"  # explicit: edit 2's fact
    assert spec.q2_implicit.prompts == ("The spouse of D is",) and spec.q2_implicit.target == "C"


# ---- downstream probes ------------------------------------------------------------------------------------

def test_standard_error_and_rouge_by_hand():
    # [1, 0, 1, 1]: mean 0.75, sample variance ((3 * 0.0625) + 0.5625) / 3 = 0.25, SE = sqrt(0.25 / 4) = 0.25.
    assert standard_error([1, 0, 1, 1]) == pytest.approx(0.25)
    assert standard_error([1]) == 0.0
    # "the cat sat" vs "the cat ran": unigrams 2/3 both ways -> F 2/3; bigrams 1/2 -> F 1/2; LCS 2 -> F 2/3.
    assert rouge_n("the cat sat", "the cat ran", 1) == pytest.approx(2 / 3)
    assert rouge_n("the cat sat", "the cat ran", 2) == pytest.approx(0.5)
    assert rouge_mean("the cat sat", "the cat ran") == pytest.approx((2 / 3 + 0.5 + 2 / 3) / 3)


def test_probe_sets_are_large_and_bundled_ones_stand_in_offline(tmp_path, monkeypatch):
    from editcore import probes
    from editcore.metrics.general import DEFAULT_SIZES

    monkeypatch.setenv("EDITSCOPE_SHARED_DATA", str(tmp_path))  # no real files here, and the hub is off
    probes._real_items.cache_clear()
    try:
        for task in probes.TASKS:
            items, source = probes.probe_items(task)
            assert source.startswith("bundled:")
            assert len(items) >= min(DEFAULT_SIZES[task], 30)
        assert len(probes.probe_items("sentiment")[0]) >= 200 and len(probes.probe_items("piqa")[0]) >= 100
        gsm = probes.probe_items("arithmetic")[0][0]
        assert gsm["answer"] == "18" and "####" in gsm["solution"]
    finally:
        probes._real_items.cache_clear()


def test_gsm8k_prompt_gives_the_worked_solution():
    from editcore.metrics.general import PROMPT_OF

    p = PROMPT_OF["arithmetic"]([], {"question": "2+2?", "solution": "2 plus 2 is 4.\n#### 4", "answer": "4"})
    assert p.startswith("Q: 2+2? A: ") and "2 plus 2 is 4." in p and "####" not in p and p.endswith("is:")


# ---- benchmark files --------------------------------------------------------------------------------------

def _cf(case_id, subject="Laurent Cars"):
    return {"case_id": case_id, "requested_rewrite": {"prompt": "{} was employed in", "subject": subject,
                                                      "target_new": {"str": "Philadelphia"},
                                                      "target_true": {"str": "Paris"}}}


def test_a_file_is_judged_as_a_whole(tmp_path, caplog):
    from editcore.benchmarks import load_benchmark

    easy = {"prompt": "The mother tongue of X is", "subject": "X", "target_new": "English", "ground_truth": "French"}
    cases = [
        ("a.jsonl", "{not json\n" + json.dumps(_cf(2)) + "\n", ["counterfact:2"]),  # first line does not parse
        ("b.json", json.dumps([{"prompt": "x"}, easy]), ["counterfact:1"]),  # EasyEdit split, first malformed
        ("c.json", json.dumps([{"case_id": 1}, _cf(2)]), ["counterfact:2"]),  # ROME schema, first malformed
    ]
    for name, text, ids in cases:
        path = tmp_path / name
        path.write_text(text)
        with caplog.at_level(logging.WARNING, logger="editcore.benchmarks"):
            caplog.clear()
            assert [c.id for c in load_benchmark("counterfact", path)] == ids
        assert any("record 0 skipped" in r.getMessage() for r in caplog.records), name


def test_zsre_subject_replace_question_is_subject_replace_not_one_hop(tmp_path):
    from editcore.benchmarks import load_benchmark
    from editcore.metrics.portability import portability_probes

    rec = {"subject": "IAAF Combined Events Challenge", "src": "When was the inception of IAAF Combined Events "
           "Challenge?", "rephrase": "When was it launched?", "alt": "2006", "answers": ["1998"],
           "alternative_subject": "Combined Events Challenge", "alter_subject_question":
           "When was the inception of Combined Events Challenge?"}
    path = tmp_path / "zsre_subject_replace.json"
    path.write_text(json.dumps([rec]))
    case = load_benchmark("portability_subject_replace", path)[0]
    assert case.one_hop == () and case.aliases == ()
    probes = portability_probes(case, "2006")
    assert probes["subject_replace"] == [("When was the inception of Combined Events Challenge?", "2006")]
    assert probes["one_hop"] == []
    assert case.from_dict(json.loads(json.dumps(case.to_dict()))) == case
