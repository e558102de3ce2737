"""Speed and quality bench of the registered editing methods on the bundled models, and layer sweeps.

Quality numbers (CounterFact-style, on catalog facts the model knows):

* **success**: every token of the new target is the top-1 choice after the edit prompt (teacher-forced),
  i.e. greedy decoding starts with the new target;
* **efficacy**: ``P(new) > P(old)`` on the edit prompt (CounterFact's efficacy score);
* **neighbourhood score**: fraction of neighbourhood prompts where ``P(old answer) > P(new target)`` after
  the edit (CounterFact's NS; 1 is perfect locality).

Timing is wall-clock seconds of ``method.compute`` with statistics already cached (their one-off cost is
reported separately). Peak memory is the process's peak resident set size (``ru_maxrss``; it includes the
loaded model) and, on CUDA, ``torch.cuda.max_memory_allocated``.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import resource
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from .errors import EditScopeError, InputError
from .types import Request

log = logging.getLogger(__name__)

Progress = Callable[[str, float], None]
BENCH_MODELS = ("gemma-3-270m", "smollm2-135m")


@dataclass
class Fact:
    id: str
    request: Request
    neighbours: tuple[tuple[str, str], ...]  # (prompt, old answer)


def known_facts(lm, n: int, exclude: Sequence[str] = ()) -> list[Fact]:
    """``n`` catalog facts whose old answer the model gives (teacher-forced top-1), spread round-robin over
    relations in catalog order, so the pick is deterministic."""
    from .catalog import load_catalog
    from .text import score_targets

    by_rel: dict[str, list] = {}
    for case in load_catalog():
        if case.id not in exclude and case.neighbourhood:
            by_rel.setdefault(case.relation_id, []).append(case)
    order = []
    queues = list(by_rel.values())
    while any(queues):
        for q in queues:
            if q:
                order.append(q.pop(0))
    picked: list[Fact] = []
    for start in range(0, len(order), 32):
        chunk = order[start:start + 32]
        with lm.scope():
            scores = score_targets(lm, [c.edit_prompt for c in chunk], [c.target_true for c in chunk])
        for case, sc in zip(chunk, scores):
            if all(sc.token_correct):
                picked.append(Fact(case.id, case.request(0),
                                   tuple((p.prompt, p.answer) for p in case.neighbourhood)))
                if len(picked) == n:
                    return picked
    if len(picked) < n:
        log.warning("only %d known facts found for %s (wanted %d)", len(picked), lm.name, n)
    return picked


def judge(lm, facts: Sequence[Fact]) -> list[dict]:
    """Quality of the model *as it is now* (call inside a scope with the edit applied)."""
    from .text import score_targets

    out = []
    for f in facts:
        r = f.request
        prompts = [r.text, r.text] + [p for p, _ in f.neighbours for _ in range(2)]
        targets = [r.target_new, r.target_true] + [t for _, a in f.neighbours for t in (a, r.target_new)]
        sc = score_targets(lm, prompts, targets)
        nb = [sc[i].logprob > sc[i + 1].logprob for i in range(2, len(sc), 2)]
        out.append({"fact": f.id, "success": all(sc[0].token_correct), "efficacy": sc[0].logprob > sc[1].logprob,
                    "p_new": float(torch.tensor(sc[0].logprob).exp()),
                    "neighbourhood": sum(nb) / len(nb) if nb else float("nan")})
    return out


def peak_rss_mb() -> float:
    """The process's resident-memory high-water mark in MB: since the last :func:`reset_peak_rss` where
    Linux allows resetting it (``VmHWM``), else over the whole process (``ru_maxrss``)."""
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # kB on Linux


def reset_peak_rss() -> None:
    """Start a new high-water mark from the current resident memory, after handing freed memory back to the
    system, so one model's peak does not include what an earlier model in the same run left behind."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM (Linux >= 4.0)
    except OSError:
        pass


