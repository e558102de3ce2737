"""``python -m editcore train METHOD MODEL``: train the per-model component a method needs (the hypernetworks
of MEND, KE and MALMEN, SERAC's scope classifier), with a time estimate first, a progress bar, and a checkpoint to
resume from; see :class:`editcore.methods.base.Trainable`."""

from __future__ import annotations

import json

from .edit import parse_overrides
from .progress import Bar


def register(sub) -> None:
    p = sub.add_parser("train", help="train the component a method needs (e.g. MEND's hypernetwork)",
                       description="Trains and caches the per-model artefact of a method that needs one; "
                                   "resumes from its last checkpoint unless --fresh.")
    p.add_argument("method", help="a method that needs training: ke, malmen, mend or serac")
    p.add_argument("model", nargs="?", default="gemma-3-270m", help="model (default gemma-3-270m)")
    p.add_argument("--hparam", action="append", default=[], metavar="KEY=VALUE",
                   help="override a training setting (JSON value); repeatable")
    p.add_argument("--fresh", action="store_true", help="start again instead of resuming from a checkpoint")
    p.add_argument("--estimate", action="store_true", help="print the time estimate and stop")
    p.add_argument("--json", action="store_true", help="print the training report as JSON")
    p.set_defaults(func=run)


def trainable_methods() -> list[str]:
    from ..methods import available, get_method
    from ..methods.base import needs_training

    return [name for name in available() if needs_training(get_method(name))]


def run(args) -> int:
    from ..errors import InputError
    from ..methods import get_method
    from ..methods.base import load_hparams, needs_training
    from ..models import load_model

    method = get_method(args.method)
    if not needs_training(method):
        names = ", ".join(trainable_methods()) or "none"
        raise InputError(f"{method.name} needs no training (methods that do: {names})")
    lm = load_model(args.model, progress=Bar())
    thp = load_hparams(method.name, method.TrainHparams, lm.name, parse_overrides(args.hparam), prefix="train_")
    seconds = method.estimate_training_seconds(lm, thp)
    print(f"training {method.name} for {lm.name}: about {seconds / 60:.0f} min on this machine"
          + ("" if args.fresh else " (resuming from a checkpoint if there is one)"))
    if args.estimate:
        return 0
    report = method.train(lm, thp, Bar(), resume=not args.fresh)
    if args.json:
        print(json.dumps(report, indent=1, default=str))
    else:
        for key, value in report.items():
            if not isinstance(value, (list, dict)):
                print(f"{key}: {value}")
    return 0
