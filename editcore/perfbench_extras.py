"""The bench's optional tables (``make bench`` with ``--extras`` or ``--full``): what each speed-up buys, the
evaluation's seconds after one edit, and ROME's quality against the number of statistics tokens. Kept apart
from :mod:`editcore.perfbench` (quality and timing per method), which calls :func:`extras`."""

from __future__ import annotations

import json
import os
import time

from .errors import InputError
from .perfbench import run_method


def extras(lm, facts, common, methods, corpus, stats_samples) -> dict:
    """The extra tables for one model (ROME's speed-ups need ROME; MEMIT's need MEMIT too)."""
    out: dict = {}
    if "rome" in methods:
        out["speedups"] = _speedups(lm, facts[:3], common)
        if "memit" in methods:
            out["speedups"] += _memit_speedups(lm, facts[:10], common)
        out["stats_sweep"] = _stats_sweep(lm, facts[:5], corpus, sorted({0, 2048, 8192, stats_samples, 65536}))
        out["evaluation"] = _eval_timing(lm, common)
    return out


def merge_reports(path, new: dict, base: dict | None = None) -> dict:
    """``new``'s method rows put into the bench report at ``path`` (replacing rows of the same method; a model
    the report lacks is added). Rows are only comparable on the same facts, so a model whose facts differ is
    refused rather than mixed. ``base``: that report as already read (a run that rewrites ``path`` as it goes
    merges into the report it started from)."""
    try:
        old = base if base is not None else json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"--merge: there is no {path} to merge into; run the bench without --merge first") from None
    except ValueError as exc:
        raise InputError(f"--merge: {path} is not a bench report ({exc})") from None
    by_name = {m["model"]: m for m in old.get("models", [])}
    for m in new["models"]:
        base = by_name.get(m["model"])
        if base is None:  # a model benched on its own later: its section is added as it is
            old.setdefault("models", []).append(m)
            m["merged"] = {k: v["measured"] for k, v in m["methods"].items()}
            continue
        if base["facts"] != m["facts"]:
            raise InputError(f"--merge: {m['model']}'s facts differ from {path}'s (use the same --facts)")
        base["methods"].update(m["methods"])
        if m.get("sections"):  # measured again in this run: the newer ones replace them
            base["sections"] = m["sections"]
        base.setdefault("merged", {}).update({k: v["measured"] for k, v in m["methods"].items()})
    return old


# Switches of the value optimisation that ROME and MEMIT share (editcore.methods.speed.Speed).
_SHARED_VARIANTS = [
    ("log-probabilities through autograd's log_softmax and gather", {}, {"fused_log_probs": False}),
    ("suffix recorded without autograd, first step replayed (and ROME's keys read by a forward of their own)",
     {}, {"record_first_step": False}),
    ("context prefixes' key/values computed for every row (not once per prefix, kept across edits)",
     {}, {"shared_prefixes": False}),
    ("replayed blocks' Linear layers with BLAS's plain weights (not oneDNN's blocked ones)",
     {}, {"packed_linears": False}),
]


def _speedups(lm, facts, common) -> list[dict]:
    """ROME's seconds per edit with each speed-up switched off, on the same facts (statistics cached)."""
    return _variants(lm, "rome", facts, common, [
        ("EditScope defaults", {}, {}),
        ("no suffix-only replay (whole sequences through blocks l..L-1)", {}, {"suffix_cache": False}),
        ("no block replay (full forward every step)", {}, {"suffix_cache": False, "block_replay": False}),
        ("KL prompt in a row of its own (as ROME), not read from the plain prompt's row", {}, {"shared_kl_row": False}),
        *_SHARED_VARIANTS,
        ("no early stop at P(target)>=0.9 (ROME's loss<0.05 rule only)", {"v_stop_prob": 1.0}, {}),
        ("ROME's 20 context prefixes instead of 5", {"context_prefixes": 20, "context_tokens": 10}, {}),
    ])


def _memit_speedups(lm, facts, common) -> list[dict]:
    """MEMIT's batch seconds on the same batch: defaults and with one speed-up switched off at a time."""
    return _variants(lm, "memit", facts, common, [
        ("EditScope defaults", {}, {}),
        ("finished requests' rows kept in the batch", {}, {"drop_finished": False}),
        ("KL prompts in rows of their own (as MEMIT)", {}, {"shared_kl_row": False}),
        ("each layer's keys and z read with a fresh forward from the embeddings", {}, {"layer_walk": False}),
        *_SHARED_VARIANTS,
    ])


def _variants(lm, method_name: str, facts, common, variants) -> list[dict]:
    """One row per ``(label, hyper-parameter overrides, speed switches)``: the method run on the same facts
    (all in one batch for batched methods) with those fast paths switched off."""
    from .methods import get_method
    from .methods.base import load_hparams
    from .methods.speed import Speed

    method = get_method(method_name)
    rows = []
    base = Speed.from_env()
    for label, ov, switches in variants:
        hp = load_hparams(method_name, method.Hparams, lm.name, {**common, **ov})
        r = run_method(lm, method, hp, facts, speed=base.but(**switches))
        name = f"{method_name} (batch of {r['n_facts']})" if r["batched"] else method_name
        rows.append({"method": name, "variant": label, "seconds_median": r["seconds_median"],
                     "token_top1": r["rates"]["token_top1"]["mean"], "steps_mean": r["steps_mean"],
                     "n_facts": r["n_facts"]})
    return rows


EVAL_FACT, EVAL_TARGET = "P276:louvre", "London"


