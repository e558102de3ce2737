"""``make bench`` rows for causal tracing and the logit lens (a :data:`editcore.perfbench.SECTIONS` entry)."""

from __future__ import annotations

import time

from .settings import KINDS, PAPER_SAMPLES, TraceSettings

# Ten tokens on Gemma-3-270M (with its <bos>), nine on SmolLM2 (no BOS).
TEMPLATE, SUBJECT, ANSWER, NEW = "{} is located in the city of", "The Eiffel Tower", "Paris", "Rome"


def bench_section(lm, _facts, _common) -> dict:
    from .lens import logit_lens
    from .noise import embedding_std
    from .trace import trace

    rows = []
    with lm.scope():
        t = time.perf_counter()
        std = embedding_std(lm)
        rows.append({"what": "embedding std (once per model, then cached)", "seconds": time.perf_counter() - t})
        for samples in (TraceSettings().samples, PAPER_SAMPLES):
            got = trace(lm, TEMPLATE, SUBJECT, ANSWER, TraceSettings(samples=samples))
            rows.append({"what": f"full trace: {len(KINDS)} kinds x {got['n_layers']} layers x "
                                 f"{len(got['tokens'])} tokens, {samples} noise samples ({got['engine']})",
                         "seconds": got["seconds"], "target": "30" if samples == TraceSettings().samples else ""})
        runs = []
        for _ in range(3):
            runs.append(logit_lens(lm, TEMPLATE, SUBJECT, {"old": ANSWER, "new": NEW})["seconds"])
        rows.append({"what": "logit lens (every layer, 2 positions, 2 targets), best of 3", "seconds": min(runs),
                     "target": "1"})
    return {"title": "Causal tracing and the logit lens", "columns": ["what", "seconds", "target"], "rows": rows,
            "note": f"Prompt {TEMPLATE.replace('{}', SUBJECT)!r} -> {ANSWER!r}; noise {TraceSettings().noise} x "
                    f"the embedding std ({std['std']:.4g} over {std['tokens']} tokens of {std['corpus']}). "
                    "Seconds of `editcore.tracing.trace` from scratch (nothing cached); targets from issue #20."}
