"""Benchmark loaders on the real public samples in ../shared/data, plus malformed and wrong-format files."""

import json
import logging
import os
from pathlib import Path

import pytest

from editcore.benchmarks import BENCHMARKS, ChoiceItem, QAItem, SummaryItem, load_benchmark
from editcore.cases import Case, ConflictCase, MultiHopCase, Probe, RoundTripCase
from editcore.errors import EditScopeError, InputError

SHARED = Path(os.environ.get("EDITSCOPE_SHARED_DATA")
              or Path(__file__).resolve().parents[1].parent / "shared" / "data")


def shared(rel: str) -> Path:
    path = SHARED / rel
    if not path.is_file():
        pytest.skip(f"public sample {rel} is not in {SHARED} (set EDITSCOPE_SHARED_DATA)")
    return path


def test_counterfact_rome_schema():
    cases = load_benchmark("counterfact", shared("counterfact/counterfact.json"), limit=3)
    assert len(cases) == 3
    c = cases[0]
    assert isinstance(c, Case)
    assert (c.id, c.subject, c.target_true, c.targets_new) == ("counterfact:34", "Laurent Cars", "Paris", ("Philadelphia",))
    assert c.prompt == "{} was employed in" and c.relation_id == "P937"
    assert c.edit_prompt == "Laurent Cars was employed in"
    assert len(c.paraphrases) == 2 and "Laurent Cars" in c.paraphrases[0]
    assert len(c.neighbourhood) == 10 and {p.answer for p in c.neighbourhood} == {"Paris"}
    assert c.neighbourhood[0].prompt == "Sarah Bernhardt worked in the city of"
    assert c.generation_prompts and len(set(c.generation_prompts)) == len(c.generation_prompts)
    assert c.provenance == "counterfact:case_id=34"
    assert c.request().target_new == "Philadelphia"


def test_counterfact_easyedit_schema():
    cases = load_benchmark("counterfact", shared("counterfact/counterfact-edit.first2000.json"), limit=2)
    c = cases[0]
    assert c.prompt == "The mother tongue of {} is" and c.subject == "Danielle Darrieux"
    assert (c.target_true, c.target_new) == ("French", "English")
    assert c.paraphrases == ("Where Danielle Darrieux is from, people speak the language of",)
    assert c.neighbourhood[0].prompt == "Michel Rocard is a native speaker of"
    assert c.neighbourhood[0].answer == "French"


def test_counterfact_plus_distracting_prompts():
    c = load_benchmark("counterfact_plus", shared("counterfact_plus/counterfact_plus.json"), limit=1)[0]
    assert c.subject == "Laurent Cars" and len(c.distracting_neighbourhood) == 10
    assert c.distracting_neighbourhood[0] == "Laurent Cars was employed in Philadelphia. Sarah Bernhardt worked in the city of"


def test_zsre():
    cases = load_benchmark("zsre", shared("zsre/zsre_mend_eval.subset.json"), limit=5)
    c = cases[0]
    assert c.subject == "IAAF Combined Events Challenge"
    assert c.prompt == "When was the inception of {}?"
    assert (c.target_true, c.target_new) == ("1998", "2006")
    assert c.paraphrases == ("When was the IAAF Combined Events Challenge launched?",)
    assert c.neighbourhood[0].answer == "The String"


def test_mquake_hard():
    cases = load_benchmark("mquake", shared("mquake/MQuAKE-hard.json"), limit=2)
    m = cases[0]
    assert isinstance(m, MultiHopCase) and m.id == "mquake:7417"
    assert len(m.edits) == 4 and m.edits[0].subject == "Hey Jude" and m.edits[0].target_new == "Madonna"
    assert m.edits[0].target_true == "The Beatles"
    assert (m.answer, m.new_answer) == ("English", "Arabic")
    assert len(m.questions) == 3 and "English language" in m.answer_aliases
    hop = m.single_hops[0]
    assert (hop.prompt, hop.answer, hop.question) == ("Hey Jude was performed by", "The Beatles", "Who performed Hey Jude?")
    assert "Fab Four" in hop.aliases  # answer_alias counts (MQuAKE)
    assert m.new_single_hops[0].answer == "Madonna"


