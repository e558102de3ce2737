"""Metrics on real records of every public benchmark format (../shared/data), on a tiny random model.

The numbers are noise (random weights); these tests check that each format is read correctly and every
metric runs on it end to end and stays finite."""

import json
import math

import pytest
import torch

import tiny
from editcore.cases import Case, Probe
from editcore.metrics import conflicts as C
from editcore.metrics import evaluate
from editcore.metrics.general import general_abilities, perplexity_parts
from editcore.metrics.nkl import distracted_prompts
from editcore.metrics.portability import score_probes
from editcore.metrics.scoring import Scorer
from editcore.paths import shared_data
from editcore.probes import load_probe
from editcore.scope import Patch

DATA = shared_data()
pytestmark = pytest.mark.skipif(not DATA.is_dir(), reason=f"shared benchmark data not found at {DATA}")


def _load(rel):
    p = DATA / rel
    if not p.is_file():
        pytest.skip(f"{rel} not in the shared data")
    return json.loads(p.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def lm():
    return tiny.lm("gpt2")


def _noise(lm, request=None, scale=0.3):
    """A stand-in for an editing method: a seeded random update of one MLP output matrix."""
    name = lm.adapter.mlp_out_param_name(1)
    w = dict(lm.model.named_parameters())[name]
    seed = sum(map(ord, request.target_new)) if request is not None else 0
    g = torch.Generator().manual_seed(seed)
    return Patch({name: torch.randn(w.shape, generator=g).to(w) * scale})


def _cf_case(rec):
    rw = rec["requested_rewrite"]
    return Case(id=str(rec["case_id"]), relation_id=rw["relation_id"], relation="", prompt=rw["prompt"],
                subject=rw["subject"], target_true=rw["target_true"]["str"], targets_new=(rw["target_new"]["str"],),
                paraphrases=tuple(rec["paraphrase_prompts"]),
                neighbourhood=tuple(Probe(p, rw["target_true"]["str"]) for p in rec["neighborhood_prompts"][:4]),
                attributes=tuple(Probe(p, rw["target_new"]["str"]) for p in rec["attribute_prompts"][:2]),
                generation_prompts=tuple(rec["generation_prompts"][:1]))


def test_counterfact_records(lm):
    for rec in _load("counterfact/counterfact.json")[:2]:
        case = _cf_case(rec)
        r = evaluate(lm, case, _noise(lm), families=("counterfact", "nkl", "locality"), suggest=0).to_dict()
        f = r["families"]
        assert f["counterfact"]["es"]["n"] == 1 and f["counterfact"]["ps"]["n"] == 2
        assert f["nkl"]["nkl"]["n"] == 4 and f["nkl"]["nkl"]["mean"] > 0
        json.dumps(r, allow_nan=False)


def test_counterfact_plus_distracting_rule_matches_the_data():
    rec = _load("counterfact_plus/counterfact_plus.json")[0]
    rw = rec["requested_rewrite"]
    got = distracted_prompts(rw["prompt"].format(rw["subject"]), rw["target_new"]["str"], rec["neighborhood_prompts"])
    assert got == rec["distracting_neighborhood_prompts"]


@pytest.mark.parametrize("kind", ["coverage", "reverse", "composite"])
def test_conflict_edit_records(lm, kind):
    templates = _load("pitfalls/GPT2-XL/conflict_prompts.json")
    outcomes = []
    for rec in _load(f"pitfalls/GPT2-XL/{kind}_edit.json")[:2]:
        spec = C.conflict_spec_from_record(rec, {k: v[:2] for k, v in templates.items()})
        assert spec.type == kind and spec.q1.target == rec["edits"][0]["new_object"]["label"]
        outcomes.append(C.run_conflict(lm, spec, _noise))
    s = C.ConflictSummary(outcomes).to_dict()
    assert s["cs"]["n"] == 2 and -1.0 <= s["cm"]["mean"] <= 1.0
    assert (s["tfd"]["n"] == 2) == (kind == "composite")
    json.dumps(s, allow_nan=False)


def test_round_edit_records(lm):
    templates = _load("pitfalls/GPT2-XL/round_prompts.json")
    before = lm.digest()
    outs = [C.run_roundtrip(lm, C.round_spec_from_record(rec, {k: v[:2] for k, v in templates.items()}), _noise)
            for rec in _load("pitfalls/GPT2-XL/hard.json")[:2]]
    assert lm.digest() == before
    s = C.RoundSummary(outs).to_dict()
    assert 0.0 <= s["distortion"]["mean"] <= math.log(2) and 0.0 <= s["ir"]["mean"] <= 1.0
    assert all(o.n_objects >= 2 for o in outs)


def test_mquake_records():
    from editcore.benchmarks import load_benchmark

    lm = tiny.lm("llama", max_position_embeddings=2048)  # MQuAKE's demonstrations run to ~800 tokens
    from editcore.metrics.multihop import MultiHopSummary, case_hops, multihop_case_outcome

    _load("mquake/MQuAKE-hard.json")
    cases = load_benchmark("mquake", DATA / "mquake/MQuAKE-hard.json", limit=2)
    outcomes = []
    for case in cases:
        assert all(h.edited for h in case_hops(case))  # MQuAKE-hard: every hop of the chain is edited
        with lm.scope(_noise(lm)):
            for prompting in ("few-shot", "cot"):
                outcomes.append(multihop_case_outcome(Scorer(lm), case, prompting))
    assert len(outcomes[0].edit_wise) == len(cases[0].edits) and len(outcomes[0].questions) == 3
    s = MultiHopSummary(outcomes)
    assert s.ew.n == sum(len(o.edit_wise) for o in outcomes)  # pooled over edits


def test_yao2023_portability_records(lm):
    rec = _load("yao2023_portability_locality/portability/one_hop/counterfact_portability_gpt4.json")[0]
    por = rec["portability"]
    pre = Scorer(lm)
    with lm.scope(_noise(lm)):
        s = score_probes(pre, Scorer(lm), "one_hop", [(por["New Question"], por["New Answer"])])
    assert s.token_acc.n == 1 and 0.0 <= s.token_acc.mean <= 1.0


def test_downstream_loaders_parse_real_files():
    paths = {"sentiment": "downstream/sst2/test-SentimentAnalysis.first200.tsv",
             "piqa": "downstream/piqa/piqa_valid.first200.jsonl",
             "qa": "downstream/nq_open/test-OpenDomainQA.first200.jsonl",
             "arithmetic": "downstream/gsm8k/test-reasoning.first200.jsonl",
             "summarisation": "downstream/samsum/test-summarization.first200.json"}
    for task, rel in paths.items():
        if not (DATA / rel).is_file():
            pytest.skip(f"{rel} missing")
        items = load_probe(task, DATA / rel, limit=5)
        assert len(items) == 5, task
    assert {i["label"] for i in load_probe("sentiment", DATA / paths["sentiment"], 20)} == {0, 1}
    assert all(i["label"] in (0, 1) for i in load_probe("piqa", DATA / paths["piqa"], 20))
    assert load_probe("arithmetic", DATA / paths["arithmetic"], 1)[0]["answer"] == "18"  # Janet's ducks
    assert all(i["answers"] for i in load_probe("qa", DATA / paths["qa"], 5))


def test_general_abilities_on_real_files(lm):
    paths = {"sentiment": str(DATA / "downstream/sst2/test-SentimentAnalysis.first200.tsv"),
             "piqa": str(DATA / "downstream/piqa/piqa_valid.first200.jsonl")}
    pre = Scorer(lm)
    wiki = DATA / "wikitext/wiki.test.raw"
    with lm.scope(_noise(lm)):
        g = general_abilities(pre, Scorer(lm), sizes={"sentiment": 3, "piqa": 2, "qa": 0, "arithmetic": 0,
                                                      "summarisation": 0},
                              paths=paths, heldout=str(wiki) if wiki.is_file() else None, heldout_chars=400)
    d = g.to_dict()
    assert d["probes"]["sentiment"]["pre"]["n"] + d["probes"]["sentiment"]["skipped"] == 3
    assert d["perplexity_pre"] > 1 and d["perplexity_tokens"] > 0
    json.dumps(d, allow_nan=False)


def test_perplexity_counts_every_token_once(lm):
    text = "Big Ben stands in London by the Thames. " * 8
    n_body = len(lm.tokenizer(text, add_special_tokens=False)["input_ids"])
    _, n = perplexity_parts(lm, text, context=32)
    assert n == n_body - 1  # no BOS on this tokenizer: the first token has nothing to be predicted from


def test_perplexity_with_bos_counts_every_token():
    g = tiny.lm("gemma3")
    text = "Big Ben stands in London by the Thames. " * 8
    n_body = len(g.tokenizer(text, add_special_tokens=False)["input_ids"])
    _, n = perplexity_parts(g, text, context=32)
    assert n == n_body
