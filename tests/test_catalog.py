"""The shipped catalog: counts, consistency by construction, answer matching, the knowledge check."""

import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from editcore import catalog
from editcore.cases import Case

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def facts() -> list[Case]:
    return catalog.load_catalog()


def test_catalog_size_and_shape(facts):
    assert len(facts) >= 200
    assert len({c.relation_id for c in facts}) >= 15
    assert len({c.id for c in facts}) == len(facts)
    for c in facts:
        assert c.provenance == "catalog"
        assert c.prompt.count("{}") == 1 and c.subject in c.edit_prompt, c.id
        assert c.target_true, c.id
        assert len(c.targets_new) >= 2 and c.target_true not in c.targets_new, c.id
        assert len(set(c.targets_new)) == len(c.targets_new), c.id
        assert len(c.paraphrases) >= 3, c.id
        assert len(c.neighbourhood) >= 5, c.id
        assert len(c.attributes) >= 3, c.id
        assert 2 <= len(c.generation_prompts) <= 3, c.id
        for target in (c.target_true, *c.targets_new):
            assert c.related_words(target), (c.id, target)


def test_neighbours_share_the_true_answer_and_are_other_subjects(facts):
    for c in facts:
        for p in c.neighbourhood:
            assert p.answer == c.target_true, c.id
            assert p.prompt != c.edit_prompt and p.prompt not in c.paraphrases, c.id


def test_one_hop_targets_are_candidate_targets(facts):
    for c in facts:
        for p in c.one_hop:
            assert p.target is None or p.target in c.targets_new, c.id


def test_same_subject_and_relation_never_disagree(facts):
    """Two probes with the same prompt must expect the same answer (the tables state each fact once)."""
    answers = defaultdict(set)
    for c in facts:
        answers[c.edit_prompt].add(c.target_true)
        for p in c.neighbourhood + c.attributes:
            answers[p.prompt].add(p.answer)
        for p in c.one_hop:
            if p.target is None:
                answers[p.prompt].add(p.answer)
    clashes = {k: v for k, v in answers.items() if len(v) > 1}
    assert not clashes


def test_survey_examples_are_included(facts):
    by_id = {c.id: c for c in facts}
    louvre = by_id["P276:louvre"]
    assert louvre.edit_prompt == "The Louvre is located in the city of" and louvre.target_true == "Paris"
    assert {"the Eiffel Tower is located in the city of".casefold()} <= {
        p.prompt.casefold() for p in louvre.neighbourhood}
    country = {p.target: p.answer for p in louvre.one_hop if "country" in p.prompt}
    assert country[None] == "France"
    assert by_id["P176:windows-11"].target_true == "Microsoft"
    assert by_id["P103:danielle-darrieux"].target_true == "French"


def test_other_kinds_have_enough_records():
    chains = catalog.load_multihop()
    conflicts = catalog.load_conflicts()
    trips = catalog.load_roundtrips()
    assert len(chains) >= 30
    kinds = Counter(c.type for c in conflicts)
    assert kinds["reverse"] >= 20 and kinds["composite"] >= 20
    assert len(trips) >= 20
    for m in chains:
        assert m.answer != m.new_answer and m.single_hops and m.new_single_hops
        assert m.new_single_hops[0].answer == m.edits[0].target_new
    for c in conflicts:
        if c.type == "composite":
            assert c.edits[0].target_new == c.implied_object
        else:
            assert c.edits[1].subject == c.edits[0].target_new
    for t in trips:
        assert t.object in t.true_objects and t.new_object not in t.true_objects


def test_builder_is_deterministic(tmp_path):
    """Re-running the builder reproduces the committed files byte for byte."""
    script = (ROOT / "scripts" / "build_catalog.py").read_text(encoding="utf-8")
    copy = tmp_path / "scripts" / "build_catalog.py"
    copy.parent.mkdir()
    copy.write_text(script.replace("ROOT = Path(__file__).resolve().parents[1]",
                                   f"ROOT = Path({str(tmp_path)!r})\nsys.path.insert(0, {str(ROOT)!r})"),
                    encoding="utf-8")
    subprocess.run([sys.executable, str(copy)], check=True, capture_output=True)
    for name in ("facts", "multihop", "conflicts", "roundtrip"):
        assert (tmp_path / "data" / f"{name}.jsonl").read_bytes() == (ROOT / "data" / f"{name}.jsonl").read_bytes(), name


