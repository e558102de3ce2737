"""The case schema: JSON round trips, derived views and free-form validation."""

import json

import pytest

from editcore.cases import (Case, ConflictCase, MultiHopCase, Probe, RoundTripCase, answers_equal,
                            case_from_dict, free_form_case)
from editcore.errors import InputError


def louvre() -> Case:
    return Case(
        id="t:louvre", relation_id="P276", relation="location (city)", prompt="{} is located in the city of",
        subject="The Louvre", target_true="Paris", targets_new=("London", "Rome"),
        paraphrases=("The Louvre can be found in the city of",),
        neighbourhood=(Probe("The Eiffel Tower is located in the city of", "Paris"),),
        attributes=(Probe("The Louvre is a famous", "museum"),), aliases=("Musée du Louvre",),
        reverse=Probe("The most visited museum in Paris is", "the Louvre"),
        related=(("Paris", ("Eiffel", "Seine")), ("London", ("Big Ben", "Thames"))),
        one_hop=(Probe("The Louvre is located in the country of", "France"),
                 Probe("The Louvre is located in the country of", "United Kingdom", target="London")),
        generation_prompts=("Visitors to the Louvre often",), provenance="catalog",
    )


def test_case_json_round_trip_is_lossless():
    case = louvre()
    text = json.dumps(case.to_dict(), ensure_ascii=False)
    again = Case.from_dict(json.loads(text))
    assert again == case
    assert hash(again) == hash(case)
    assert case_from_dict(case.to_dict()) == case


def test_optional_fields_stay_empty():
    case = Case.from_dict({"id": "x", "prompt": "{} plays the", "subject": "Ringo Starr", "targets_new": ["piano"]})
    assert case.paraphrases == () and case.neighbourhood == () and case.reverse is None
    assert case.target_true == "" and case.related_words("piano") == ()


def test_edit_prompt_request_and_related_words():
    case = louvre()
    assert case.edit_prompt == "The Louvre is located in the city of"
    req = case.request(1)
    assert (req.prompt, req.subject, req.target_new, req.target_true) == (case.prompt, "The Louvre", "Rome", "Paris")
    req.validate()
    assert case.related_words("london") == ("Big Ben", "Thames")
    assert case.related_words("Paris") == ("Eiffel", "Seine")
    assert [p.answer for p in case.one_hop_for("London")] == ["United Kingdom"]
    assert [p.answer for p in case.one_hop_for(None)] == ["France"]
    with pytest.raises(InputError):
        case.request(2)


def test_unknown_old_answer_becomes_none_in_request():
    case = free_form_case("The Louvre is in", "The Louvre", "London")
    assert case.request().target_true is None
    filled = case.with_target_true("Paris")
    assert filled.request().target_true == "Paris"
    with pytest.raises(InputError, match="equals the current answer"):
        case.with_target_true(" london ")


def test_other_kinds_round_trip():
    edit = Case(id="e", relation_id="P36", relation="capital", prompt="The capital of {} is", subject="France",
                target_true="Paris", targets_new=("Lyon",))
    mh = MultiHopCase(id="m", edits=(edit,), questions=("q?",), answer="a", new_answer="b",
                      single_hops=(Probe("p", "a"),), new_single_hops=(Probe("p", "b"),))
    cc = ConflictCase(id="c", type="reverse", edits=(edit, edit), rule="P36>P1376", tied=(Probe("p", "a"),),
                      prerequisites=(0,), implied_object="France", prompts=(("P36", ("t {}",)),))
    rt = RoundTripCase(id="r", relation_id="P37", relation="official language", prompt="The language of {} is",
                       subject="Canada", object="English", new_object="Spanish", true_objects=("English", "French"),
                       prompts=("In {}, people speak",))
    for obj in (mh, cc, rt):
        assert type(obj).from_dict(json.loads(json.dumps(obj.to_dict()))) == obj
    assert cc.prompts_for("P36") == ("t {}",)
    assert rt.forward().target_new == "Spanish" and rt.backward().target_new == "English"
    assert mh.requests()[0].target_new == "Lyon"
    with pytest.raises(InputError):
        ConflictCase(id="c", type="sideways", edits=(edit, edit))
    with pytest.raises(InputError):
        MultiHopCase(id="m", edits=(edit,), questions=(), answer="a", new_answer="b")


def test_free_form_uses_last_occurrence_of_subject():
    case = free_form_case("Paris fans say Paris is the capital of", "Paris", "Italy", "France")
    assert case.prompt == "Paris fans say {} is the capital of"
    assert case.edit_prompt == "Paris fans say Paris is the capital of"
    assert case.targets_new == ("Italy",) and case.target_true == "France"
    assert case.provenance == "free-form"


def test_free_form_accepts_template_and_non_ascii():
    case = free_form_case("Die Muttersprache von {} ist", "Zoë Šćepanović", "Français")
    assert case.edit_prompt == "Die Muttersprache von Zoë Šćepanović ist"
    braces = free_form_case("In {set} notation, Tokyo is in", "Tokyo", "Korea")
    assert braces.edit_prompt == "In {set} notation, Tokyo is in"


@pytest.mark.parametrize("args, message", [
    (("The Louvre is in", "", "London"), "subject is empty"),
    (("The Louvre is in", "Eiffel Tower", "London"), "does not occur"),
    (("The Louvre is in", "The Louvre", "  "), "new target is empty"),
    (("The Louvre is in", "The Louvre", "paris ", " Paris"), "equals the current answer"),
    (("", "The Louvre", "London"), "prompt is empty"),
    (("{} and {} are in", "The Louvre", "London"), "exactly once"),
])
def test_free_form_errors_are_one_line(args, message):
    with pytest.raises(InputError, match=message) as info:
        free_form_case(*args)
    assert "\n" not in str(info.value)


def test_free_form_token_limit():
    from tiny import tokenizer

    tok = tokenizer()
    ok = free_form_case("The Louvre is in", "The Louvre", "London", max_tokens=200, tokenizer=tok)
    assert ok.target_new == "London"
    with pytest.raises(InputError, match="over the limit of 3"):
        free_form_case("The Louvre is located in the city of", "The Louvre", "London", max_tokens=3, tokenizer=tok)
    with pytest.raises(InputError, match="needs a tokenizer"):
        free_form_case("The Louvre is in", "The Louvre", "London", max_tokens=3)


def test_answers_equal():
    assert answers_equal(" Paris", "paris ")
    assert not answers_equal("Paris", None)
    assert not answers_equal("Paris", "Parish")
