"""MEND on tiny random models: the network's maths, the batched passes, training, resuming, and the error
without a trained network. No test needs a trained artefact on disk: each trains its own tiny one."""

import dataclasses

import pytest
import torch

import tiny
from editcore.errors import InputError
from editcore.methods import get_method
from editcore.methods.base import load_hparams
from editcore.methods.mend import edit_targets
from editcore.methods.mend import store
from editcore.methods.mend.factors import base_pass, edit_factors, make_batch, post_pass
from editcore.methods.mend.hypernet import MendNet
from editcore.methods.mend.training import edit_deltas, step_loss
from editcore.scope import Patch
from editcore.types import Request

pytestmark = pytest.mark.usefixtures("tmp_home")

REQ = Request("{} is located in the city of", "The Louvre", "London", "Paris")
# Small and fast: catalog edits only, no knowledge check, no bench hold-out.
TINY_TRAIN = {"steps": 4, "batch_edits": 2, "val_every": 2, "n_val": 2, "rank": 8, "checkpoint_every": 2,
              "sources": ["catalog"], "known_only": False, "holdout": "none"}


def _train_hp(**over):
    m = get_method("mend")
    return load_hparams("mend", m.TrainHparams, None, {**TINY_TRAIN, **over}, prefix="train_")


def _net(lm, seed=0, perturb=0.0):
    net = MendNet(edit_targets(lm, (), "mlp"), rank=8, n_hidden=1, edit_lr=1e-3, seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    for fnet in net.nets.values():
        for norm in (fnet.norm_u, fnet.norm_delta):  # mean 0, standard deviation 1
            norm.count.fill_(2.0)
            norm.m2.fill_(1.0)
        for layer in fnet.layers:
            with torch.no_grad():
                layer.U.add_(perturb * torch.randn(layer.U.shape, generator=g))
                layer.b.add_(perturb * torch.randn(layer.b.shape, generator=g))
    return net


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_untrained_network_is_a_gradient_step(family):
    """U = 0 and unit normalisation make the network the identity, so the update is -alpha * grad W: the
    rank-one factors read from the passes rebuild the true fine-tuning gradient (also in GPT-2's [in, out]
    Conv1D layout)."""
    lm = tiny.lm(family)
    net = _net(lm)
    with lm.scope():
        deltas, _ = edit_deltas(lm, net, REQ.text, REQ.target_new)
    for t in net.targets:
        g = tiny.nll_grad(lm, REQ.text, REQ.target_new, t.param)
        torch.testing.assert_close(deltas[t.param], -1e-3 * g, rtol=1e-4, atol=1e-9)


def test_update_is_the_formula_on_hand_built_factors():
    lm = tiny.lm("llama")
    net = _net(lm, perturb=0.3)
    fnet = net.nets[net.targets[0].shape_key]
    gen = torch.Generator().manual_seed(5)
    for norm in (fnet.norm_u, fnet.norm_delta):
        norm.update(torch.randn(7, norm.mean.numel(), generator=gen) * 3 + 1)
    u = torch.randn(4, fnet.d_in, generator=gen)
    d = torch.randn(4, fnet.d_out, generator=gen)
    i = 1 if net.targets[1].shape_key == net.targets[0].shape_key else 0
    mode = net.mode[i]

    def standardise(x, norm):
        n = norm.count.item()
        mean = norm.mean.float()
        std = (norm.m2 / (n - 1)).sqrt().float()
        return (x - mean) / (std + 1e-7)

    z = torch.cat([standardise(u, fnet.norm_u), standardise(d, fnet.norm_delta)], -1)
    for layer in fnet.layers:
        pre = z @ (layer.U @ layer.V).T + layer.b
        z = z + torch.clamp(layer.scale[mode] * pre + layer.shift[mode], min=0)
    u_t, d_t = z[:, :fnet.d_in], z[:, fnet.d_in:]
    want = -net.lrs[i] * sum(torch.outer(d_t[k], u_t[k]) for k in range(4))
    torch.testing.assert_close(net.update(i, u, d), want, rtol=1e-5, atol=1e-6)


def test_running_norm_matches_the_sample_statistics():
    from editcore.methods.mend.hypernet import RunningNorm

    x = torch.randn(50, 6, dtype=torch.float64) * 2 + 3
    norm = RunningNorm(6)
    for chunk in x.split([1, 7, 20, 22]):
        norm.update(chunk)
    torch.testing.assert_close(norm.mean, x.mean(0))
    torch.testing.assert_close(norm.m2 / (norm.count - 1), x.var(0))


@pytest.mark.parametrize("family", ["gpt2", "gemma3"])
def test_batched_low_rank_pass_equals_each_dense_edit(family):
    """Two edits in one batch, each row seeing its own edit through the low-rank hooks, give the states of the
    model with that edit's dense weight change applied."""
    lm = tiny.lm(family)
    net = _net(lm, perturb=0.2)
    edits = [(REQ.text, "London"), ("The capital of Japan is", "Seoul")]
    probes = [(REQ.text, "London"), ("The Eiffel Tower is in", "Rome"), ("The capital of Japan is", "Seoul")]
    owner = [0, 0, 1]
    with lm.scope():
        eb = make_batch(lm, edits)
        factors, _, _ = edit_factors(lm, base_pass(lm, eb, net.targets), eb, [0, 1])
        batch = make_batch(lm, probes)
        base = base_pass(lm, batch, net.targets, grad=False)
        with torch.no_grad():
            tf = [[net.factors(i, u, d) for i, (u, d) in enumerate(f)] for f in factors]
            hidden = post_pass(lm, base, batch, net.targets, tf, net.lrs, owner)
    for e, (prompt, target) in enumerate(edits):
        with lm.scope() as s:
            deltas, _ = edit_deltas(lm, net, prompt, target)
            s.apply(Patch(deltas))
            for item, (p, t) in enumerate(probes):
                if owner[item] != e:
                    continue
                one = make_batch(lm, [(p, t)])
                with torch.no_grad():
                    want = lm.model.base_model(input_ids=one.parts[0].ids, use_cache=False).last_hidden_state[0]
                part = next(k for k, pt in enumerate(batch.parts) if item in pt.items)
                row = batch.parts[part].items.index(item)
                got = hidden[part][row, :want.shape[0]]
                torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_compute_without_a_trained_network_says_how_to_train():
    lm = tiny.lm("llama")
    m = get_method("mend")
    d0 = lm.digest()
    with pytest.raises(InputError, match=r"no trained hypernetwork for tiny-llama; train one with "
                                         r"`python -m editcore train mend tiny-llama`"):
        m.compute(lm, [REQ], load_hparams("mend", m.Hparams, None))
    assert lm.digest() == d0
    assert m.trained(lm) is None


def test_a_short_training_run_lowers_the_edit_loss():
    """On fixed training edits, the post-edit NLL (the edit loss) after a few steps is clearly below that of
    the untrained network."""
    lm = tiny.lm("llama")
    m = get_method("mend")
    # The edit loss alone (c_loc = 0): on a random model the locality term would hold the update back.
    thp = _train_hp(steps=10, batch_edits=4, lr=1e-2, edit_lr=1e-3, lr_lr=1e-3, cloc=0.0, cedit=1.0,
                    val_every=10, checkpoint_every=100)
    data = m._data(lm, thp)
    from editcore.methods.mend.trainer import Trainer

    tr = Trainer(lm, thp, edit_targets(lm, thp.layers, thp.weights), data, "probe")
    tr.prime_norms()
    fixed = [d for s in range(3) for d in tr.draws(s)]

    def edit_nll():
        with lm.scope(), torch.no_grad():
            return step_loss(lm, tr.net, fixed, thp, learn_norm=False)[1]["edit_nll"]

    before = edit_nll()
    for _ in range(thp.steps):
        tr.run_step()
    after = edit_nll()
    # A random model's outputs are near uniform (NLL ~5.5): 0.2 nats is a clear drop (this run: 0.29).
    assert after < before - 0.2, (before, after)


def test_training_writes_an_artefact_that_compute_uses(tmp_path):
    lm = tiny.lm("gpt2")
    m = get_method("mend")
    report = m.train(lm, _train_hp())
    assert report["complete"] and report["steps"] == 4
    assert [p["step"] for p in report["curve"]] == [0, 2, 4]
    files = sorted(p.name for p in store.folder().iterdir())
    assert files == [report["name"] + ".json", report["name"] + ".safetensors"]  # checkpoint removed
    assert m.trained(lm)["name"] == report["name"]
    d0 = lm.digest()
    edit = m.compute(lm, [REQ], load_hparams("mend", m.Hparams, None))
    assert lm.digest() == d0
    assert set(edit.patch.deltas) == {t["param"] for t in report["targets"]}
    assert edit.diagnostics["artefact"] == report["name"]


def test_train_settings_exist_and_the_cli_estimates(capsys, monkeypatch):
    from editcore.cli import main

    thp = _train_hp()
    assert dataclasses.is_dataclass(thp)
    monkeypatch.setattr("editcore.models.load_model", lambda name, progress=None: tiny.lm("llama"))
    over = [f"--hparam={k}={v}" for k, v in
            {**TINY_TRAIN, "sources": '["catalog"]', "known_only": "false"}.items()]
    assert main(["train", "mend", "tiny-llama", "--estimate", *over]) == 0
    assert "training mend for tiny-llama: about" in capsys.readouterr().out


def test_the_catalog_part_the_bench_edits_is_never_trained_on():
    from editcore.methods.mend import data as mend_data
    from editcore.perfbench import split_part

    lm = tiny.lm("gpt2")
    report_ids = split_part("report")
    got = mend_data.build(lm, ["catalog"], False, "report", 5, 0, 0)
    trained = {e.id.split("#")[0] for e in got.train} | {e.id.split("#")[0] for e in got.val}
    assert trained and not trained & report_ids
    assert report_ids <= set(got.held_out)
    # The network in use tells the bench which facts it never saw.
    m = get_method("mend")
    assert m.held_out_facts(lm) is None
    m.train(lm, _train_hp(holdout="report"))
    assert report_ids <= m.held_out_facts(lm)


def test_the_bench_judges_a_trained_method_only_on_facts_it_never_saw(monkeypatch):
    from editcore import perfbench

    lm = tiny.lm("gpt2")
    facts = [perfbench.Fact(f"f{i}", REQ, ()) for i in range(3)]
    m = get_method("grace")
    hp = load_hparams("grace", m.Hparams, None, {"layer": 1, "steps": 1})
    seen = []
    monkeypatch.setattr(perfbench, "run_method", lambda lm, method, hp, fs: (seen.append([f.id for f in fs]) or
                                                                            {"adaptation": ""}))
    monkeypatch.setattr(type(m), "held_out_facts", lambda self, lm: {"f0", "f2"}, raising=False)
    res = perfbench._run_unseen(lm, m, hp, facts)
    assert seen == [["f0", "f2"]] and "2 of 3" in res["adaptation"]
    monkeypatch.setattr(type(m), "held_out_facts", lambda self, lm: set(), raising=False)
    with pytest.raises(InputError, match="training data"):
        perfbench._run_unseen(lm, m, hp, facts)
