"""``models``, ``prepare`` and ``generate`` sub-commands."""

from __future__ import annotations

from .progress import Bar


def register(sub) -> None:
    p = sub.add_parser("models", help="list the built-in models and whether they are prepared")
    p.set_defaults(func=_models)

    p = sub.add_parser("prepare", help="convert a built-in model for offline use (once)")
    p.add_argument("model")
    p.set_defaults(func=_prepare)

    p = sub.add_parser("generate", help="greedy continuation of a prompt")
    p.add_argument("model")
    p.add_argument("prompt")
    p.add_argument("--max-new-tokens", type=int, default=12)
    p.add_argument("--trust-remote-code", action="store_true", help="allow a hub model's own code to run")
    p.set_defaults(func=_generate)


def _models(args) -> int:
    from ..models import list_models

    for m in list_models():
        state = "prepared" if m["prepared"] else "not prepared"
        print(f"{m['name']:<16} {state:<13} {m['licence']:<20} {m['description']}")
    return 0


def _prepare(args) -> int:
    from ..models import prepare

    path = prepare(args.model, progress=Bar())
    print(f"{args.model} ready at {path}")
    return 0


def _generate(args) -> int:
    from ..errors import InputError
    from ..models import load_model
    from ..decoding import greedy

    if not args.prompt.strip():
        raise InputError("the prompt is empty")
    if not 1 <= args.max_new_tokens <= 512:
        raise InputError("--max-new-tokens must be between 1 and 512")
    lm = load_model(args.model, progress=Bar(), trust_remote_code=args.trust_remote_code)
    with lm.scope():
        out = greedy(lm, [args.prompt], args.max_new_tokens)[0]
    print(args.prompt + out)
    return 0
