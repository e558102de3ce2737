"""Layer statistics: correctness against a direct computation, caching, cache keys, corpora."""

import pytest
import torch

import tiny
from editcore.errors import InputError
from editcore.methods import layer_stats as stats


# Caches (context prefixes, statistics) go to a temporary home: no test sees another's files.
pytestmark = pytest.mark.usefixtures("tmp_home")


def test_matches_direct_second_moment(corpus):
    from editcore.text import padded as _pad_right

    lm = tiny.lm("llama")
    n = 700
    c = stats.second_moment(lm, 1, n, corpus)
    seqs = stats._token_sequences(lm, stats.resolve_corpus(corpus), n, stats.SEQ_LEN)
    assert sum(len(s) for s in seqs) == n
    keys = []
    module = lm.adapter.module("mlp_out", 1)
    handle = module.register_forward_pre_hook(lambda _m, args: keys.append(args[0].detach()))
    try:
        for s in seqs:  # one sequence at a time: no padding at all
            ids, mask = _pad_right(lm, [s])
            with torch.no_grad():
                lm.model.base_model(input_ids=ids, attention_mask=mask)
    finally:
        handle.remove()
    k = torch.cat([x[0] for x in keys]).double()
    assert k.shape == (n, lm.adapter.d_mlp)
    assert c.dtype == torch.float64 and c.shape == (lm.adapter.d_mlp,) * 2
    assert torch.allclose(c, k.T @ k / n, rtol=1e-5, atol=1e-9)


def test_cache_hit_returns_identical_tensor(corpus, monkeypatch):
    lm = tiny.lm("gpt2")
    first = stats.second_moment(lm, 1, 600, corpus)
    path = stats.cache_path(stats.cache_key(lm, 1, stats.resolve_corpus(corpus), 600))
    assert path.is_file()
    calls = []
    monkeypatch.setattr(stats, "_accumulate", lambda *a, **k: calls.append(a) or (_ for _ in ()).throw(AssertionError))
    again = stats.second_moment(lm, 1, 600, corpus)
    assert not calls and torch.equal(first, again)
    info = stats.cached_info(lm, 1, 600, corpus)
    assert int(info["tokens_seen"]) == 600


def test_key_differs_per_layer_sample_count_and_corpus(corpus, tmp_path):
    lm = tiny.lm("gpt2")
    cid = stats.resolve_corpus(corpus)
    other = tmp_path / "other.txt"
    other.write_text("Completely different words here.\n" * 50)
    paths = {stats.cache_path(stats.cache_key(lm, layer, c, n))
             for layer in (0, 1) for n in (600, 1200) for c in (cid, stats.resolve_corpus(str(other)))}
    assert len(paths) == 8
    a = stats.second_moment(lm, 0, 600, corpus)
    b = stats.second_moment(lm, 1, 600, corpus)
    c = stats.second_moment(lm, 0, 1200, corpus)
    assert not torch.equal(a, b) and not torch.equal(a, c)


def test_several_layers_in_one_pass(corpus):
    lm = tiny.lm("gemma3")
    both = stats.second_moments(lm, [0, 2], 500, corpus)
    assert torch.allclose(both[2], stats.second_moment(lm, 2, 500, corpus))
    fresh = tiny.lm("gemma3")
    assert torch.equal(stats.second_moment(fresh, 0, 500, corpus), both[0])


def test_zero_samples_means_identity_and_bad_inputs(corpus):
    lm = tiny.lm("gpt2")
    assert stats.second_moment(lm, 0, 0, corpus) is None
    with pytest.raises(InputError, match="out of range"):
        stats.second_moment(lm, 7, 100, corpus)
    with pytest.raises(InputError, match="corpus"):
        stats.second_moment(lm, 0, 100, "/no/such/file.txt")
    with pytest.raises(InputError, match=">= 0"):
        stats.second_moment(lm, 0, -5, corpus)


def test_progress_is_reported(corpus):
    lm = tiny.lm("gpt2")
    seen = []
    stats.second_moment(lm, 0, 300, corpus, progress=lambda stage, f: seen.append((stage, f)))
    assert seen and seen[-1][1] == pytest.approx(1.0)


