"""Speed and quality bench of the registered editing methods on the bundled models, and hyper-parameter sweeps.

Facts: catalog facts the model knows (its old answer is the teacher-forced top-1), from one part of the
catalog split in ``data/catalog_check/split.json``: sweeps choose hyper-parameters on the ``tune`` part, the
bench reports on the disjoint ``report`` part, so its figures are not the tuned ones.

Quality per method (each a rate over facts, with a 95% bootstrap interval over facts):

* **ES / PS / NS**: CounterFact's efficacy, paraphrase and neighbourhood scores in ROME's convention (mean
  token NLL compared; :mod:`editcore.metrics.counterfact`), each a fact's mean over its prompts averaged
  over facts, and **Score** = their harmonic mean (ROME's ``summarize.py``); ES and NS also in the product
  convention (``_product``);
* **token top-1**: every token of the new target is the top-1 choice after the edit prompt
  (teacher-forced): a token-level measure, stricter than ES;
* **neighbours kept**: of the neighbourhood prompts whose old answer was the top-1 before the edit, the share
  where it still is.

Timing is wall-clock seconds of ``method.compute`` with statistics already cached (their one-off cost is
reported separately). Peak memory is the process's peak resident set size (``ru_maxrss``; it includes the
loaded model) and, on CUDA, ``torch.cuda.max_memory_allocated``. The optional tables (speed-ups, statistics
counts, evaluation seconds) are in :mod:`editcore.perfbench_extras`.
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
from pathlib import Path

import torch

from .errors import EditScopeError, InputError
from .tracing.bench import bench_section as trace_bench_section
from .types import Request

log = logging.getLogger(__name__)

Progress = Callable[[str, float], None]
BENCH_MODELS = ("gemma-3-270m", "smollm2-135m")
SPLIT_FILE = Path(__file__).resolve().parents[1] / "data" / "catalog_check" / "split.json"
PARTS = ("tune", "report")
DEFAULT_FACTS = 30  # per model, from the report part; --full takes every known report fact
RATES = ("es", "ps", "ns", "es_product", "ns_product", "token_top1", "neighbours_kept")


def split_part(part: str | None) -> set[str] | None:
    """Catalog ids of one part of the split (None: the whole catalog)."""
    if part is None:
        return None
    if part not in PARTS:
        raise InputError(f"unknown catalog part {part!r}; use one of {', '.join(PARTS)}")
    return set(json.loads(SPLIT_FILE.read_text())[part])


@dataclass
class Fact:
    id: str
    request: Request
    neighbours: tuple[tuple[str, str], ...]  # (prompt, old answer)
    paraphrases: tuple[str, ...] = ()
    neighbours_known: tuple[bool, ...] = ()  # the old answer was top-1 there before the edit


def known_facts(lm, n: int, exclude: Sequence[str] = (), part: str | None = "report") -> list[Fact]:
    """``n`` (0: all) facts of the catalog ``part`` whose old answer the model gives (teacher-forced top-1),
    spread round-robin over relations in catalog order, so the pick is deterministic."""
    from .catalog import load_catalog
    from .text import score_targets

    allowed = split_part(part)
    by_rel: dict[str, list] = {}
    for case in load_catalog():
        if case.id not in exclude and case.neighbourhood and (allowed is None or case.id in allowed):
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
                picked.append(Fact(case.id, case.request(0), tuple((p.prompt, p.answer) for p in case.neighbourhood),
                                   tuple(case.paraphrases)))
                if len(picked) == n:
                    break
        if len(picked) == n:
            break
    if n and len(picked) < n:
        log.warning("only %d known facts found for %s (wanted %d)", len(picked), lm.name, n)
    neigh = [(p, a) for f in picked for p, a in f.neighbours]
    if neigh:
        with lm.scope():
            known = [all(s.token_correct) for s in score_targets(lm, [p for p, _ in neigh], [a for _, a in neigh])]
        k = 0
        for f in picked:
            f.neighbours_known = tuple(known[k:k + len(f.neighbours)])
            k += len(f.neighbours)
    return picked


def _share(flags: Sequence[bool]) -> float | None:
    return sum(flags) / len(flags) if flags else None


def judge(lm, facts: Sequence[Fact]) -> list[dict]:
    """Quality of the model *as it is now* (call inside a scope with the edit applied); see the module doc."""
    from .text import score_targets

    out = []
    for f in facts:
        r = f.request
        subj = [r.text, *f.paraphrases]
        prompts = [p for p in subj for _ in range(2)] + [p for p, _ in f.neighbours for _ in range(2)]
        targets = [t for _ in subj for t in (r.target_new, r.target_true)] + [
            t for _, a in f.neighbours for t in (a, r.target_new)]
        sc = score_targets(lm, prompts, targets)
        pairs = [(sc[i], sc[i + 1]) for i in range(0, len(sc), 2)]
        s_pairs, n_pairs = pairs[:len(subj)], pairs[len(subj):]
        rome = [a.mean_nll < b.mean_nll for a, b in pairs]  # the first target wins, ROME's convention
        prod = [a.logprob > b.logprob for a, b in pairs]
        n_rome, n_prod = rome[len(subj):], prod[len(subj):]
        kept = [all(a.token_correct) for (a, _), was in zip(n_pairs, f.neighbours_known or [True] * len(n_pairs))
                if was]
        out.append({"fact": f.id, "token_top1": float(all(s_pairs[0][0].token_correct)),
                    "es": float(rome[0]), "ps": _share(rome[1:len(subj)]), "ns": _share(n_rome),
                    "es_product": float(prod[0]), "ns_product": _share(n_prod), "neighbours_kept": _share(kept),
                    "p_new": float(torch.tensor(s_pairs[0][0].logprob).exp())})
    return out


def summarise(judged: Sequence[dict]) -> dict:
    """Rates with 95% bootstrap intervals over facts, and CounterFact's Score from the dataset-level rates."""
    from .metrics.numeric import bootstrap_ci, harmonic_mean

    rates = {k: bootstrap_ci([j[k] for j in judged if j.get(k) is not None]).to_dict() for k in RATES}
    score = harmonic_mean([rates[k]["mean"] for k in ("es", "ps", "ns") if rates[k]["n"]])
    return {"rates": rates, "score": score}


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
    from .methods.base import preset_of

    batch = method.batched if batch is None else batch
    groups = [list(facts)] if batch else [[f] for f in facts]
    times, judged, diags = [], [], []
    adaptation = ""
    if lm.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(lm.device)
    for group in groups:
        with lm.scope() as s:
            t0 = time.perf_counter()
            edit = method.compute(lm, [f.request for f in group], hp, speed=speed)
            times.append(time.perf_counter() - t0)
            s.apply(edit.patch)
            judged.extend(judge(lm, group))
        adaptation = adaptation or edit.diagnostics.get("adaptation", method.info.adaptation) or ""
        diags.append({k: v for k, v in edit.diagnostics.items() if isinstance(v, (int, float, bool))})
    n = len(judged)
    res = {
        "method": method.name, "title": method.info.title, "preset": preset_of(hp), "adaptation": adaptation,
        "n_facts": n, "batched": batch,
        "seconds_median": statistics.median(times), "seconds_min": min(times), "seconds_max": max(times),
        "seconds_per_edit": sum(times) / n if n else float("nan"),
        **summarise(judged),
        "steps_mean": statistics.mean(d.get("steps", 0) for d in diags),
        "peak_rss_mb": peak_rss_mb(), "per_fact": judged,
    }
    if lm.device.type == "cuda":
        res["cuda_peak_mb"] = torch.cuda.max_memory_allocated(lm.device) / 2**20
    return res