def test_conflictedit_reverse_and_composite():
    rev = load_benchmark("conflictedit", shared("pitfalls/GPT2-XL/reverse_edit.json"), limit=2)[0]
    assert isinstance(rev, ConflictCase) and rev.type == "reverse" and rev.rule == "P800>P170"
    e1, e2 = rev.edits
    assert (e1.subject, e1.target_true, e1.target_new) == ("Francisco de Goya", "The Second of May 1808",
                                                           "landscape with fighting bulls")
    assert e2.subject == "landscape with fighting bulls" and e2.target_new == "Richard Strauss"
    assert rev.implied_object == "Francisco de Goya"
    assert rev.tied[0].prompt == "The notable work of Francisco de Goya is"
    comp = load_benchmark("conflictedit", shared("pitfalls/GPT2-XL/composite_edit.json"), limit=1)[0]
    assert comp.type == "composite" and comp.prerequisites == (0,)
    assert comp.implied_object == "Gena Rowlands" and len(comp.tied) == 3
    assert comp.prompts_for("P22")[0] == "The biological father of {} is"
    cov = load_benchmark("conflictedit", shared("pitfalls/GPT2-XL/coverage_edit.json"), limit=1)[0]
    assert cov.type == "coverage" and cov.edits[1].target_true == cov.edits[0].target_new


def test_roundedit():
    r = load_benchmark("roundedit", shared("pitfalls/GPT2-XL/hard.json"), limit=1)[0]
    assert isinstance(r, RoundTripCase) and r.type == "1-2@P69"
    assert (r.subject, r.object, r.new_object) == ("Cary-Hiroyuki Tagawa", "Duarte High School", "University of Klagenfurt")
    assert r.true_objects == ("University of Southern California", "Duarte High School")
    assert r.prompts and r.prompts[0] == "{} completed his(her) education at"
    assert r.forward().target_new == r.new_object and r.backward().target_new == r.object


YAO = "yao2023_portability_locality"


def test_yao_one_hop_counterfact_and_zsre():
    c = load_benchmark("portability_one_hop", shared(f"{YAO}/portability/one_hop/counterfact_portability_gpt4.json"),
                       limit=1)[0]
    assert c.subject == "Spike Hughes" and c.target_new == "Philadelphia"
    hop = c.one_hop[-1]
    assert hop.answer == "Cheesesteaks" and hop.target == "Philadelphia" and "Spike Hughes" in hop.prompt
    z = load_benchmark("portability_one_hop", shared(f"{YAO}/portability/one_hop/zsre_mend_eval_portability_gpt4.json"),
                       limit=1)[0]
    assert z.one_hop[0].answer == "Athletics" and z.subject == "IAAF Combined Events Challenge"


def test_yao_subject_replace_and_inverse():
    c = load_benchmark("portability_subject_replace",
                       shared(f"{YAO}/portability/subject_replace/counterfact_subject_replace.json"), limit=1)[0]
    assert c.aliases == ("Mary Eliza Wright",) and c.one_hop == () and c.subject_replace == ()
    inv = load_benchmark("portability_inverse_relation",
                         shared(f"{YAO}/portability/inverse_relation/zsre_inverse_relation.json"), limit=1)[0]
    assert inv.reverse.prompt == "Who is Marian Clairmont's sister?"
    assert inv.reverse.answer == "Claire Clairmont" and inv.reverse.target == "Marian Clairmont"
    assert inv.one_hop == () and inv.aliases == () and inv.subject_replace == ()


def test_yao_zsre_subject_replace_file():
    """zsRE's Subject-Replace file (not in every copy of the data): ``alter_subject_question`` is the
    Subject-Replace probe, answered with the new target, and nothing lands in One-Hop."""
    from editcore.metrics.portability import portability_probes

    recs = json.loads(shared(f"{YAO}/portability/subject_replace/zsre_subject_replace.json").read_text())
    cases = load_benchmark("portability_subject_replace",
                           shared(f"{YAO}/portability/subject_replace/zsre_subject_replace.json"), limit=5)
    for rec, case in zip(recs, cases):
        probes = portability_probes(case, case.target_new)
        assert probes["subject_replace"] == [(rec["alter_subject_question"], rec["alt"])]
        assert probes["one_hop"] == [] and case.one_hop == ()