def test_model_sampled_corpus_is_seeded_and_cached():
    lm = tiny.lm("gpt2")
    a = stats._sampled_sequences(lm, 40, 16)
    b = stats._sampled_sequences(lm, 40, 16)
    assert a == b and sum(len(s) for s in a) >= 40
    assert stats.resolve_corpus("model") == "model"


def test_cholesky_factors_are_cached_and_match_the_moment(corpus, monkeypatch):
    lm = tiny.lm("llama")
    c = stats.second_moment(lm, 1, 700, corpus)
    chol = stats.cholesky_factors(lm, [1], 700, corpus)[1]
    assert chol is not None and torch.allclose(chol @ chol.T, c, atol=1e-10)
    monkeypatch.setattr(stats, "second_moments", lambda *a, **k: (_ for _ in ()).throw(AssertionError("recomputed")))
    assert torch.equal(stats.cholesky_factors(lm, [1], 700, corpus)[1], chol)  # from its own cache file
    assert stats.cholesky_factors(lm, [1], 0, corpus) == {1: None}


def test_a_moment_that_is_not_positive_definite_has_no_factor(corpus):
    """Fewer tokens than key dimensions give a singular C: no factor (recorded, not retried); callers
    fall back to solving with C itself."""
    lm = tiny.lm("llama")
    n = lm.adapter.d_mlp // 2
    c = stats.second_moment(lm, 1, n, corpus)
    assert torch.linalg.matrix_rank(c) < c.shape[0]
    assert stats.cholesky_factors(lm, [1], n, corpus) == {1: None}
    assert stats.cholesky_factors(lm, [1], n, corpus) == {1: None}


def test_auto_is_the_bundled_corpus_unless_the_user_points_elsewhere(corpus, monkeypatch):
    monkeypatch.delenv("EDITSCOPE_STATS_CORPUS", raising=False)
    bundled = stats.resolve_corpus("auto")
    assert bundled == stats.resolve_corpus(None) == stats.resolve_corpus("bundled")
    # The id names the file's content, not where the checkout lives.
    assert bundled.startswith("bundled:wikitext2_test_excerpt.txt:") and "/" not in bundled
    monkeypatch.setenv("EDITSCOPE_STATS_CORPUS", corpus)
    assert stats.resolve_corpus("auto") == stats.resolve_corpus(corpus) != bundled
    assert stats.resolve_corpus("bundled") == bundled  # an explicit choice is not overridden


def test_the_bundled_corpus_states_its_source_and_licence():
    readme = (stats.BUNDLED_CORPUS.parent / "README.md").read_text()
    assert "CC BY-SA 3.0" in readme and "excerpt rule" in readme
    assert stats.paths.file_sha256(stats.BUNDLED_CORPUS) in readme


@pytest.mark.integration
def test_the_bundled_corpus_holds_twice_the_default_token_count(gemma):
    """Enough text for the default statistics with a margin (the reader stops short and warns otherwise)."""
    seqs = stats._token_sequences(gemma, stats.resolve_corpus("bundled"), 2 * stats.DEFAULT_TOKENS, stats.SEQ_LEN)
    assert sum(len(s) for s in seqs) == 2 * stats.DEFAULT_TOKENS


def test_the_bundled_corpus_feeds_the_statistics_reader():
    lm = tiny.lm("gpt2")
    seqs = stats._token_sequences(lm, stats.resolve_corpus("bundled"), 900, stats.SEQ_LEN)
    assert sum(len(s) for s in seqs) == 900


@pytest.mark.skipif(not (stats.paths.shared_data() / "wikitext" / "wiki.test.raw").is_file(),
                    reason="../shared/data/wikitext/wiki.test.raw is absent")
def test_the_excerpt_gives_the_same_token_sequences_as_the_full_file():
    """The excerpt is the start of wiki.test.raw, so a statistics count it holds reads the same tokens."""
    lm = tiny.lm("gpt2")
    full = stats.resolve_corpus(str(stats.paths.shared_data() / "wikitext" / "wiki.test.raw"))
    n = 20_000
    assert stats._token_sequences(lm, full, n, stats.SEQ_LEN) == \
        stats._token_sequences(lm, stats.resolve_corpus("bundled"), n, stats.SEQ_LEN)
