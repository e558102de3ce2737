"""``python -m editcore trace MODEL``: where is the fact stored?

    trace gemma-3-270m --fact louvre [--target London] [--method rome|none]     one fact, before and after
    trace gemma-3-270m --prompt "The Louvre is in" --subject "The Louvre" --answer Paris [--target London]
    trace gemma-3-270m --summary --facts 10 --out reports                      averaged trace + layer advice
    trace gemma-3-270m --localisation --facts 10 [--layers 0,2,4] --out reports  Hase et al. 2023

One fact prints the three causal-tracing tables (residual stream, MLP, attention) and the logit lens, on the
unedited model and, with a method, on the edited one (restored afterwards). ``--summary`` and
``--localisation`` write ``trace_<model>.{md,json}`` and ``trace_localisation_<model>.{md,json}``.
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

from ..errors import InputError


def register(sub) -> None:
    p = sub.add_parser("trace", help="causal tracing and the logit lens of a fact, before and after an edit",
                       description="Causal tracing (Meng et al. 2022), the logit lens, traces averaged over known "
                                   "facts, and the localisation-vs-editing experiment (Hase et al. 2023).")
    p.add_argument("model")
    p.add_argument("--fact", help="catalog fact: its id or subject (e.g. 'louvre')")
    p.add_argument("--prompt", help="free-form prompt, with '{}' or the subject written out")
    p.add_argument("--subject", help="free-form subject")
    p.add_argument("--answer", help="free-form current answer (default: the model's own greedy answer)")
    p.add_argument("--target", help="new target of the edit (default: the fact's first new target)")
    p.add_argument("--method", default="rome", help="editing method for the 'after' trace, or 'none' (default rome)")
    p.add_argument("--hparam", action="append", default=[], metavar="KEY=VALUE", help="edit hyper-parameter override")
    p.add_argument("--samples", type=int, default=None, help="noise samples per restoration (default 3; paper: 10)")
    p.add_argument("--noise", type=float, default=None, help="noise scale, times the embedding std (default 3)")
    p.add_argument("--window", type=int, default=None, help="MLP/attention window in layers (0 = auto)")
    p.add_argument("--seed", type=int, default=None, help="noise seed (default 1)")
    p.add_argument("--summary", action="store_true", help="average the traces of --facts known facts")
    p.add_argument("--localisation", action="store_true",
                   help="trace --facts known facts and edit each with ROME at every layer of --layers")
    p.add_argument("--facts", type=int, default=10, help="known facts for --summary / --localisation (default 10)")
    p.add_argument("--layers", default=None, help="--localisation: comma-separated layers (default: every layer)")
    p.add_argument("--corpus", default=None,
                   help="--localisation: ROME's statistics corpus (a text file; default: ROME's 'auto')")
    p.add_argument("--out", default=None, help="folder for --summary / --localisation reports (default: print)")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    p.set_defaults(func=run)


def _settings(args) -> dict:
    return {k: v for k, v in (("samples", args.samples), ("noise", args.noise), ("window", args.window),
                              ("seed", args.seed)) if v is not None}


def _spec(args) -> dict:
    if args.fact:
        from ..catalog import filter_cases, load_catalog

        q = args.fact.strip().casefold()
        cases = load_catalog()
        found = [c for c in cases if q in (c.id.casefold(), c.id.casefold().split(":")[-1], c.subject.casefold())]
        found = found or filter_cases(cases, text=args.fact.strip())
        if not found:
            raise InputError(f"no catalog fact matches {args.fact!r}")
        case = found[0]
        return {"source": "catalog", "id": case.id, "target_new": args.target or case.target_new}
    if args.prompt and args.subject and args.target:
        return {"source": "free", "prompt": args.prompt, "subject": args.subject,
                "target_true": args.answer or "", "target_new": args.target}
    raise InputError("give --fact, or --prompt, --subject and --target (the new target; --answer the old one), "
                     "or --summary / --localisation")


def _write(out: str | None, stem: str, data: dict, markdown: str, as_json: bool) -> None:
    if out:
        folder = Path(out)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{stem}.json").write_text(json.dumps(data, indent=1, allow_nan=False))
        (folder / f"{stem}.md").write_text(markdown)
        print(f"wrote {folder / stem}.md and .json")
    else:
        print(json.dumps(data, indent=1) if as_json else markdown)


def run(args) -> int:
    from .. import service
    from ..models import load_model
    from ..tracing.report import lens_table, localisation_markdown, summary_markdown, trace_table
    from .edit import parse_overrides
    from .progress import Bar

    command = "python -m editcore " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    settings = _settings(args)
    if args.summary or args.localisation:
        lm = load_model(args.model, progress=Bar())
        stem = args.model.replace("/", "_")
        if args.localisation:
            from ..tracing import localisation
            from ..tracing.settings import TraceSettings
            from ..tracing.summary import average, layer_advice, strongest

            layers = None
            if args.layers:
                try:
                    layers = [int(x) for x in args.layers.split(",") if x.strip()]
                except ValueError:
                    raise InputError(f"--layers expects comma-separated integers, got {args.layers!r}") from None
            overrides = parse_overrides(args.hparam)
            if args.corpus:
                overrides.setdefault("stats_corpus", args.corpus)
            res = localisation.run(lm, args.facts, layers, TraceSettings.from_dict(settings), overrides, Bar())
            summ = average(res["traces"])
            advice = layer_advice(summ, lm.name, res)
            res.update(command=command, advice=advice)
            averaged = {"model": lm.name, "facts": res["facts"], "settings": res["settings"], "summary": summ,
                        "advice": advice, "command": command,
                        "per_fact": [{"fact": f, "prompt": t["prompt"], "high": t["high"], "low": t["low"],
                                      "strongest_mlp": list(strongest(t)), "subject_last": t["subject_last"]}
                                     for f, t in zip(res["facts"], res["traces"])]}
            _write(args.out, f"trace_{stem}", averaged, summary_markdown(averaged), args.json)
            _write(args.out, f"trace_localisation_{stem}", res, localisation_markdown(res, advice), args.json)
            return 0
        res = service.trace_summary(lm, args.facts, settings, Bar())
        res["command"] = command
        _write(args.out, f"trace_{stem}", res, summary_markdown(res), args.json)
        return 0
    spec = _spec(args)
    lm = load_model(args.model, progress=Bar())
    method = None if args.method.lower() in ("none", "") else args.method
    res = service.trace_fact(lm, spec, method, parse_overrides(args.hparam), settings, Bar())
    if args.json:
        print(json.dumps(res, indent=1, allow_nan=False))
        return 0
    before, after = res["before"], res["after"]
    print(f"# {res['prompt']} -> {res['request']['target_true']} (model {lm.name})\n")
    for kind in ("hidden", "mlp", "attn"):
        print("\n".join(trace_table(before["trace"], kind)))
    if after:
        print(f"# After the {res['method']['name']} edit -> {res['request']['target_new']}\n")
        for kind in ("hidden", "mlp", "attn"):
            print("\n".join(trace_table(after["trace"], kind)))
    for position in ("last", "subject_last"):
        print("\n".join(lens_table(before["lens"], after["lens"] if after else None, position)))
    print(f"seconds {res['seconds']:.1f}; the model was restored")
    return 0