def test_yao_fields_land_in_their_families():
    """Real records of every Yao et al. file: each field feeds its own family (portability_probes, locality)."""
    from editcore.metrics.portability import portability_probes

    one = load_benchmark("portability_one_hop",
                         shared(f"{YAO}/portability/one_hop/counterfact_portability_gpt4.json"), limit=3)
    raw = json.loads(shared(f"{YAO}/portability/one_hop/counterfact_portability_gpt4.json").read_text())[:3]
    for case, rec in zip(one, raw):
        p = portability_probes(case, case.target_new)
        assert p["one_hop"] == [(rec["portability"]["New Question"], rec["portability"]["New Answer"])]
        assert p["subject_replace"] == [] and p["reverse_relation"] == []
    sr = load_benchmark("portability_subject_replace",
                        shared(f"{YAO}/portability/subject_replace/counterfact_subject_replace.json"), limit=3)
    raw = json.loads(shared(f"{YAO}/portability/subject_replace/counterfact_subject_replace.json").read_text())[:3]
    for case, rec in zip(sr, raw):
        p = portability_probes(case, case.target_new)
        rw = rec["requested_rewrite"]
        assert p["subject_replace"] == [(rw["prompt"].format(rec["alternative_subject"]), rw["target_new"]["str"])]
        assert p["one_hop"] == [] and p["reverse_relation"] == []
    z = load_benchmark("portability_one_hop",
                       shared(f"{YAO}/portability/one_hop/zsre_mend_eval_portability_gpt4.json"), limit=2)
    assert all(len(c.one_hop) == 1 and not c.subject_replace and c.reverse is None for c in z)
    inv = load_benchmark("portability_inverse_relation",
                         shared(f"{YAO}/portability/inverse_relation/zsre_inverse_relation.json"), limit=3)
    for case in inv:
        p = portability_probes(case, case.target_new)
        assert p["reverse_relation"] == [(case.reverse.prompt, case.subject)] and p["one_hop"] == []
    loc = load_benchmark("locality_distracting", shared(f"{YAO}/locality/counterfact_distracting_neighbor.json"),
                         limit=2)
    raw = json.loads(shared(f"{YAO}/locality/counterfact_distracting_neighbor.json").read_text())[:2]
    for case, rec in zip(loc, raw):
        assert case.attributes[-1] == Probe(rec["unrelated_relation"]["question"], rec["unrelated_relation"]["object"])
        assert list(case.distracting_neighbourhood) == rec["distracting_neighborhood_prompts"]
        assert case.one_hop[-1].answer == rec["portability"]["New Answer"]


def test_yao_distracting_and_other_attribution():
    c = load_benchmark("locality_distracting", shared(f"{YAO}/locality/counterfact_distracting_neighbor.json"),
                       limit=1)[0]
    assert len(c.distracting_neighbourhood) == 10
    assert c.distracting_neighbourhood[0].startswith("Spike Hughes originates from Philadelphia. ")
    assert c.attributes[-1].prompt == "What is Spike Hughes an instance of?" and c.attributes[-1].answer == "human"


def test_downstream_sets():
    piqa = load_benchmark("piqa", shared("downstream/piqa/piqa_valid.first200.jsonl"), limit=3)
    assert isinstance(piqa[0], ChoiceItem) and [p.label for p in piqa] == [0, 1, 1]
    assert piqa[0].context.startswith("How do I ready a guinea pig cage")
    sst = load_benchmark("sst2", shared("downstream/sst2/test-SentimentAnalysis.first200.tsv"), limit=2)
    assert sst[0].context == "it 's a charming and often affecting journey ." and sst[0].label == 1
    assert sst[1].label == 0 and sst[0].choices == ("negative", "positive")
    gsm = load_benchmark("gsm8k", shared("downstream/gsm8k/test-reasoning.first200.jsonl"), limit=1)[0]
    assert isinstance(gsm, QAItem) and gsm.answers == ("18",) and "####" in gsm.solution
    nq = load_benchmark("nq_open", shared("downstream/nq_open/test-OpenDomainQA.first200.jsonl"), limit=1)[0]
    assert nq.answers == ("Wilhelm Conrad Röntgen",)
    sam = load_benchmark("samsum", shared("downstream/samsum/test-summarization.first200.json"), limit=2)
    assert isinstance(sam[0], SummaryItem) and sam[0].id == "13817023" and "puppy" in sam[0].summary


def test_default_paths_resolve_to_shared_data(monkeypatch):
    shared("counterfact/counterfact.json")
    monkeypatch.setenv("EDITSCOPE_SHARED_DATA", str(SHARED))
    assert load_benchmark("counterfact", limit=1)[0].id == "counterfact:34"


