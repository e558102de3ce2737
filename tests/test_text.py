"""editcore.text: the own greedy loop gives exactly what transformers' generate(do_sample=False) gives
(every supported family, left padding); pair scores read from shared prefixes equal separate passes."""

import pytest
import torch

import tiny
from editcore import decoding, text

PROMPTS = ["The Louvre is located in", "Hello", "The capital of Japan is the city of"]


def _left_padded(lm, prompts):
    """Prompt ids, and the left-padded batch ``generate`` takes: ``(enc, ids, mask, pad, width)``."""
    enc = [text.prompt_ids(lm.tokenizer, p) for p in prompts]
    ids, mask = text.padded(lm, enc, left=True)
    return enc, ids, mask, text.pad_id(lm.tokenizer), ids.shape[1]


@pytest.mark.parametrize("family", tiny.FAMILIES)
def test_own_greedy_loop_matches_generate(family):
    lm = tiny.lm(family)
    enc, ids, mask, pad, width = _left_padded(lm, PROMPTS)
    with torch.no_grad():
        ref = lm.model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=6, do_sample=False,
                                pad_token_id=pad, num_beams=1)[:, width:]
    got = decoding.greedy_loop(lm, enc, 6)
    assert got[:, :ref.shape[1]].tolist() == ref.tolist()
    # Prefixes: the first n tokens of a longer run are the run of length n.
    assert decoding.greedy_tokens(lm, PROMPTS, 3) == [row[:3] for row in decoding.greedy_tokens(lm, PROMPTS, 6)]


@pytest.mark.parametrize("family", ["gpt2", "gemma3", "llama"])
def test_rows_leaving_the_greedy_batch_keep_the_others_tokens(family, monkeypatch):
    """Rows that reach their own length, or an end-of-sequence token, leave the batch and its key/value
    cache; every row still gets exactly generate()'s tokens up to its stop, then padding."""
    lm = tiny.lm(family)
    enc, ids, mask, pad, width = _left_padded(lm, PROMPTS)
    with torch.no_grad():
        ref = lm.model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=6, do_sample=False,
                                pad_token_id=pad, num_beams=1)[:, width:]
    lengths = [2, 6, 4]
    got = decoding.greedy_loop(lm, enc, 6, lengths)
    for row, ref_row, n in zip(got.tolist(), ref.tolist(), lengths):
        assert row == ref_row[:n] + [pad] * (6 - n)
    # An end-of-sequence token met by one row (its third token) ends that row early.
    eos = int(ref[1, 2])
    monkeypatch.setattr(lm.model.generation_config, "eos_token_id", eos)
    with torch.no_grad():
        ref = lm.model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=6, do_sample=False,
                                pad_token_id=pad, num_beams=1, eos_token_id=eos)[:, width:]
    got = decoding.greedy_loop(lm, enc, 6)
    ref = torch.cat([ref, torch.full((3, 6 - ref.shape[1]), pad, dtype=ref.dtype)], 1)
    assert got.tolist() == ref.tolist()
    assert got[1, 3:].tolist() == [pad] * 3
    # A draft that runs past the end-of-sequence token does not extend the row.
    drafted = decoding.greedy_loop(lm, enc, 6, drafts=[row[:3] + [5, 5, 5] for row in ref.tolist()])
    assert drafted.tolist() == ref.tolist()


def test_pair_scores_shared_prefixes_equal_separate_passes():
    """Pairs read from a shared longer sequence get the same scores as each pair scored on its own."""
    lm = tiny.lm("llama")
    prompts = ["The Louvre is in", "The Louvre is in", "The Louvre is in", "Big Ben is in", "The Louvre"]
    targets = ["Paris", "London", "Paris France", "London", "is in"]
    together = text.score_targets(lm, prompts, targets)
    alone = [text.score_targets(lm, [p], [t])[0] for p, t in zip(prompts, targets)]
    for a, b in zip(together, alone):
        assert a.token_logprobs == pytest.approx(b.token_logprobs, abs=1e-5)
        assert a.token_correct == b.token_correct


@pytest.mark.parametrize("family", tiny.FAMILIES)
def test_pairs_sharing_a_long_prefix_run_it_once_and_score_the_same(family, monkeypatch):
    """Few-shot prompts sharing their demonstrations, and several targets after one prompt, run the shared
    part once (key/value cache repeated per member); every score equals a separate plain pass."""
    lm = tiny.lm(family)
    demo = "Review: a fine film\nSentiment: positive\n\nReview: dull and long\nSentiment: negative\n\n"
    prompts = [demo + f"Review: {x}\nSentiment:" for x in ("great fun", "boring", "a mess")]
    prompts += ["The Louvre is located in"] * 3 + ["Big Ben"]
    targets = ["positive", "negative", "positive", "Paris France", "London England", "Rome", "is in London"]
    monkeypatch.setattr(text, "SHARED_PREFIX_MIN_SAVING", 4)
    calls = []
    real = text.hidden_at_shared

    def spy(*args, **kwargs):
        calls.append(len(args[1]))
        return real(*args, **kwargs)

    monkeypatch.setattr(text, "hidden_at_shared", spy)
    together = text.score_targets(lm, prompts, targets)
    assert calls and sum(calls) >= 2  # groups were formed and run through the shared path
    alone = [text.score_targets(lm, [p], [t])[0] for p, t in zip(prompts, targets)]
    for a, b in zip(together, alone):
        assert a.token_logprobs == pytest.approx(b.token_logprobs, abs=1e-4)
        assert a.token_correct == b.token_correct


