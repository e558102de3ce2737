"""Does localisation inform editing? (Hase et al. 2023) on the model at hand.

For a set of facts the model knows, each fact is traced once (the unedited model) and edited with ROME at
every chosen layer, each edit alone. Per (fact, layer) this gives the *tracing effect* at that layer (MLP
restoration at the subject's last token, and its maximum over tokens, as a fraction of the probability the
noise removed: ``max(0, (p_restored - p_corrupted) / (p_clean - p_corrupted))``, Hase et al.'s measure) and
the edit's scores: success (the new target is the top-1 continuation), neighbourhood score (CounterFact's
NS) and the rewrite score ``(p_new_after - p_new_before) / (1 - p_new_before)``. The analysis is theirs:
correlations pooled over (fact, layer), and the share of variance in an edit score explained by the layer
alone, by the tracing effect alone, and by both (the layer as a factor, interacting with the effect).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence

import numpy as np

from ..errors import InputError
from .settings import TraceSettings

log = logging.getLogger(__name__)

SCORES = ("rewrite", "success", "neighbourhood")
EFFECTS = ("mlp_last", "mlp_max", "hidden_last")


def effects(trace: dict, layer: int) -> dict:
    """The tracing effects of one trace at ``layer`` (fractions of the noise's effect, floored at 0)."""
    drop = trace["high"] - trace["low"]

    def frac(p):
        return max(0.0, (p - trace["low"]) / drop) if drop > 0 else 0.0

    mlp = trace["kinds"]["mlp"]["scores"]
    return {"mlp_last": frac(mlp[trace["subject_last"]][layer]),
            "mlp_max": max(frac(row[layer]) for row in mlp),
            "hidden_last": frac(trace["kinds"]["hidden"]["scores"][trace["subject_last"]][layer])}


def pearson(x: Sequence[float], y: Sequence[float]) -> float | None:
    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) < 3 or x.std() == 0 or y.std() == 0:
        return None
    return float(np.corrcoef(x, y)[0, 1])


def r_squared(design: np.ndarray, y: np.ndarray) -> float | None:
    """R^2 of an ordinary least-squares fit of ``y`` on the columns of ``design`` (which hold an intercept)."""
    tss = float(((y - y.mean()) ** 2).sum())
    if tss == 0:
        return None
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    rss = float(((y - design @ coef) ** 2).sum())
    return 1.0 - rss / tss


def variance_explained(rows: Sequence[dict], score: str, effect: str) -> dict:
    """Hase et al.'s three regressions of ``score`` over (fact, layer) rows: on the layer (one-hot), on the
    tracing effect, and on both with their interaction."""
    layers = sorted({r["layer"] for r in rows})
    y = np.array([float(r[score]) for r in rows])
    e = np.array([r[effect] for r in rows])
    one = np.ones((len(rows), 1))
    hot = np.array([[float(r["layer"] == lay) for lay in layers[1:]] for r in rows]).reshape(len(rows), -1)
    by_layer = r_squared(np.hstack([one, hot]), y)
    by_effect = r_squared(np.hstack([one, e[:, None]]), y)
    both = r_squared(np.hstack([one, hot, e[:, None], hot * e[:, None]]), y)
    return {"layer": by_layer, "effect": by_effect, "both": both,
            "added_by_effect": None if both is None or by_layer is None else both - by_layer}


def analyse(rows: Sequence[dict]) -> dict:
    out = {"correlation": {}, "r2": {}}
    for score in SCORES:
        out["correlation"][score] = {eff: pearson([r[eff] for r in rows], [float(r[score]) for r in rows])
                                     for eff in EFFECTS}
        out["r2"][score] = variance_explained(rows, score, "mlp_last")
    return out


def per_layer(rows: Sequence[dict]) -> list[dict]:
    out = []
    for layer in sorted({r["layer"] for r in rows}):
        sel = [r for r in rows if r["layer"] == layer]
        out.append({"layer": layer, "n": len(sel), **{k: sum(float(r[k]) for r in sel) / len(sel)
                                                      for k in (*EFFECTS, *SCORES, "efficacy")}})
    return out


def run(lm, n_facts: int = 10, layers: Sequence[int] | None = None, settings: TraceSettings | None = None,
        overrides: dict | None = None, progress=None) -> dict:
    """Trace and edit ``n_facts`` known catalog facts at each of ``layers`` (default: every layer)."""
    from ..methods import get_method
    from ..methods import layer_stats
    from ..methods.base import load_hparams
    from ..methods.speed import Speed
    from ..perfbench import known_facts, run_method
    from ..text import score_targets
    from .trace import trace_cached

    if n_facts < 3:
        raise InputError("the localisation experiment needs at least 3 facts")
    L = lm.adapter.n_layers
    layers = sorted(set(range(L) if layers is None else layers))
    for layer in layers:
        lm.adapter.check_layer(layer)
    settings = (settings or TraceSettings()).validate()
    t0 = time.perf_counter()
    facts = known_facts(lm, n_facts)
    if len(facts) < 3:
        raise InputError(f"only {len(facts)} catalog facts are known by {lm.name}; the experiment needs 3")
    steps = len(facts) * (1 + len(layers))
    done = 0
    traces = {}
    for f in facts:
        r = f.request
        with lm.scope():
            traces[f.id] = trace_cached(lm, r.prompt, r.subject, r.target_true, settings)
            p_pre = math.exp(score_targets(lm, [r.text], [r.target_new])[0].logprob)
        traces[f.id]["p_new_before"] = p_pre
        done += 1
        if progress:
            progress(f"traced {f.id}", done / steps)
    rome = get_method("rome")
    hp0 = load_hparams("rome", rome.Hparams, lm.name, {**(overrides or {}), "layer": layers[0]})
    # Every layer's key statistics in one pass over the corpus, not one pass per layer inside ROME.
    layer_stats.cholesky_factors(lm, layers, hp0.stats_samples, hp0.stats_corpus)
    rows = []
    for layer in layers:
        hp = load_hparams("rome", rome.Hparams, lm.name, {**(overrides or {}), "layer": layer})
        # ROME's suffix replay mis-reads its keys when the edited layer is 0 (the replay's check forward runs
        # through the edited module): there, its exact whole-sequence path, which gives the same edit.
        speed = Speed.from_env().but(suffix_cache=False) if layer == 0 else None
        for f in facts:
            judged = run_method(lm, rome, hp, [f], speed=speed)["per_fact"][0]
            tr = traces[f.id]
            p_pre = tr["p_new_before"]
            rows.append({"fact": f.id, "layer": layer, **effects(tr, layer),
                         "rewrite": (judged["p_new"] - p_pre) / (1 - p_pre) if p_pre < 1 else 0.0,
                         "success": judged["token_top1"], "efficacy": judged["es_product"],
                         "neighbourhood": judged["ns_product"], "p_new": judged["p_new"]})
            done += 1
            if progress:
                progress(f"ROME at layer {layer}: {f.id}", done / steps)
        log.info("localisation %s layer %d done", lm.name, layer)
    return {"model": lm.name, "fingerprint": lm.fingerprint, "n_layers": L, "layers": layers,
            "facts": [f.id for f in facts], "settings": settings.to_dict(),
            "rome_overrides": dict(overrides or {}), "rows": rows, "per_layer": per_layer(rows),
            "analysis": analyse(rows), "traces": list(traces.values()), "seconds": time.perf_counter() - t0}
