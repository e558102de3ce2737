"""``python -m editcore edit MODEL --method rome --prompt ... --subject ... --target ...``

Computes one edit, shows the greedy continuation before and after it, and restores the model on exit
(the edit lives only inside ``lm.scope()``).
"""

from __future__ import annotations

import json
import logging
import time

from ..errors import InputError
from ..types import Request

log = logging.getLogger(__name__)


def register(sub) -> None:
    p = sub.add_parser("edit", help="apply one edit and show the output before and after",
                       description="Compute an edit with a registered method, print the greedy continuation of "
                                   "the prompt before and after it, the seconds spent and the update norm. "
                                   "The model is restored afterwards.")
    p.add_argument("model", help="built-in model name, local directory, .gguf file or hub id")
    p.add_argument("--method", default="rome", help="editing method (see the registry); default rome")
    p.add_argument("--prompt", required=True,
                   help="the prompt, with the subject written out (its last occurrence is edited) or as '{}'")
    p.add_argument("--subject", required=True, help="the subject whose fact is edited")
    p.add_argument("--target", required=True, help="the new target, e.g. ' London'")
    p.add_argument("--hparam", action="append", default=[], metavar="KEY=VALUE",
                   help="override a hyper-parameter (JSON value, e.g. layer=6 or layers=[4,5]); repeatable")
    p.add_argument("--stats-samples", type=int, default=None, metavar="N",
                   help="tokens for the layer statistics (0 = identity covariance)")
    p.add_argument("--max-new-tokens", type=int, default=12, help="length of the shown continuations")
    p.add_argument("--json", action="store_true", help="print a JSON summary instead of text")
    p.set_defaults(func=run)


def to_template(prompt: str, subject: str) -> str:
    """Turn a prompt into a ``{}`` template by replacing the subject's last occurrence."""
    if not subject or not subject.strip():
        raise InputError("the subject is empty")
    if prompt.count("{}") == 1:
        return prompt
    pos = prompt.rfind(subject)
    if pos < 0:
        raise InputError(f"the subject {subject!r} does not occur in the prompt {prompt!r}")
    return prompt[:pos] + "{}" + prompt[pos + len(subject):]


def parse_overrides(items: list[str]) -> dict:
    out = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise InputError(f"--hparam expects KEY=VALUE (got {item!r})")
        try:
            out[key] = json.loads(raw)
        except ValueError:
            out[key] = raw  # plain strings (a corpus path) need no quotes
    return out


def run(args) -> int:
    from ..methods import get_method
    from ..methods.base import load_hparams
    from ..models import load_model
    from ..decoding import greedy
    from .progress import Bar

    method = get_method(args.method)
    template = to_template(args.prompt, args.subject)
    req = Request(template, args.subject, args.target.strip()).validate()
    overrides = parse_overrides(args.hparam)
    if args.stats_samples is not None:
        overrides["stats_samples"] = args.stats_samples
    if args.max_new_tokens < 1:
        raise InputError("--max-new-tokens must be at least 1")
    lm = load_model(args.model)
    hp = load_hparams(method.name, method.Hparams, lm.name, overrides)
    bar = Bar()
    with lm.scope() as scope:
        pre = greedy(lm, [req.text], args.max_new_tokens)[0]
        t0 = time.perf_counter()
        edit = method.compute(lm, [req], hp, progress=bar)
        seconds = time.perf_counter() - t0
        scope.apply(edit.patch)
        post = greedy(lm, [req.text], args.max_new_tokens)[0]
    norm = sum(v ** 2 for v in edit.patch.norms().values()) ** 0.5
    summary = {"model": lm.name, "method": method.name, "prompt": req.text, "target": req.target_new,
               "before": pre, "after": post, "seconds": round(seconds, 3), "update_norm": norm,
               "stats_seconds": edit.diagnostics.get("stats_seconds"), "steps": edit.diagnostics.get("steps"),
               "warnings": edit.warnings}
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    print(f"model   {lm.name}   method {method.name}")
    print(f"prompt  {req.text}")
    print(f"before  {req.text}{pre}")
    print(f"after   {req.text}{post}")
    stats_s = edit.diagnostics.get("stats_seconds")
    extra = f" (of which layer statistics {stats_s:.1f}s)" if isinstance(stats_s, float) and stats_s > 0.05 else ""
    print(f"seconds {seconds:.2f}{extra}")
    print(f"update  |dW| = {norm:.4g}")
    for w in edit.warnings:
        print(f"warning {w}")
    print("the model was restored")
    return 0