def sweep(lm, method_name: str, key: str, values: Sequence, facts: Sequence[Fact], overrides: dict,
          progress: Progress | None = None, batch: bool = False) -> list[dict]:
    """One row per value of the hyper-parameter ``key`` (e.g. ROME's ``layer``, MEMIT's ``layers`` ranges or
    ``mom2_update_weight``): the bench's rates (:data:`RATES`), Score and seconds; each fact edited alone, or
    all in one batch with ``batch`` (MEMIT)."""
    from .methods import get_method
    from .methods.base import load_hparams

    method = get_method(method_name)
    rows = []
    for i, value in enumerate(values):
        hp = load_hparams(method_name, method.Hparams, lm.name, {**overrides, key: value})
        r = run_method(lm, method, hp, facts, batch=batch)
        rows.append({key: value, **{k: r["rates"][k]["mean"] for k in RATES}, "score": r["score"],
                     "n_facts": r["n_facts"], "seconds_median": r["seconds_median"], "steps_mean": r["steps_mean"]})
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


def _run_unseen(lm, method, hp, facts: Sequence[Fact]) -> dict:
    """:func:`run_method` on the facts a method's trained component never saw (``held_out_facts(lm)``: the
    catalog ids it was not trained on, or None for a method without one), so training data cannot pass as
    generalisation; the row says how many it kept."""
    held = getattr(method, "held_out_facts", lambda _lm: None)(lm)
    unseen = [f for f in facts if held is None or f.id in held]
    if not unseen:
        raise InputError(f"every bench fact was in {method.name}'s training data; retrain it")
    res = run_method(lm, method, hp, unseen)
    if len(unseen) < len(facts):
        note = f"judged on the {len(unseen)} of {len(facts)} bench facts its training never saw"
        res["adaptation"] = f"{res['adaptation']}; {note}" if res["adaptation"] else note
    return res


