"""MQuAKE multi-hop accuracy of the weight-preserving methods (MeLLo, DeepEdit, IKE as a baseline).

    OMP_NUM_THREADS=1 .venv/bin/python scripts/multihop_eval.py smollm2-135m --cases 10

For each MQuAKE case the case's edits are applied one after another in one scope (the memory grows), then
each multi-hop question (the first ``--questions`` of the case) is asked:

* ``procedure``: the answer MeLLo's / DeepEdit's procedure reaches (the papers' metric);
* ``edited model``: the greedy answer line of the edited model to MQuAKE's few-shot prompt
  (``metrics.multihop.qa_prompt``), read through the patch as every metric reads it.

A case counts as correct when any asked question is answered with the new answer or an alias (MQuAKE's
rule; normalised exact match). ``none`` is the unedited model on the same prompts.
"""

from __future__ import annotations

import argparse
import json
import logging
import time

from editcore.benchmarks import load_benchmark
from editcore.decoding import greedy
from editcore.methods import get_method
from editcore.methods.base import load_hparams
from editcore.metrics.matching import exact_match
from editcore.metrics.multihop import QUESTION_TOKENS, answer_of, qa_prompt
from editcore.models import load_model
from editcore.scope import applied_patches


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model")
    ap.add_argument("--cases", type=int, default=10)
    ap.add_argument("--questions", type=int, default=1, help="questions asked per case (MQuAKE has 3)")
    ap.add_argument("--methods", default="none,ike,mello,deepedit")
    ap.add_argument("--json", help="write per-question details here")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    lm = load_model(args.model)
    cases = load_benchmark("mquake", limit=args.cases)
    rows, details = [], []
    for name in args.methods.split(","):
        t0 = time.perf_counter()
        proc_ok = model_ok = 0
        for case in cases:
            answers = [case.new_answer, *case.new_answer_aliases]
            with lm.scope() as scope:
                if name != "none":
                    method = get_method(name)
                    hp = load_hparams(name, method.Hparams, lm.name)
                    for req in case.requests():
                        scope.apply(method.compute(lm, [req], hp).patch)
                got_p = got_m = False
                for q in case.questions[:args.questions]:
                    sol = None
                    if name in ("mello", "deepedit"):
                        rw = applied_patches(lm.model)[-1].rewrite
                        sol = rw.solve(rw.facts, q)
                        got_p = got_p or bool(sol.answer and exact_match(sol.answer, answers))
                    out = greedy(lm, [qa_prompt(q)], QUESTION_TOKENS)[0]
                    said = answer_of(out, "few-shot") or ""
                    got_m = got_m or exact_match(said, answers)
                    details.append({"method": name, "case": case.id, "question": q, "new_answer": case.new_answer,
                                    "edited_model": said, "procedure": sol.answer if sol else None,
                                    "adopted": [f.subject for f in sol.used] if sol else None,
                                    "calls": sol.calls if sol else None,
                                    "transcript": sol.transcript if sol else None,
                                    "events": sol.events if sol else None})
                proc_ok += got_p
                model_ok += got_m
            print(f"  {name} {case.id}: procedure {got_p}, edited model {got_m}", flush=True)
            if args.json:  # written as it goes: a run cut short keeps what it measured
                with open(args.json, "w") as f:
                    json.dump(details, f, indent=1)
        seconds = time.perf_counter() - t0
        rows.append((name, proc_ok if name in ("mello", "deepedit") else None, model_ok, seconds))
        print(f"{name}: procedure {proc_ok}/{len(cases)}, edited model {model_ok}/{len(cases)}, {seconds:.0f}s",
              flush=True)
    print("\n| method | procedure's answer | edited model's answer | seconds |\n|---|---|---|---|")
    for name, p, m, s in rows:
        print(f"| {name} | {'-' if p is None else f'{p}/{len(cases)}'} | {m}/{len(cases)} | {s:.0f} |")


if __name__ == "__main__":
    main()