def run_method(lm, method, hp, facts: Sequence[Fact], batch: bool | None = None, speed=None) -> dict:
    """Edit each fact alone (or all at once for batched methods) and judge it; the model is restored.
    ``speed``: the methods' fast paths (:class:`editcore.methods.speed.Speed`; default: all on)."""
    batch = method.batched if batch is None else batch
    groups = [list(facts)] if batch else [[f] for f in facts]
    times, judged, diags = [], [], []
    if lm.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(lm.device)
    for group in groups:
        with lm.scope() as s:
            t0 = time.perf_counter()
            edit = method.compute(lm, [f.request for f in group], hp, speed=speed)
            times.append(time.perf_counter() - t0)
            s.apply(edit.patch)
            judged.extend(judge(lm, group))
        diags.append({k: v for k, v in edit.diagnostics.items() if isinstance(v, (int, float, bool))})
    n = len(judged)
    res = {
        "method": method.name, "n_facts": n, "batched": batch,
        "seconds_median": statistics.median(times), "seconds_min": min(times), "seconds_max": max(times),
        "seconds_per_edit": sum(times) / n if n else float("nan"),
        "success": sum(j["success"] for j in judged) / n, "efficacy": sum(j["efficacy"] for j in judged) / n,
        "neighbourhood": sum(j["neighbourhood"] for j in judged) / n,
        "steps_mean": statistics.mean(d.get("steps", 0) for d in diags),
        "peak_rss_mb": peak_rss_mb(), "per_fact": judged,
    }
    if lm.device.type == "cuda":
        res["cuda_peak_mb"] = torch.cuda.max_memory_allocated(lm.device) / 2**20
    return res


def sweep(lm, method_name: str, key: str, values: Sequence, facts: Sequence[Fact], overrides: dict,
          progress: Progress | None = None, batch: bool = False) -> list[dict]:
    """One row per value of the hyper-parameter ``key`` (e.g. ROME's ``layer``, MEMIT's ``layers`` ranges or
    ``mom2_update_weight``): success, efficacy, neighbourhood score, seconds; each fact edited alone, or all
    in one batch with ``batch`` (MEMIT)."""
    from .methods import get_method
    from .methods.base import load_hparams

    method = get_method(method_name)
    rows = []
    for i, value in enumerate(values):
        hp = load_hparams(method_name, method.Hparams, lm.name, {**overrides, key: value})
        r = run_method(lm, method, hp, facts, batch=batch)
        rows.append({key: value, **{k: r[k] for k in ("success", "efficacy", "neighbourhood", "seconds_median",
                                                        "steps_mean")}})
        if progress:
            progress(f"{method_name} sweep {key}={value}", (i + 1) / len(values))
        log.info("sweep %s %s=%s: %s", method_name, key, value, rows[-1])
    return rows


