"""``warmup`` sub-command: compute once what the dashboard's first edit would otherwise wait for.

``make run`` calls it for the default model and method: the method's layer statistics (from the bundled
corpus unless ``stats_corpus`` says otherwise), one trial edit (which also fills the method's other
caches, e.g. ROME's context prefixes), and the impact scan's unedited side for every catalog prompt. Each
long step has a progress bar; a second call finds everything cached and returns in seconds.
"""

from __future__ import annotations

import time

from .progress import Bar

TRIAL = ("P276:louvre", "London")  # the trial edit (the README's tour)


def register(sub) -> None:
    p = sub.add_parser("warmup", help="compute the default method's statistics and the impact scan's cache once")
    p.add_argument("model", nargs="?", default=None, help="model (default: the dashboard's default model)")
    p.add_argument("--method", default="rome", help="editing method whose statistics to compute (default: rome)")
    p.add_argument("--no-impact", action="store_true", help="skip the impact scan's unedited side")
    p.set_defaults(func=run)


def _stat_layers(lm, method, hp) -> list[int]:
    fields = type(hp).__dataclass_fields__
    if "layers" in fields:
        return list(hp.layers)
    if "layer" in fields:
        from ..methods.rome import auto_layer

        return [auto_layer(lm) if hp.layer == -1 else hp.layer]
    return []


def run(args) -> int:
    from ..cases.resolve import resolve_case
    from ..methods import layer_stats
    from ..models import load_model
    from ..service import default_model, prepare_impact
    from ..service.choices import method_and_hparams

    name = args.model or default_model()
    t0 = time.perf_counter()
    lm = load_model(name, progress=Bar())
    m, hp, _ = method_and_hparams(args.method, lm.name, None)
    fields = type(hp).__dataclass_fields__
    if getattr(hp, "mom2_adjustment", True) and {"stats_samples", "stats_corpus"} <= set(fields) and hp.stats_samples:
        layers = _stat_layers(lm, m, hp)
        t = time.perf_counter()
        layer_stats.cholesky_factors(lm, layers, hp.stats_samples, hp.stats_corpus, Bar())
        corpus = layer_stats.corpus_label(layer_stats.resolve_corpus(hp.stats_corpus))
        print(f"{m.name} layer statistics of layer(s) {', '.join(map(str, layers))}: {hp.stats_samples} tokens of "
              f"{corpus}, ready in {time.perf_counter() - t:.1f} s")
    t = time.perf_counter()
    case = resolve_case({"source": "catalog", "id": TRIAL[0], "target_new": TRIAL[1]})
    bar = Bar()
    with lm.scope():
        m.compute(lm, [case.request().validate()], hp, bar)
    bar.close()
    print(f"trial {m.name} edit ({TRIAL[0]} -> {TRIAL[1]}): {time.perf_counter() - t:.1f} s")
    if not args.no_impact:
        t = time.perf_counter()
        got = prepare_impact(lm, Bar())
        state = "already cached" if got["was_cached"] else "computed"
        print(f"impact scan, unedited side of {got['prompts']} catalog prompts: {state} in "
              f"{time.perf_counter() - t:.1f} s")
    print(f"{lm.name} is ready for the dashboard ({time.perf_counter() - t0:.0f} s)")
    return 0
