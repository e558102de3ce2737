"""Where trained hypernetworks and training checkpoints live: ``$EDITSCOPE_HOME/trained/<kind>/``, one folder
per method (``mend``, ``ke``, ``malmen``; every function takes the method's ``kind``, MEND's by default).

An artefact is two files named by the model's fingerprint and the SHA-256 of the training settings
(:func:`artefact_key`): ``<name>.safetensors`` (the network's tensors) and ``<name>.json`` (the training
report, which also says which weights the network edits). A checkpoint (``<name>.ckpt.*``) adds the
optimisers' state and is removed once the artefact is written. Files are written to a temporary name and
moved into place, so a stopped run never leaves a half-written artefact. Plain data only: safetensors + JSON.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from ... import paths
from ...results_cache import make_key

KIND = "mend"


def folder(kind: str = KIND) -> Path:
    return paths.sub("trained", kind)


def artefact_key(fingerprint: str, version: str, settings: dict, kind: str = KIND) -> str:
    return make_key(kind="trained", fingerprint=fingerprint, method=kind, method_version=version, hparams=settings)


def stem(fingerprint: str, key: str) -> str:
    return f"{fingerprint}-{key[:16]}"


def _atomic_write(path: Path, write) -> None:
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    tmp.replace(path)


def save(name: str, tensors: dict[str, torch.Tensor], meta: dict, kind: str = KIND) -> None:
    """``name.safetensors`` then ``name.json`` (the JSON last: its presence means the pair is complete)."""
    from safetensors.torch import save_file

    base = folder(kind) / name
    flat = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    _atomic_write(base.with_name(name + ".safetensors"), lambda p: save_file(flat, str(p)))
    _atomic_write(base.with_name(name + ".json"),
                  lambda p: p.write_text(json.dumps(meta, indent=1, sort_keys=True, default=str) + "\n"))


def load(name: str, device=None, kind: str = KIND) -> tuple[dict[str, torch.Tensor], dict] | None:
    from safetensors.torch import load_file

    base = folder(kind) / name
    meta_path, tensor_path = base.with_name(name + ".json"), base.with_name(name + ".safetensors")
    if not (meta_path.is_file() and tensor_path.is_file()):
        return None
    return load_file(str(tensor_path), device=str(device or "cpu")), json.loads(meta_path.read_text())


def remove(name: str, kind: str = KIND) -> None:
    for suffix in (".safetensors", ".json"):
        (folder(kind) / (name + suffix)).unlink(missing_ok=True)


def reports(fingerprint: str, kind: str = KIND) -> list[dict]:
    """Reports of the finished artefacts for this model, newest first (each with its file ``name``)."""
    out = []
    for p in folder(kind).glob(f"{fingerprint}-*.json"):
        if ".ckpt" in p.name:
            continue
        try:
            meta = json.loads(p.read_text())
        except ValueError:
            continue
        if meta.get("complete") and (folder(kind) / (p.stem + ".safetensors")).is_file():
            out.append({**meta, "name": p.stem})
    return sorted(out, key=lambda m: m.get("finished", ""), reverse=True)


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S")


# ---- optimiser state as flat tensors + JSON ------------------------------------------------------------
def optimiser_tensors(prefix: str, opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    sd = opt.state_dict()
    tensors, plain = {}, {}
    for idx, state in sd["state"].items():
        for k, v in state.items():
            if isinstance(v, torch.Tensor):
                tensors[f"{prefix}.{idx}.{k}"] = v
            else:
                plain[f"{idx}.{k}"] = v
    return tensors, {"param_groups": sd["param_groups"], "plain": plain}


def restore_optimiser(prefix: str, opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict):
    state: dict[int, dict] = {}
    for name, v in tensors.items():
        if name.startswith(prefix + "."):
            idx, k = name[len(prefix) + 1:].split(".", 1)
            state.setdefault(int(idx), {})[k] = v
    for name, v in meta["plain"].items():
        idx, k = name.split(".", 1)
        state.setdefault(int(idx), {})[k] = v
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