def bench_model(name: str, facts_n: int, stats_samples: int, corpus: str | None, methods: Sequence[str],
                extras: bool, progress: Progress | None = None, on_row: Callable[[dict], None] | None = None) -> dict:
    from .methods import get_method, layer_stats as stats
    from .methods.base import load_hparams
    from .models import load_model

    reset_peak_rss()
    t0 = time.perf_counter()
    lm = load_model(name)
    out: dict = {"model": name, "load_seconds": time.perf_counter() - t0, "environment": environment(lm)}
    facts = known_facts(lm, facts_n, part="report")
    out["facts"] = [f.id for f in facts]
    out["facts_part"] = "report"
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
            t = time.perf_counter()
            if hasattr(method, "prepare"):  # its one-off cached work (statistics, their decompositions), untimed
                method.prepare(lm, hp, progress)
            prepared = time.perf_counter() - t
            out["methods"][mname] = {**_run_unseen(lm, method, hp, facts), "prepare_seconds": prepared}
        except EditScopeError as exc:
            out["methods"][mname] = {"error": str(exc)}
        # When and under what load each row was measured: merged reports mix runs (see merge_reports).
        out["methods"][mname]["measured"] = {"at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                             "load_average_1min": environment()["load_average_1min"]}
        log.info("%s %s: %s", name, mname, {k: v for k, v in out["methods"][mname].items() if k != "per_fact"})
        if on_row:  # the report so far, so that a bench cut short still leaves its finished rows
            on_row(out)

    if extras:  # off by default: the speed-up and statistics tables add ~10 minutes on this machine
        from .perfbench_extras import extras as extra_tables

        out.update(extra_tables(lm, facts, common, methods, corpus, stats_samples))
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
def _whatif(lm, facts, common):
    from .service.impact import bench_section

    return bench_section(lm, facts, common)


SECTIONS: list[Callable] = [trace_bench_section, _whatif, _section("editcore.methods.grace"),
                            _section("editcore.methods.ike"), _section("editcore.methods.mend.report"),
                            _section("editcore.methods.ke.method"), _section("editcore.methods.malmen.bench"),
                            _section("editcore.methods.serac.bench")]


def _resolve_layers(lm, layers) -> list[int]:
    from .methods.memit import auto_layers
    from .methods.rome import auto_layer

    out = set()
    for layer in layers:
        out.update([auto_layer(lm)] if layer == -1 else [layer])
    return sorted(out) or auto_layers(lm)


# ---- report ---------------------------------------------------------------------------------------------
def _rate(ci: dict, pct: bool = True) -> str:
    """A rate with its 95% interval: ``80% [65, 92]`` (``-`` without items)."""
    if not ci or not ci.get("n"):
        return "-"
    if pct:
        return f"{ci['mean']:.0%} [{ci['lo'] * 100:.0f}, {ci['hi'] * 100:.0f}]"
    return f"{ci['mean']:.2f} [{ci['lo']:.2f}, {ci['hi']:.2f}]"


def to_markdown(report: dict) -> str:
    lines = ["# EditScope bench", "",
             "Generated by `make bench` (`python -m editcore bench --out reports`); numbers are measured, "
             "not copied. Facts: catalog facts the model knows from the *report* part of "
             "`data/catalog_check/split.json` (hyper-parameters were swept on the disjoint *tune* part). "
             "ES / PS / NS: CounterFact's efficacy, paraphrase and neighbourhood scores in ROME's convention "
             "(mean token NLL), a fact's mean over its prompts averaged over facts; Score: their harmonic mean "
             "(ROME's summarize.py); ES_prod / NS_prod: the same with the product of token probabilities. "
             "Token top-1: every token of the new target is the teacher-forced top-1 after the edit prompt (a "
             "token-level measure). Neighbours kept: neighbourhood prompts whose old answer was top-1 before "
             "the edit and still is. Brackets: 95% bootstrap intervals over facts. Seconds: `method.compute` "
             "only, statistics cached. Peak RSS: the process's high-water mark during that model's runs (reset "
             "before the model is loaded; includes the model). † EditScope adaptation (named below the table).",
             ""]
    env = report.get("environment", {})
    lines += [f"Environment: {json.dumps(env)}", ""]
    for m in report["models"]:
        lines += [f"## {m['model']}", "", f"Facts ({len(m['facts'])}, known by the model, "
                  f"{m.get('facts_part', 'catalog')} part): " + ", ".join(f"`{f}`" for f in m["facts"]), ""]
        st = m["stats"]
        lines += [f"Layer statistics: layers {st['layers']}, {st['tokens']} tokens of `{st['corpus']}`; "
                  f"{st['seconds_total']:.1f}s in this run (0 if cached); seconds per layer when computed: "
                  f"{st['seconds_per_layer_when_computed']}", ""]
        lines += ["| method | preset | facts | s/edit median | ES | PS | NS | Score | ES_prod | NS_prod | "
                  "token top-1 | neighbours kept | mean steps | peak RSS MB |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        adapted = []
        for name, r in m["methods"].items():
            if "error" in r:
                lines.append(f"| {name} | error: {r['error']} | | | | | | | | | | | | |")
                continue
            med = r["seconds_median"] / (r["n_facts"] if r["batched"] else 1)
            q = r["rates"]
            mark = " †" if r.get("adaptation") else ""
            if mark:
                adapted.append(f"{name}: {r['adaptation']}")
            lines.append(f"| {name}{mark}{' (batch of %d)' % r['n_facts'] if r['batched'] else ''} | "
                         f"{r.get('preset') or '-'} | {r['n_facts']} | {med:.2f} | {_rate(q['es'])} | {_rate(q['ps'])} | "
                         f"{_rate(q['ns'], False)} | {r['score']:.2f} | {_rate(q['es_product'])} | "
                         f"{_rate(q['ns_product'], False)} | {_rate(q['token_top1'])} | "
                         f"{_rate(q['neighbours_kept'], False)} | {r['steps_mean']:.1f} | {r['peak_rss_mb']:.0f} |")
        lines.append("")
        lines.append("Batched methods: s/edit is batch seconds / facts.")
        if m.get("merged"):
            lines.append("Rows measured in a later run and merged in (`--merge`): " + "; ".join(
                f"{k} at {v['at']}, load average {v['load_average_1min']:.1f}" for k, v in m["merged"].items()))
        lines += [f"† {a}" for a in adapted]
        lines.append("")
        from .perfbench_extras import extras_markdown

        lines += extras_markdown(m)
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
                   env: dict, command: str, batch: bool = False, part: str | None = "tune") -> str:
    how = "all edited in one batch (s/edit median = the batch's seconds)" if batch else "each edited alone"
    lines = [f"# {method.upper()} sweep of `{key}` on {model}", "",
             f"Generated by `{command}`. {len(facts)} catalog facts the model knows ({part or 'whole catalog'} part "
             f"of `data/catalog_check/split.json`), {how}. ES / PS / NS: CounterFact's scores in ROME's "
             "convention; Score: their harmonic mean; NS_prod: NS with products of token probabilities; token "
             "top-1: every new-target token top-1 after the edit prompt; neighbours kept: same-relation neighbour "
             "prompts whose old answer stays top-1.",
             f"Overrides: `{json.dumps(overrides)}`. Environment: `{json.dumps(env)}`.", "",
             f"| {key} | ES | PS | NS | Score | NS_prod | token top-1 | neighbours kept | s/edit median | mean steps |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        cells = [f"{r[k]:.0%}" if r.get(k) is not None else "-" for k in ("es", "ps")]
        cells += [f"{r[k]:.2f}" if r.get(k) is not None else "-" for k in ("ns",)]
        lines.append(f"| {r[key]} | {' | '.join(cells)} | {r['score']:.2f} | "
                     f"{r['ns_product'] if r.get('ns_product') is None else format(r['ns_product'], '.2f')} | "
                     f"{r['token_top1']:.0%} | "
                     f"{'-' if r.get('neighbours_kept') is None else format(r['neighbours_kept'], '.2f')} | "
                     f"{r['seconds_median']:.2f} | {r['steps_mean']:.1f} |")
    lines += ["", "Facts: " + ", ".join(f"`{f.id}`" for f in facts), ""]
    return "\n".join(lines)


def run_bench(out_dir, models: Sequence[str] = BENCH_MODELS, facts_n: int = DEFAULT_FACTS,
              stats_samples: int | None = None, corpus: str | None = None, methods: Sequence[str] | None = None,
              extras: bool = False, progress: Progress | None = None, merge: bool = False) -> dict:
    """The bench of every model; ``facts_n`` 0 takes every known fact of the report part; ``extras`` adds the
    speed-up and statistics tables (first model only). ``merge``: put the rows into the report already in
    ``out_dir`` (a method or model benched later need not re-run the others; sections are measured again)."""
    from pathlib import Path

    from .methods import available
    from .methods import layer_stats as stats

    methods = list(methods or available())
    if facts_n < 0:
        raise InputError("the number of facts must not be negative")
    n = stats.DEFAULT_TOKENS if stats_samples is None else stats_samples
    report = {"environment": environment(), "models": []}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # --merge reads the committed report once, before this run writes anything over it.
    base = None
    if merge:
        from .perfbench_extras import merge_reports

        base = merge_reports(out / "bench.json", {"models": []})  # refuses a missing or malformed file now

    def write(models_done: list[dict]) -> dict:
        rep = {**report, "models": models_done}
        if merge:
            rep = merge_reports(out / "bench.json", rep, base=json.loads(json.dumps(base)))
        (out / "bench.json").write_text(json.dumps(rep, indent=1, default=str))
        (out / "bench.md").write_text(to_markdown(rep))
        return rep

    for i, name in enumerate(models):
        report["models"].append(bench_model(name, facts_n, n, corpus, methods, extras and i == 0 and not merge,
                                            progress, on_row=lambda m: write(report["models"] + [m])))
    return write(report["models"])