def _eval_timing(lm, common) -> dict:
    """Seconds of ``python -m editcore eval <model> --method rome --fact louvre --target London``'s parts:
    the edit, then the evaluation of every metric family (and of the quick set the dashboard uses by
    default), each with the unedited model's reads taken from the pre-edit cache (the usual case: a fact's
    pre-edit scores are computed once) and, for the full set, without it (first time)."""
    from .catalog import load_catalog
    from .methods import get_method
    from .methods.base import load_hparams
    from .metrics import FAMILIES, evaluate
    from .metrics import scoring
    from .cases.resolve import with_new_target
    from .service.edit import QUICK_SKIPPED

    case = with_new_target(next(c for c in load_catalog() if c.id == EVAL_FACT), EVAL_TARGET)
    rome = get_method("rome")
    hp = load_hparams("rome", rome.Hparams, lm.name, common)
    with lm.scope():
        edit = rome.compute(lm, [case.request(0)], hp)
    quick = tuple(f for f in FAMILIES if f not in QUICK_SKIPPED)
    saved = os.environ.get("EDITSCOPE_PRECACHE")
    os.environ["EDITSCOPE_PRECACHE"] = "0"  # the cold run must not read (or fill) the disk cache
    try:
        scoring.clear_cache(disk=False)
        t = time.perf_counter()
        evaluate(lm, case, edit, families=FAMILIES, target_new=EVAL_TARGET)
        cold = time.perf_counter() - t
    finally:
        if saved is None:
            os.environ.pop("EDITSCOPE_PRECACHE", None)
        else:
            os.environ["EDITSCOPE_PRECACHE"] = saved
    t = time.perf_counter()
    report = evaluate(lm, case, edit, families=FAMILIES, target_new=EVAL_TARGET)
    warm = time.perf_counter() - t
    t = time.perf_counter()
    evaluate(lm, case, edit, families=quick, target_new=EVAL_TARGET)
    warm_quick = time.perf_counter() - t
    return {"fact": EVAL_FACT, "target": EVAL_TARGET, "edit_seconds": edit.seconds,
            "all_families_seconds": warm, "all_families_cold_seconds": cold, "quick_seconds": warm_quick,
            "quick_families": list(quick),
            "post_seconds": {k[len("post_"):]: v for k, v in report.seconds.items() if k.startswith("post_")}}


def _stats_sweep(lm, facts, corpus, counts) -> list[dict]:
    from .methods import get_method
    from .methods.base import load_hparams

    from .methods import layer_stats as stats
    from .methods.rome import auto_layer

    rows = []
    for name in ("rome",):
        method = get_method(name)
        for n in counts:
            hp = load_hparams(name, method.Hparams, lm.name, {"stats_samples": n, "stats_corpus": corpus or "auto"})
            layer = auto_layer(lm) if hp.layer == -1 else hp.layer
            stats_seconds = None
            if n > 0:  # computed now if missing, so the edits below are timed with statistics cached
                stats.second_moment(lm, layer, n, corpus)
                stats_seconds = float((stats.cached_info(lm, layer, n, corpus) or {}).get("seconds", "nan"))
            r = run_method(lm, method, hp, facts)
            rows.append({"method": name, "stats_tokens": n, "stats_seconds": stats_seconds,
                         "token_top1": r["rates"]["token_top1"]["mean"], "es": r["rates"]["es"]["mean"],
                         "ns": r["rates"]["ns"]["mean"], "seconds_median": r["seconds_median"]})
    return rows


def extras_markdown(m: dict) -> list[str]:
    """The extra tables of one model's bench entry as Markdown (nothing when they were not run)."""
    lines: list[str] = []
    if m.get("speedups"):
        lines += ["### What bought how much (same facts per method, statistics cached)", "",
                  "ROME: the first 3 facts, each alone (s/edit median; not comparable with the table above); "
                  "MEMIT: one batch of the first 10 (its seconds; steps summed over requests). One run per row, so "
                  "differences under ~10% are within this machine's drift. Not switchable, so not in the table: "
                  "the unembedding's chunked backward and vocabulary projection (see `editcore.models.arch`). "
                  "Token top-1: every new-target token top-1 after the edit prompt (teacher-forced).", "",
                  "| method | variant | seconds | mean steps | token top-1 |", "|---|---|---|---|---|"]
        for r in m["speedups"]:
            lines.append(f"| {r.get('method', 'rome')} | {r['variant']} | {r['seconds_median']:.2f} | "
                         f"{r['steps_mean']:.1f} | {r['token_top1']:.0%} |")
        lines.append("")
    if m.get("evaluation"):
        e = m["evaluation"]
        post = ", ".join(f"{k} {v:.2f}" for k, v in e["post_seconds"].items())
        lines += ["### Evaluation after one edit (`eval --method rome --fact louvre --target London`)", "",
                  f"Edit {e['edit_seconds']:.2f} s. Evaluation of every metric family: "
                  f"**{e['all_families_seconds']:.2f} s** with the unedited model's reads cached (computed once "
                  f"per fact), {e['all_families_cold_seconds']:.2f} s with nothing cached (also the general-ability "
                  f"probes, which are read once per model); the dashboard's quick "
                  f"set ({', '.join(e['quick_families'])}): {e['quick_seconds']:.2f} s. Seconds on the edited "
                  f"model: {post}.", ""]
    if m.get("stats_sweep"):
        lines += ["### Statistics sample count (0 = identity covariance)", "",
                  "| method | tokens | s to compute (one layer) | token top-1 | ES | NS | s/edit median |",
                  "|---|---|---|---|---|---|---|"]
        for r in m["stats_sweep"]:
            sec = r.get("stats_seconds")
            lines.append(f"| {r['method']} | {r['stats_tokens']} | {'-' if sec is None else f'{sec:.0f}'} | "
                         f"{r['token_top1']:.0%} | {r['es']:.0%} | {r['ns']:.2f} | {r['seconds_median']:.2f} |")
        lines.append("")
    return lines