def environment(lm=None) -> dict:
    env = {"python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads(),
           "cpus": os.cpu_count(), "machine": platform.machine(),
           "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None}
    if lm is not None:
        env.update(device=str(lm.device), dtype=str(lm.dtype))
    return env


def bench_model(name: str, facts_n: int, stats_samples: int, corpus: str | None, methods: Sequence[str],
                extras: bool, progress: Progress | None = None) -> dict:
    from .methods import get_method, layer_stats as stats
    from .methods.base import load_hparams
    from .models import load_model

    reset_peak_rss()
    t0 = time.perf_counter()
    lm = load_model(name)
    out: dict = {"model": name, "load_seconds": time.perf_counter() - t0, "environment": environment(lm)}
    facts = known_facts(lm, facts_n)
    out["facts"] = [f.id for f in facts]
    common = {"stats_samples": stats_samples, "stats_corpus": corpus or "auto"}

    # Statistics first, timed on their own (the layers the default ROME/MEMIT hyper-parameters use).
    layers = set()
    for mname in ("rome", "memit"):
        if mname in methods:
            hp = load_hparams(mname, get_method(mname).Hparams, name, common)
            layers.update(hp.layers if mname == "memit" else [hp.layer])
    layers = sorted(_resolve_layers(lm, layers))
    t = time.perf_counter()
    stats.second_moments(lm, layers, stats_samples, corpus, progress)
    out["stats"] = {"layers": layers, "tokens": stats_samples, "corpus": stats.resolve_corpus(corpus),
                    "seconds_total": time.perf_counter() - t,
                    "seconds_per_layer_when_computed": {
                        str(layer): float((stats.cached_info(lm, layer, stats_samples, corpus) or {}).get("seconds",
                                                                                                        "nan"))
                        for layer in layers}}

    out["methods"] = {}
    for mname in methods:
        method = get_method(mname)
        overrides = common if {"stats_samples", "stats_corpus"} <= set(method.Hparams.__dataclass_fields__) else {}
        try:
            hp = load_hparams(mname, method.Hparams, name, overrides)
            out["methods"][mname] = run_method(lm, method, hp, facts)
        except EditScopeError as exc:
            out["methods"][mname] = {"error": str(exc)}
        log.info("%s %s: %s", name, mname, {k: v for k, v in out["methods"][mname].items() if k != "per_fact"})

    if extras and "rome" in methods:
        # Kept small so `make bench` stays near 15 minutes: 3 facts for the speed-ups, 5 for the count sweep.
        out["speedups"] = _speedups(lm, facts[:3], common)
        if "memit" in methods:
            out["speedups"] += _memit_speedups(lm, facts, common)
        out["stats_sweep"] = _stats_sweep(lm, facts[:5], corpus, sorted({0, 2048, 8192, stats_samples, 65536}))
    if extras and "rome" in methods:
        out["evaluation"] = _eval_timing(lm, common)
    out["sections"] = []
    for section in SECTIONS:
        try:
            got = section(lm, facts, common)
        except EditScopeError as exc:
            got = {"title": getattr(section, "__name__", "section"), "columns": [], "rows": [], "note": str(exc)}
        if got:
            out["sections"].append(got)
    out["peak_rss_mb"] = peak_rss_mb()
    return out


def _section(module: str) -> Callable:
    """The ``bench_section`` of ``module``, imported when the bench runs."""
    def run(lm, facts, common):
        import importlib

        return importlib.import_module(module).bench_section(lm, facts, common)
    run.__name__ = module
    return run


# Further measurements, each ``fn(lm, facts, common) -> {"title", "columns", "rows", "note"} | None`` (rows are
# dicts keyed by the columns; None: nothing to measure on this model). A feature adds its function here and
# the report renders it; the functions live with the feature they measure.
SECTIONS: list[Callable] = [_section("editcore.methods.grace"), _section("editcore.methods.mend.report")]


def _resolve_layers(lm, layers) -> list[int]:
    from .methods.memit import auto_layers
    from .methods.rome import auto_layer

    out = set()
    for layer in layers:
        out.update([auto_layer(lm)] if layer == -1 else [layer])
    return sorted(out) or auto_layers(lm)


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
                     "success": r["success"], "steps_mean": r["steps_mean"], "n_facts": r["n_facts"]})
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
            rows.append({"method": name, "stats_tokens": n, "stats_seconds": stats_seconds, "success": r["success"],
                         "efficacy": r["efficacy"], "neighbourhood": r["neighbourhood"],
                         "seconds_median": r["seconds_median"]})
    return rows


# ---- report ---------------------------------------------------------------------------------------------
def to_markdown(report: dict) -> str:
    lines = ["# EditScope bench", "",
             "Generated by `make bench` (`python -m editcore bench --out reports`); numbers are measured, "
             "not copied. Success = new target top-1 on the edit prompt (teacher-forced, all tokens); efficacy "
             "= P(new) > P(old); neighbourhood = fraction of neighbourhood prompts where P(old) > P(new) after "
             "the edit. Seconds: `method.compute` only, statistics cached. Peak RSS: the process's high-water "
             "mark during that model's runs (reset before the model is loaded; includes the model).",
             ""]
    env = report.get("environment", {})
    lines += [f"Environment: {json.dumps(env)}", ""]
    for m in report["models"]:
        lines += [f"## {m['model']}", "", f"Facts ({len(m['facts'])}, known by the model): "
                  + ", ".join(f"`{f}`" for f in m["facts"]), ""]
        st = m["stats"]
        lines += [f"Layer statistics: layers {st['layers']}, {st['tokens']} tokens of `{st['corpus']}`; "
                  f"{st['seconds_total']:.1f}s in this run (0 if cached); seconds per layer when computed: "
                  f"{st['seconds_per_layer_when_computed']}", ""]
        lines += ["| method | facts | s/edit median | min | max | success | efficacy | neighbourhood | "
                  "mean steps | peak RSS MB |", "|---|---|---|---|---|---|---|---|---|---|"]
        for name, r in m["methods"].items():
            if "error" in r:
                lines.append(f"| {name} | error: {r['error']} | | | | | | | | |")
                continue
            med = r["seconds_median"] / (r["n_facts"] if r["batched"] else 1)
            lines.append(f"| {name}{' (batch of %d)' % r['n_facts'] if r['batched'] else ''} | {r['n_facts']} | "
                         f"{med:.2f} | {r['seconds_min']:.2f} | {r['seconds_max']:.2f} | {r['success']:.0%} | "
                         f"{r['efficacy']:.0%} | {r['neighbourhood']:.2f} | {r['steps_mean']:.1f} | "
                         f"{r['peak_rss_mb']:.0f} |")
        lines.append("")
        lines.append("Batched methods: min/max are the whole batch's seconds; s/edit is batch seconds / facts.")
        lines.append("")
        if m.get("speedups"):
            lines += ["### What bought how much (same facts per method, statistics cached)", "",
                      "ROME: the first 3 facts, each alone (s/edit median; not comparable with the table above, "
                      "which has all 10); MEMIT: one batch of all 10 (its seconds; steps summed over "
                      "requests). One run per row, so differences under ~10% are within this machine's drift. "
                      "Not switchable, so not in the table: the unembedding's chunked backward "
                      "(142 -> 49 ms per step on Gemma, 7 rows) and vocabulary projection (see "
                      "`editcore.models.arch`).", "",
                      "| method | variant | seconds | mean steps | success |", "|---|---|---|---|---|"]
            for r in m["speedups"]:
                lines.append(f"| {r.get('method', 'rome')} | {r['variant']} | {r['seconds_median']:.2f} | "
                             f"{r['steps_mean']:.1f} | {r['success']:.0%} |")
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
                      "| method | tokens | s to compute (one layer) | success | efficacy | neighbourhood | "
                      "s/edit median |", "|---|---|---|---|---|---|---|"]
            for r in m["stats_sweep"]:
                sec = r.get("stats_seconds")
                lines.append(f"| {r['method']} | {r['stats_tokens']} | {'-' if sec is None else f'{sec:.0f}'} | "
                             f"{r['success']:.0%} | {r['efficacy']:.0%} | {r['neighbourhood']:.2f} | "
                             f"{r['seconds_median']:.2f} |")
            lines.append("")
        for sec in m.get("sections", []):
            lines += section_markdown(sec)
    return "\n".join(lines) + "\n"


