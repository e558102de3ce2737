"""``python -m editcore trace`` and the localisation experiment on a tiny model (``load_model`` monkeypatched;
the tiny model knows no catalog fact, so ``known_facts`` is replaced by the first catalog facts)."""

import json

import pytest

import tiny
from editcore.cli import main
from editcore.tracing import localisation
from editcore.tracing.settings import TraceSettings


@pytest.fixture
def tiny_lm(monkeypatch, tmp_home, corpus):
    lm = tiny.lm("gpt2")
    monkeypatch.setattr("editcore.models.load_model", lambda name, **k: lm)
    return lm, corpus


@pytest.fixture
def any_facts(monkeypatch):
    from editcore import perfbench
    from editcore.catalog import load_catalog

    def first(lm, n, exclude=()):
        cases = [c for c in load_catalog() if c.neighbourhood][:n]
        return [perfbench.Fact(c.id, c.request(0), tuple((p.prompt, p.answer) for p in c.neighbourhood))
                for c in cases]
    monkeypatch.setattr(perfbench, "known_facts", first)


def test_trace_prints_the_three_tables_and_the_lens_and_restores(tiny_lm, capsys):
    lm, _ = tiny_lm
    before = lm.digest()
    rc = main(["trace", "tiny", "--prompt", "{} is located in the city of", "--subject", "The Louvre",
               "--answer", " Paris", "--target", " London", "--method", "none", "--samples", "2"])
    out = capsys.readouterr().out
    assert rc == 0
    for title in ("residual stream", "MLP output", "attention output", "Logit lens at last token",
                  "Logit lens at subject last token"):
        assert title in out
    assert "After the" not in out
    assert lm.digest() == before


def test_trace_bad_input_is_one_line_exit_2(tiny_lm, capsys):
    rc = main(["trace", "tiny", "--prompt", "{} is in", "--subject", "The Louvre", "--target", "x",
               "--samples", "0"])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert "noise samples" in err and "\n" not in err and "Traceback" not in err


def test_localisation_rows_cover_every_fact_and_layer_and_restore(tiny_lm, any_facts):
    lm, corpus = tiny_lm
    before = lm.digest()
    overrides = {"stats_corpus": corpus, "stats_samples": 500, "v_num_grad_steps": 2}
    res = localisation.run(lm, 3, [0, 1], TraceSettings(samples=1), overrides)
    assert lm.digest() == before
    assert len(res["facts"]) == 3 and res["layers"] == [0, 1]
    assert sorted((r["fact"], r["layer"]) for r in res["rows"]) == sorted(
        (f, layer) for f in res["facts"] for layer in (0, 1))
    assert len(res["traces"]) == 3
    for r in res["rows"]:
        assert 0.0 <= r["mlp_last"] <= r["mlp_max"] + 1e-12
        assert r["success"] in (0.0, 1.0) and 0.0 <= r["neighbourhood"] <= 1.0
    # The per-layer means are the rows' means, and the report is plain JSON.
    for p in res["per_layer"]:
        sel = [r for r in res["rows"] if r["layer"] == p["layer"]]
        assert p["rewrite"] == pytest.approx(sum(r["rewrite"] for r in sel) / len(sel))
    json.dumps(res, allow_nan=False)


def test_localisation_cli_writes_both_reports(tiny_lm, any_facts, tmp_path, capsys):
    _, corpus = tiny_lm
    out = tmp_path / "reports"
    rc = main(["trace", "tiny", "--localisation", "--facts", "3", "--layers", "0,1", "--samples", "1",
               "--corpus", corpus, "--hparam", "stats_samples=500", "--hparam", "v_num_grad_steps=2",
               "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    for stem in ("trace_tiny", "trace_localisation_tiny"):
        assert (out / f"{stem}.md").is_file()
        json.loads((out / f"{stem}.json").read_text())
    avg = json.loads((out / "trace_tiny.json").read_text())
    assert avg["summary"]["n_facts"] == 3 and avg["advice"]["localisation_best_layer"] in (0, 1)
    assert "Correlation over (fact, layer) pairs" in (out / "trace_localisation_tiny.md").read_text()