def test_missing_default_file_names_it(monkeypatch, tmp_path):
    monkeypatch.setenv("EDITSCOPE_SHARED_DATA", str(tmp_path))
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(EditScopeError, match=r"counterfact/counterfact\.json is missing"):
        load_benchmark("counterfact")
    with pytest.raises(EditScopeError, match="gsm8k"):
        load_benchmark("gsm8k")
    with pytest.raises(InputError, match="unknown benchmark"):
        load_benchmark("counterfactual")
    with pytest.raises(EditScopeError, match="does not exist"):
        load_benchmark("zsre", tmp_path / "nope.json")


def _cf_record(case_id, **rewrite):
    rw = {"prompt": "{} was employed in", "relation_id": "P937", "subject": "Laurent Cars",
          "target_new": {"str": "Philadelphia"}, "target_true": {"str": "Paris"}}
    rw.update(rewrite)
    return {"case_id": case_id, "requested_rewrite": rw, "paraphrase_prompts": [], "neighborhood_prompts": []}


def test_malformed_records_are_logged_and_skipped(tmp_path, caplog):
    path = tmp_path / "cf.json"
    records = [_cf_record(1), _cf_record(2, subject=""), {"case_id": 3}, _cf_record(4, prompt="no slot"), _cf_record(5)]
    path.write_text(json.dumps(records), encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="editcore.benchmarks"):
        cases = load_benchmark("counterfact", path)
    assert [c.id for c in cases] == ["counterfact:1", "counterfact:5"]
    messages = [r.getMessage() for r in caplog.records]
    assert any("record 1 skipped" in m for m in messages)
    assert any("record 2 skipped" in m and "requested_rewrite" in m for m in messages)
    assert any("record 3 skipped" in m for m in messages)


def test_limit_counts_mapped_records(tmp_path):
    path = tmp_path / "cf.json"
    path.write_text(json.dumps([_cf_record(1, subject=""), _cf_record(2), _cf_record(3)]), encoding="utf-8")
    assert [c.id for c in load_benchmark("counterfact", path, limit=1)] == ["counterfact:2"]