def _cell(v) -> str:
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
    return "" if v is None else str(v).replace("|", "\\|")


def section_markdown(sec: dict) -> list[str]:
    """A :data:`SECTIONS` entry as a titled Markdown table with its note."""
    lines = [f"### {sec['title']}", ""]
    if sec.get("note"):
        lines += [sec["note"], ""]
    cols = sec.get("columns") or []
    if cols and sec.get("rows"):
        lines += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        lines += ["| " + " | ".join(_cell(r.get(c)) for c in cols) + " |" for r in sec["rows"]]
        lines.append("")
    return lines


def sweep_markdown(model: str, method: str, key: str, rows: list[dict], facts: Sequence[Fact], overrides: dict,
                   env: dict, command: str, batch: bool = False) -> str:
    how = "all edited in one batch (s/edit median = the batch's seconds)" if batch else "each edited alone"
    lines = [f"# {method.upper()} sweep of `{key}` on {model}", "",
             f"Generated by `{command}`. {len(facts)} catalog facts the model knows, {how}; success = "
             "new target top-1 on the edit prompt; efficacy = P(new) > P(old); neighbourhood = fraction of "
             "neighbourhood prompts with P(old) > P(new) after the edit.",
             f"Overrides: `{json.dumps(overrides)}`. Environment: `{json.dumps(env)}`.", "",
             f"| {key} | success | efficacy | neighbourhood | s/edit median | mean steps |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r[key]} | {r['success']:.0%} | {r['efficacy']:.0%} | {r['neighbourhood']:.2f} | "
                     f"{r['seconds_median']:.2f} | {r['steps_mean']:.1f} |")
    lines += ["", "Facts: " + ", ".join(f"`{f.id}`" for f in facts), ""]
    return "\n".join(lines)


def run_bench(out_dir, models: Sequence[str] = BENCH_MODELS, facts_n: int = 10, stats_samples: int | None = None,
              corpus: str | None = None, methods: Sequence[str] | None = None, extras: bool = True,
              progress: Progress | None = None) -> dict:
    from pathlib import Path

    from .methods import available
    from .methods import layer_stats as stats

    methods = list(methods or available())
    if facts_n < 1:
        raise InputError("the bench needs at least one fact")
    n = stats.DEFAULT_TOKENS if stats_samples is None else stats_samples
    report = {"environment": environment(), "models": []}
    for i, name in enumerate(models):
        report["models"].append(bench_model(name, facts_n, n, corpus, methods, extras and i == 0, progress))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps(report, indent=1, default=str))
    (out / "bench.md").write_text(to_markdown(report))
    return report