def test_filters(facts):
    p276 = catalog.filter_cases(facts, relation="P276")
    assert p276 and all(c.relation_id == "P276" for c in p276)
    assert catalog.filter_cases(facts, relation="location (city)") == p276
    hits = catalog.filter_cases(facts, text="louvre")
    assert [c.id for c in hits] == ["P276:louvre"]
    assert catalog.filter_cases(facts, relation="P276", text="Big Ben")[0].id == "P276:big-ben"
    rels = catalog.relations(facts)
    assert sum(n for _, _, n in rels) == len(facts)
    assert catalog.get_fact("P276:louvre").subject == "The Louvre"


@pytest.mark.parametrize("output, answer, expected", [
    (" Paris, France.", "Paris", True),
    (" paris is big", "Paris", True),
    (' "Paris"', "Paris", True),
    (" New York, the", "New York City", True),
    (" Washington and", "Washington, D.C.", True),
    (" Parisian", "Paris", False),
    (" the Seine", "Seine", False),
    (" London", "Paris", False),
    ("", "Paris", False),
    (" Paris", "", False),
])
def test_answer_matches(output, answer, expected):
    assert catalog.answer_matches(output, answer) is expected


class ScriptedLM:
    """Answers every prompt with a fixed continuation: enough to test the check's bookkeeping."""

    name = "scripted"
    fingerprint = "f"

    @property
    def tokenizer(self):
        from tiny import tokenizer

        return tokenizer()


def test_check_model_reports_per_prompt_results(monkeypatch, facts, tmp_path):
    cases = catalog.filter_cases(facts, relation="P276")[:3]
    import editcore.decoding as decoding
    import editcore.text as text

    def fake_greedy(lm, prompts, max_new_tokens=8, batch_size=16):
        return [" Athens, Greece" if "Acropolis" in p else " nowhere" for p in prompts]

    def fake_scores(lm, prompts, targets, batch_size=16):
        # The model "knows" Athens for the Acropolis and nothing else.
        return [text.TargetScore([-0.1, -0.1], [("Acropolis" in p and t == "Athens")] * 2)
                for p, t in zip(prompts, targets)]

    monkeypatch.setattr(decoding, "greedy", fake_greedy)
    monkeypatch.setattr(text, "score_targets", fake_scores)
    report = catalog.check_model(ScriptedLM(), cases)
    assert report["summary"]["facts"] == 3
    first = report["facts"]["P276:acropolis"]
    assert first["knows_fact"] is True and first["prompts"][0]["kind"] == "edit"
    assert report["summary"]["known_facts"] == 1
    path = catalog.write_check(report, "org/Scripted-Model", tmp_path)
    assert path.name == "Scripted-Model.json"
    assert catalog.known_facts("org/Scripted-Model", tmp_path) == {"P276:acropolis"}
    assert catalog.known_facts("never-checked", tmp_path) is None
    assert catalog.summary_lines(report)[0].startswith("scripted: knows 1 of 3")


def test_check_on_tiny_model_runs_end_to_end(facts):
    from tiny import lm as tiny_lm

    report = catalog.check_model(tiny_lm("gpt2"), facts[:2], max_new_tokens=2)
    assert report["summary"]["facts"] == 2
    assert all(isinstance(p["correct"], bool) for e in report["facts"].values() for p in e["prompts"])
    assert all(isinstance(e["prompts"][0]["output"], str) for e in report["facts"].values())


@pytest.mark.parametrize("model", ["gemma-3-270m", "smollm2-135m"])
def test_committed_check_matches_catalog(model, facts):
    report = catalog.load_check(model)
    if report is None:
        pytest.skip(f"no committed catalog check for {model} (run: python -m editcore catalog check {model})")
    assert set(report["facts"]) <= {c.id for c in facts}
    known = catalog.known_facts(model)
    assert known is not None and len(known) == report["summary"]["known_facts"]


def test_cli_catalog_stats_and_cases_list(capsys):
    from editcore.cli import main

    assert main(["catalog", "stats"]) == 0
    out = capsys.readouterr().out
    assert "facts over" in out and "P276" in out
    assert main(["cases", "list", "--source", "catalog", "--relation", "P276", "--search", "Louvre"]) == 0
    line = capsys.readouterr().out.strip()
    assert line == "P276:louvre\tP276\tThe Louvre is located in the city of\tParis -> " + \
        catalog.get_fact("P276:louvre").target_new
    assert main(["cases", "list", "--source", "roundtrip", "--limit", "1"]) == 0
    assert "->" in capsys.readouterr().out
    assert main(["cases", "list", "--source", "nowhere"]) == 2
    assert "unknown source" in capsys.readouterr().err
    assert main(["cases", "list", "--source", "multihop", "--relation", "P276"]) == 2
