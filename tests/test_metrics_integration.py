"""One real ROME edit on Gemma-3-270M (Louvre → London) judged by the metrics."""

import pytest

from editcore.errors import InputError

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def rome():
    from editcore.methods import get_method

    try:
        return get_method("rome")
    except InputError:
        pytest.skip("ROME is not registered in editcore.methods yet")


def test_rome_louvre_to_london(gemma, rome, monkeypatch):
    import dataclasses

    from editcore.paths import shared_data

    from editcore.catalog import load_catalog
    from editcore.methods.base import load_hparams
    from editcore.metrics import evaluate
    from editcore.metrics.nkl import neighbourhood_kl
    from editcore.metrics.scoring import Scorer
    from editcore.metrics.shifts import UNRELATED_PROMPTS

    case = next(c for c in load_catalog() if c.id == "P276:louvre")
    case = dataclasses.replace(case, targets_new=("London",), distracting_neighbourhood=())
    # The same statistics as tests/test_rome.py (shared WikiText sample, cached once); the offline default,
    # text sampled from the model, takes many minutes on a CPU.
    monkeypatch.delenv("EDITSCOPE_HOME", raising=False)
    corpus = shared_data() / "wikitext" / "wiki.test.raw"
    overrides = {"stats_samples": 8192, "stats_corpus": str(corpus)} if corpus.is_file() else {"stats_samples": 0}
    hp = load_hparams(rome.name, rome.Hparams, gemma.name, overrides)
    with gemma.scope():
        edit = rome.compute(gemma, [case.request()], hp)
    before = gemma.digest()
    rep = evaluate(gemma, case, edit, families=("counterfact", "nkl", "shifts"), suggest=0,
                   related_new=["Big Ben", "Thames"])
    f = rep.to_dict()["families"]
    assert f["counterfact"]["es"]["mean"] == 1.0
    risers = [t.strip() for t in rep.families["shifts"].risers("subject")]
    assert "London" in risers, risers

    pre = Scorer(gemma)
    with gemma.scope():
        pre.dists(list(UNRELATED_PROMPTS))
    with gemma.scope(edit.patch):
        unrelated = neighbourhood_kl(pre, Scorer(gemma), list(UNRELATED_PROMPTS))
    # A working ROME edit barely moves prompts about other things: positive (it is a real change) but small.
    assert 0.0 < unrelated.nkl.mean < 0.2, unrelated.per_prompt
    assert gemma.digest() == before