@pytest.mark.parametrize("family", tiny.FAMILIES)
def test_distributions_read_along_with_pairs_equal_plain_ones(family):
    """Next-token distributions read from the pairs' passes (a prompt also scored, a prompt only asked for its
    distribution, one asked twice) equal plain ones; the pair scores are unchanged by asking for them."""
    lm = tiny.lm(family)
    tok = lm.tokenizer
    pairs = [("The Louvre is in", "Paris France"), ("The Louvre is in", "London"), ("Big Ben is in", "London")]
    dist_prompts = ["The Louvre is in", "A tower in", "Big Ben is in", "A tower in"]
    encoded = [(text.prompt_ids(tok, p), text.target_ids(tok, t)) for p, t in pairs]
    read, dists = text.pairs_and_dists(lm, encoded, [text.prompt_ids(tok, p) for p in dist_prompts])
    assert dists.shape[0] == 4
    assert torch.allclose(dists, text.next_token_logprobs(lm, dist_prompts), atol=1e-4)
    for (lp, am), (lp0, am0) in zip(read, text.pair_logprobs(lm, encoded)):
        assert torch.allclose(lp, lp0, atol=1e-5) and torch.equal(am, am0)


def test_shared_prefix_groups_take_runs_with_a_long_common_prefix():
    seqs = [(1, 2, 3, 4, 5, 6, 7, 8, 9), (1, 2, 3, 4, 5, 6, 7, 8, 10), (1, 2, 3, 4, 5, 6, 7, 11),
            (5, 5), (1, 2, 9), (7, 7, 7, 7, 7, 7, 7, 1), (7, 7, 7, 7, 7, 7, 7, 2)]
    old = text.SHARED_PREFIX_MIN_SAVING
    try:
        text.SHARED_PREFIX_MIN_SAVING = 6
        groups, alone = text._shared_prefix_groups(seqs)
    finally:
        text.SHARED_PREFIX_MIN_SAVING = old
    # The first three share 7 tokens (saving 14); the two 7-runs share 7 (saving 7); the rest stand alone.
    assert sorted((n, sorted(m)) for n, m in groups) == [(7, [0, 1, 2]), (7, [5, 6])]
    assert sorted(alone) == [3, 4]


@pytest.mark.parametrize("family", tiny.FAMILIES)
def test_drafts_change_the_speed_of_greedy_decoding_not_its_tokens(family):
    """A draft (the unedited model's continuation, when reading an edited one) is checked like a speculative
    draft: right, partly right, wrong, too long or empty, the tokens are those of plain greedy decoding."""
    lm = tiny.lm(family)
    enc, ids, mask, pad, _ = _left_padded(lm, PROMPTS)
    plain = decoding.greedy_loop(lm, enc, 6)
    right = [row for row in plain.tolist()]
    partly = [row[:2] + [(row[2] + 1) % 50, 7, 7] for row in right]
    wrong = [[(t + 3) % 50 for t in row] for row in right]
    for drafts in (right, partly, wrong, [row + [1, 2, 3] for row in right], [[], None, right[2][:3]]):
        got = decoding.greedy_loop(lm, enc, 6, drafts=drafts)
        assert got.tolist() == plain.tolist(), drafts
    lengths = [2, 6, 4]
    short = decoding.greedy_loop(lm, enc, 6, lengths, drafts=partly)
    for row, ref, k in zip(short.tolist(), plain.tolist(), lengths):
        assert row == ref[:k] + [pad] * (6 - k)


@pytest.mark.parametrize("family", ["gemma3", "mistral"])
def test_cache_paths_hold_when_prompts_outrun_a_sliding_window(family, monkeypatch):
    """Gemma's local layers (and Mistral) attend to a sliding window; with a padded batch longer than it,
    greedy decoding (which then goes through ``generate``) and the shared-prefix scores still equal plain
    passes."""
    lm = tiny.lm(family, sliding_window=4)
    enc, ids, mask, pad, width = _left_padded(lm, PROMPTS)
    assert width > 4
    with torch.no_grad():
        ref = lm.model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=6, do_sample=False,
                                pad_token_id=pad, num_beams=1)[:, width:]
    assert decoding.greedy_tokens(lm, PROMPTS, 6) == ref.tolist()
    partly = [row[:2] + [7, 7, 7] for row in ref.tolist()]
    assert decoding.greedy_tokens(lm, PROMPTS, 6, drafts=partly) == ref.tolist()
    monkeypatch.setattr(text, "SHARED_PREFIX_MIN_SAVING", 1)
    prompts = ["The capital of Japan is the city of"] * 3
    targets = ["Tokyo Japan", "Kyoto", "Paris France"]
    together = text.score_targets(lm, prompts, targets)
    for (a, p, t) in zip(together, prompts, targets):
        assert a.token_logprobs == pytest.approx(text.score_targets(lm, [p], [t])[0].token_logprobs, abs=1e-4)
