"""The ``edit`` sub-command on a tiny model (``load_model`` monkeypatched: no real model is loaded)."""

import os
from pathlib import Path

import pytest

import tiny
from editcore.cli import main
from editcore.cli.edit import parse_overrides, to_template
from editcore.errors import InputError


@pytest.fixture
def tiny_lm(monkeypatch, tmp_path):
    monkeypatch.setenv("EDITSCOPE_HOME", str(tmp_path / "home"))
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(tiny.CORPUS * 30))
    lm = tiny.lm("gpt2")
    monkeypatch.setattr("editcore.models.load_model", lambda name, **k: lm)
    return lm, str(corpus)


def test_to_template_replaces_last_occurrence():
    assert to_template("Paris is in Paris", "Paris") == "Paris is in {}"
    assert to_template("{} is in", "Paris") == "{} is in"
    with pytest.raises(InputError, match="does not occur"):
        to_template("The Louvre is in", "Big Ben")


def test_parse_overrides():
    assert parse_overrides(["layer=2", "layers=[1,2]", "stats_corpus=/x.txt"]) == {
        "layer": 2, "layers": [1, 2], "stats_corpus": "/x.txt"}
    with pytest.raises(InputError):
        parse_overrides(["layer"])


def test_edit_runs_and_restores(tiny_lm, capsys):
    lm, corpus = tiny_lm
    before = lm.digest()
    rc = main(["edit", "tiny", "--method", "rome", "--prompt", "The Louvre is located in the city of",
               "--subject", "The Louvre", "--target", " London", "--hparam", "layer=1", "--hparam",
               "v_num_grad_steps=2", "--hparam", f"stats_corpus={corpus}", "--stats-samples", "500",
               "--max-new-tokens", "3"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "before" in out and "after" in out and "|dW|" in out and "seconds" in out
    assert lm.digest() == before


@pytest.mark.parametrize("argv, message", [
    (["--prompt", "The Louvre is in", "--subject", "Big Ben", "--target", "London"], "does not occur"),
    (["--prompt", "The Louvre is in", "--subject", "The Louvre", "--target", "  "], "target is empty"),
    (["--prompt", "The Louvre is in", "--subject", "The Louvre", "--target", "x", "--hparam", "layer=9"],
     "out of range"),
    (["--prompt", "The Louvre is in", "--subject", "The Louvre", "--target", "x", "--hparam", "nope=1"],
     "unknown hyper-parameter"),
    (["--prompt", "The Louvre is in", "--subject", "The Louvre", "--target", "x", "--hparam", "v_lr=NaN"],
     "finite"),
    (["--method", "nonesuch", "--prompt", "The Louvre is in", "--subject", "The Louvre", "--target", "x"],
     "unknown method"),
])
def test_edit_bad_input_exit_2_one_line(tiny_lm, capsys, argv, message):
    lm, _ = tiny_lm
    before = lm.digest()
    rc = main(["edit", "tiny", *argv])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert err.startswith("error: ") and "\n" not in err and message in err
    assert lm.digest() == before


def test_warmup_computes_the_statistics_once_and_restores_the_model(tiny_lm, capsys, monkeypatch):
    """``make run``'s warm-up step: ROME's statistics from the bundled corpus (no corpus named) and a trial
    edit; a second call finds the statistics cached. (Six layers: ROME's automatic layer is then 1; at layer
    0 the suffix replay's key capture fails on tiny GPT-2, a separate bug.)"""
    lm = tiny.lm("gpt2", n_layers=6)
    monkeypatch.setattr("editcore.models.load_model", lambda name, **k: lm)
    monkeypatch.delenv("EDITSCOPE_STATS_CORPUS", raising=False)
    before = lm.digest()
    assert main(["warmup", "tiny", "--method", "rome", "--no-impact"]) == 0
    first = capsys.readouterr()
    assert "tokens of bundled WikiText-2 excerpt" in first.out and "trial rome edit" in first.out
    assert "\n[" not in first.err.replace("\r", "\n").rstrip("\n").split("\n")[-1]  # every bar line ended
    assert lm.digest() == before
    stats = sorted((Path(os.environ["EDITSCOPE_HOME"]) / "stats").glob("*.safetensors"))
    assert stats
    assert main(["warmup", "tiny", "--method", "rome", "--no-impact"]) == 0
    assert sorted((Path(os.environ["EDITSCOPE_HOME"]) / "stats").glob("*.safetensors")) == stats
