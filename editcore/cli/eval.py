"""``eval`` sub-command: compute one edit and print every side-effect metric of it.

    python -m editcore eval gemma-3-270m --method rome --fact louvre --target London [--json]
    python -m editcore eval gemma-3-270m --method rome --fact louvre --preset reference   # as ROME's code runs it
"""

from __future__ import annotations

import dataclasses
import json
import logging

from .edit import parse_overrides
from .progress import Bar

log = logging.getLogger(__name__)


def register(sub) -> None:
    p = sub.add_parser("eval", help="edit one fact and report its side effects (all metric families)")
    p.add_argument("model")
    p.add_argument("--method", required=True, help="editing method, e.g. rome")
    p.add_argument("--fact", help="catalog fact: its id or subject (case-insensitive, e.g. 'louvre')")
    p.add_argument("--prompt", help="free-form prompt with '{}' or the subject in it")
    p.add_argument("--subject", help="free-form subject")
    p.add_argument("--target", help="new target (default: the fact's first new target)")
    p.add_argument("--old", help="free-form old answer (default: the model's own greedy answer)")
    p.add_argument("--hparam", action="append", default=[], metavar="KEY=VALUE",
                   help="override a hyper-parameter (JSON value), repeatable")
    p.add_argument("--preset", choices=("fast", "reference"), default=None,
                   help="hyper-parameter preset: 'reference' runs the method as its paper's code does (and ROME's "
                        "sampled fluency); default: the method's file ('fast')")
    p.add_argument("--convention", default="rome_mean_nll", choices=("rome_mean_nll", "product"),
                   help="CounterFact's P(target): ROME's exp(-mean token NLL) (default, as its code) or the "
                        "product of token probabilities; the report shows the other one too")
    p.add_argument("--fluency", choices=("quick", "reference"), default=None,
                   help="generation fluency: 'reference' samples ROME's 100 tokens over every generation prompt; "
                        "default: 'reference' under the reference preset, else 'quick'")
    p.add_argument("--families", default="", help="comma-separated subset of metric families")
    p.add_argument("--related", default="", help="comma-separated words related to the new target")
    p.add_argument("--nkl-tokens", type=int, default=0, help="also average NKL over this many generated tokens")
    p.add_argument("--heldout", help="text file for perplexity (default: data/probes/heldout.txt)")
    p.add_argument("--probe-size", type=int, default=0,
                   help="items per general-ability probe (default: editcore.metrics.general.DEFAULT_SIZES)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=_eval)


def _find_fact(query: str):
    from ..catalog import load_catalog
    from ..errors import InputError

    q = query.strip().casefold()
    cases = load_catalog()
    exact = [c for c in cases if c.id.casefold() == q or c.subject.casefold() == q]
    if not exact:
        exact = [c for c in cases if c.id.casefold().split(":")[-1] == q
                 or c.subject.casefold().removeprefix("the ") == q]
    if not exact:
        exact = [c for c in cases if q in c.id.casefold() or q in c.subject.casefold()]
    if not exact:
        raise InputError(f"no catalog fact matches {query!r}")
    if len({c.id for c in exact}) > 1:
        log.info("several facts match %r; using %s", query, exact[0].id)
    return exact[0]


def resolve(args):
    """The case and the new target the command line asks for."""
    from ..cases import answers_equal, free_form_case
    from ..cases.resolve import with_new_target
    from ..errors import InputError

    if args.fact:
        # The dashboard's rule for a typed target: a case target moves first, another word becomes a free
        # target that borrows the catalog's related words for it (Big Ben for London).
        case = with_new_target(_find_fact(args.fact), args.target)
    elif args.prompt and args.subject and args.target:
        case = free_form_case(args.prompt, args.subject, args.target, args.old)
    else:
        raise InputError("give --fact, or --prompt, --subject and --target")
    if answers_equal(case.target_new, case.target_true):
        raise InputError(f"the new target {case.target_new!r} equals the current answer")
    return case, case.target_new


def _eval(args) -> int:
    from ..errors import InputError
    from ..methods import get_method
    from ..methods.base import load_hparams
    from ..metrics import FAMILIES, evaluate, render
    from ..models import load_model

    if not 0 <= args.probe_size <= 500:
        raise InputError("--probe-size must be between 0 and 500")
    sizes = ({t: args.probe_size for t in ("sentiment", "piqa", "qa", "arithmetic", "summarisation")}
             if args.probe_size else None)
    if args.nkl_tokens < 0 or args.nkl_tokens > 64:
        raise InputError("--nkl-tokens must be between 0 and 64")
    families = tuple(f.strip() for f in args.families.split(",") if f.strip()) or FAMILIES
    method = get_method(args.method)
    case, target = resolve(args)
    lm = load_model(args.model, progress=Bar())
    overrides = parse_overrides(args.hparam)
    if args.preset:
        overrides.setdefault("preset", args.preset)
    hp = load_hparams(method.name, method.Hparams, lm.name, overrides)
    request = case.request(0)
    if not request.target_true:
        request = dataclasses.replace(request, target_true=None)
    request.validate()
    with lm.scope():
        edit = method.compute(lm, [request], hp, Bar())
    report = evaluate(lm, case, edit, families=families, target_new=target, convention=args.convention,
                      related_new=[w.strip() for w in args.related.split(",") if w.strip()],
                      nkl_generated_tokens=args.nkl_tokens, heldout=args.heldout, general_sizes=sizes,
                      fluency=args.fluency)
    data = report.to_dict()
    data["edit"] = {"method": method.name, "version": str(getattr(method, "version", "")),
                    "preset": data["method"].get("preset"), "adaptation": data["method"].get("adaptation", ""),
                    "seconds": float(edit.seconds), "update_norms": edit.patch.norms(),
                    "warnings": edit.warnings}
    if args.json:
        print(json.dumps(data, indent=1, allow_nan=False))
    else:
        print(f"{method.name}: edit computed in {edit.seconds:.1f} s")
        for w in edit.warnings:
            print(f"warning: {w}")
        print(render(data))
    return 0
