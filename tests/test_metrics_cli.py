"""The ``eval`` sub-command's argument handling (the edit itself is covered by the integration test)."""

import argparse

import pytest

from editcore.cli import main
from editcore.cli.eval import resolve
from editcore.errors import InputError


def _args(**kw):
    base = dict(fact=None, prompt=None, subject=None, target=None, old=None)
    return argparse.Namespace(**{**base, **kw})


def test_fact_by_short_name_with_a_target_outside_the_catalog():
    case, target = resolve(_args(fact="louvre", target="London"))
    assert case.id == "P276:louvre" and target == "London"
    assert case.target_new == "London" and case.target_true == "Paris"
    assert case.distracting_neighbourhood == ()  # would have been built for another target
    assert "Big Ben" in case.related_words("London")  # borrowed from the catalog, as the dashboard does


def test_fact_by_subject_keeps_catalog_target():
    case, target = resolve(_args(fact="The Louvre"))
    assert target == case.targets_new[0]


def test_free_form_and_errors():
    case, target = resolve(_args(prompt="Big Ben is in", subject="Big Ben", target="Rome"))
    assert case.prompt == "{} is in" and target == "Rome"
    with pytest.raises(InputError):
        resolve(_args(fact="louvre", target="Paris"))  # the current answer
    with pytest.raises(InputError):
        resolve(_args(fact="no such fact anywhere"))
    with pytest.raises(InputError):
        resolve(_args(prompt="Big Ben is in"))


def test_unknown_method_exits_2(capsys):
    assert main(["eval", "gemma-3-270m", "--method", "nonexistent", "--fact", "louvre"]) == 2
    assert capsys.readouterr().err.startswith("error: unknown method")