def test_jsonl_bad_line_is_skipped(tmp_path, caplog):
    path = tmp_path / "nq.jsonl"
    path.write_text('{"question": "q1", "answer": ["a"]}\n{not json\n{"question": "q2", "answer": ["b"]}\n',
                    encoding="utf-8")
    with caplog.at_level(logging.WARNING):
        items = load_benchmark("nq_open", path)
    assert [i.question for i in items] == ["q1", "q2"]
    assert any("record 1 skipped" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("name, content", [
    ("counterfact", '[{"question": "who?", "answer": ["x"]}]'),
    ("mquake", json.dumps([_cf_record(1)])),
    ("zsre", "this is not json"),
    ("gsm8k", '{"text": "a"}\n{"text": "b"}\n'),
    ("conflictedit", "[1, 2, 3]"),
])
def test_wrong_format_raises(tmp_path, name, content):
    path = tmp_path / "data.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(EditScopeError) as info:
        load_benchmark(name, path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_sst2_wrong_header(tmp_path):
    path = tmp_path / "x.tsv"
    path.write_text("text\tscore\nfine\t1\n", encoding="utf-8")
    with pytest.raises(EditScopeError, match="SST-2"):
        load_benchmark("sst2", path)


def test_piqa_labels_file_is_required(tmp_path):
    path = tmp_path / "piqa_valid.jsonl"
    path.write_text('{"goal": "g", "sol1": "a", "sol2": "b"}\n', encoding="utf-8")
    with pytest.raises(EditScopeError, match="labels"):
        load_benchmark("piqa", path)
    (tmp_path / "piqa_valid-labels.lst").write_text("1\n", encoding="utf-8")
    assert load_benchmark("piqa", path)[0].label == 1


RIPPLE = {
    "example_type": "popular",
    "edit": {
        "prompt": "The name of the country of citizenship of Leonardo DiCaprio is Syria.",
        "subject_id": "Q38111", "relation": "COUNTRY_OF_CITIZENSHIP", "target_id": "Q858",
        "original_fact": {"prompt": "The name of the country of citizenship of Leonardo DiCaprio is United States of America.",
                          "subject_id": "Q38111", "relation": "COUNTRY_OF_CITIZENSHIP", "target_id": "Q30"},
    },
    "Relation_Specificity": [{"test_queries": [{
        "prompt": "The name of the mother of Leonardo DiCaprio is", "answers": [{"value": "Irmelin DiCaprio", "aliases": []}],
        "query_type": "regular", "subject_id": "Q38111", "relation": "MOTHER", "target_ids": ["Q22662076"], "phrase": None}],
        "test_condition": "OR", "condition_queries": []}],
    "Logical_Generalization": [],
    "Subject_Aliasing": [{"test_queries": [{
        "prompt": "The name of the country of citizenship of Leonardo Wilhelm DiCaprio is",
        "answers": [{"value": "Syria", "aliases": ["Syrian Arab Republic"]}], "query_type": "regular",
        "subject_id": "Q38111", "relation": "COUNTRY_OF_CITIZENSHIP", "target_ids": ["Q858"], "phrase": None}],
        "test_condition": "OR", "condition_queries": []}],
    "Compositionality_I": [{"test_queries": [{
        "prompt": "The name of the capital city of the country of citizenship of Leonardo DiCaprio is",
        "answers": [{"value": "Damascus", "aliases": []}], "query_type": "two_hop", "subject_id": "Q38111",
        "relation": "COUNTRY_OF_CITIZENSHIP", "target_ids": ["Q858"], "second_relation": "CAPITAL",
        "second_hop_target_ids": ["Q3766"], "phrase": "..."}], "test_condition": "OR", "condition_queries": []}],
    "Compositionality_II": [],
    "Forgetfulness": [],
}


def test_ripple_edits_from_documented_schema(tmp_path):
    path = tmp_path / "popular.json"
    broken = json.loads(json.dumps(RIPPLE))
    del broken["edit"]["original_fact"]
    path.write_text(json.dumps([RIPPLE, broken]), encoding="utf-8")
    cases = load_benchmark("ripple_edits", path)
    assert len(cases) == 1
    c = cases[0]
    assert c.subject == "Leonardo DiCaprio"
    assert c.prompt == "The name of the country of citizenship of {} is"
    assert (c.target_true, c.target_new) == ("United States of America", "Syria")
    assert c.paraphrases == ("The name of the country of citizenship of Leonardo Wilhelm DiCaprio is",)
    assert c.attributes[0].answer == "Irmelin DiCaprio"
    assert c.one_hop[0].answer == "Damascus" and c.one_hop[0].target == "Syria"


def test_registry_names():
    for name in ("counterfact", "counterfact_plus", "zsre", "mquake", "ripple_edits", "conflictedit", "roundedit",
                 "portability_one_hop", "portability_subject_replace", "portability_inverse_relation",
                 "locality_distracting", "piqa", "sst2", "gsm8k", "nq_open", "samsum"):
        assert name in BENCHMARKS


def test_cli_lists_a_benchmark(capsys):
    from editcore.cli import main

    path = shared("counterfact/counterfact.json")
    assert main(["cases", "list", "--source", "counterfact", "--path", str(path), "--limit", "1"]) == 0
    assert capsys.readouterr().out.strip() == "counterfact:34\tP937\tLaurent Cars was employed in\tParis -> Philadelphia"


def test_peak_memory_is_measured_per_model():
    """The bench resets the resident-memory high-water mark before each model, so a model's peak does not
    include what an earlier model left behind (Linux's VmHWM; skipped where it cannot be reset)."""
    import os

    import torch

    from editcore import perfbench as bench

    if not os.access("/proc/self/clear_refs", os.W_OK):
        pytest.skip("no resettable high-water mark here")
    big = torch.ones(100_000_000)  # 400 MB
    big.add_(1)
    high = bench.peak_rss_mb()
    del big
    bench.reset_peak_rss()
    assert bench.peak_rss_mb() < high - 200


def test_bench_sections_render_as_tables():
    """A feature's bench section (perfbench.SECTIONS) becomes a titled table with its note; cells escape '|'."""
    from editcore import perfbench

    lines = perfbench.section_markdown({"title": "Impact scan", "note": "2,000 prompts", "columns": ["a", "b"],
                                        "rows": [{"a": 0.123456, "b": "x|y"}, {"a": None, "b": 3}]})
    assert lines[0] == "### Impact scan" and "2,000 prompts" in lines
    assert "| 0.123 | x\\|y |" in lines and "|  | 3 |" in lines
