"""GRACE key geometry (editcore/hparams/grace/sweep_keys.md): distances from an edit prompt's key (the input of
the MLP output projection at the prompt's last token) to its paraphrases', its neighbours' and unrelated
prompts' keys, on 40 catalog facts the model knows; one JSON line per layer.

    .venv/bin/python scripts/grace_key_geometry.py gemma-3-270m 5,8,10,12,13,14,16
"""

import json
import random
import statistics
import sys

import torch

from editcore import catalog, hooks
from editcore.models import load_model
from editcore.text import padded, prompt_ids


def quantile(xs, f):
    return sorted(xs)[int(f * (len(xs) - 1))]


def main(name: str, layers: list[int]) -> None:
    lm = load_model(name)
    known = catalog.known_facts(name) or set()
    cases = [c for c in catalog.load_catalog() if c.id in known and c.paraphrases and c.neighbourhood]
    cases = random.Random(0).sample(cases, min(40, len(cases)))
    prompts = sorted({p for c in cases for p in [c.edit_prompt, *c.paraphrases, *[n.prompt for n in c.neighbourhood]]})
    idx = {p: i for i, p in enumerate(prompts)}
    mods = {layer: lm.adapter.module("mlp_out", layer) for layer in layers}
    keys = {layer: [] for layer in layers}
    with lm.scope(), torch.no_grad():
        for s in range(0, len(prompts), 16):
            seqs = [prompt_ids(lm.tokenizer, p) for p in prompts[s:s + 16]]
            ids, mask = padded(lm, seqs)
            got = {}
            with hooks.together([hooks.capture(m, "in", got, str(layer)) for layer, m in mods.items()]):
                lm.model.base_model(input_ids=ids, attention_mask=mask, use_cache=False)
            for layer in layers:
                keys[layer] += [got[str(layer)][i, len(q) - 1].float() for i, q in enumerate(seqs)]
    for layer in layers:
        K = torch.stack(keys[layer])

        def dist(a, b):
            return float((K[idx[a]] - K[idx[b]]).norm())

        para = [dist(c.edit_prompt, p) for c in cases for p in c.paraphrases]
        nb = [dist(c.edit_prompt, n.prompt) for c in cases for n in c.neighbourhood]
        other = [dist(c.edit_prompt, o.edit_prompt) for c in cases for o in cases if o is not c]
        row = {"layer": layer, "key_norm_median": statistics.median(float(K[idx[c.edit_prompt]].norm()) for c in cases),
               "para_median": statistics.median(para), "para_q10": quantile(para, .1), "nb_min": min(nb),
               "nb_q05": quantile(nb, .05), "nb_median": statistics.median(nb),
               "unrelated_q05": quantile(other, .05), "unrelated_median": statistics.median(other)}
        for eps in sorted({round(quantile(nb, f), 2) for f in (0.0, 0.02, 0.05, 0.1, 0.25)} | {1.0}):
            row[f"eps={eps}"] = {"para_within": sum(x <= eps for x in para) / len(para),
                                 "nb_within": sum(x <= eps for x in nb) / len(nb),
                                 "unrelated_within": sum(x <= eps for x in other) / len(other)}
        print(json.dumps(row))


if __name__ == "__main__":
    main(sys.argv[1], [int(x) for x in sys.argv[2].split(",")])
