"""One place where metrics touch the model: teacher-forced pair scores, next-token distributions and
greedy continuations, batched, with an LRU cache for the *unedited* model.

A :class:`Scorer` reads the model in whatever state it is in right now. Built with ``pre=True`` it
promises that this state is the reference state named ``state`` (by default the pristine base model,
"base") and may fill and read the process-wide cache keyed by ``(model fingerprint, state, kind, prompt,
target)``. A post-edit scorer (``pre=False``) never touches that cache; it memoises only inside itself,
so two families asking for the same neighbourhood distribution inside one evaluation share one pass.

Nobody but the caller knows whether an edit is applied, so the rule is simple: build ``pre=True``
scorers only *before* ``scope.apply(patch)`` (``evaluate`` does), and when a caller already holds kept
edits (sequential editing) pass a ``state`` that names them, or use ``pre=False``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from .. import decoding, paths, text
from .numeric import LOG_FLOOR, floor_log

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PairScore:
    """Teacher-forced scores of one target after one prompt (log-probs floored at ``LOG_FLOOR``)."""

    token_logprobs: tuple[float, ...]
    token_correct: tuple[bool, ...]
    argmax: tuple[int, ...] = ()  # argmax token at each target position (EasyEdit's locality compares these)

    @property
    def logprob(self) -> float:
        """log P(target | prompt) = Σ_i log P(t_i | prompt, t_<i) (the product convention)."""
        return max(sum(self.token_logprobs), LOG_FLOOR)

    @property
    def mean_nll(self) -> float:
        """ROME's convention: −(1/n) Σ_i log P(t_i | …)."""
        return -sum(self.token_logprobs) / len(self.token_logprobs)

    @property
    def prob(self) -> float:
        return math.exp(self.logprob)

    @property
    def token_acc(self) -> float:
        """EasyEdit's token-level accuracy: fraction of target tokens that are the teacher-forced argmax."""
        return sum(self.token_correct) / len(self.token_correct)

    def value(self, convention: str) -> float:
        """The magnitude a convention compares: P(target) ("product") or exp(−mean NLL) ("rome_mean_nll")."""
        if convention == "product":
            return self.prob
        if convention == "rome_mean_nll":
            return math.exp(-self.mean_nll)
        raise ValueError(f"unknown convention {convention!r}")

    def log_value(self, convention: str) -> float:
        return self.logprob if convention == "product" else -self.mean_nll


CONVENTIONS = ("product", "rome_mean_nll")

# ---- the pre-edit cache -------------------------------------------------------------------------------

_CACHE_LOCK = threading.Lock()
_PAIR_CACHE: OrderedDict = OrderedDict()
_DIST_CACHE: OrderedDict = OrderedDict()  # full next-token distributions are large (1 MB each on Gemma)
_TEXT_CACHE: OrderedDict = OrderedDict()
PAIR_CACHE_SIZE = 50_000
DIST_CACHE_SIZE = 256
TEXT_CACHE_SIZE = 5_000


def _get(cache: OrderedDict, key):
    with _CACHE_LOCK:
        if key in cache:
            cache.move_to_end(key)
            return cache[key]
    value = _disk_get(cache, key)
    if value is not None:
        _remember(cache, key, value, _SIZES[id(cache)])  # already on disk: memory only
    return value


def _remember(cache: OrderedDict, key, value, size: int) -> bool:
    """Store in the memory LRU (bounded by ``size``); True if the key was new there."""
    with _CACHE_LOCK:
        fresh = key not in cache
        cache[key] = value
        cache.move_to_end(key)
        while len(cache) > size:
            cache.popitem(last=False)
    return fresh


def _put(cache: OrderedDict, key, value, size: int) -> None:
    """Store in memory and, for the pristine base model, on disk."""
    if _remember(cache, key, value, size):
        _disk_put(cache, key, value)


# ---- the pre-edit cache on disk ---------------------------------------------------------------------------
# Reads of the *pristine* base model (state "base") are the same for every edit, every session and every
# process, so they are also kept on disk: a CLI evaluation or a dashboard restart then spends its time on the
# edited model only (the general-ability probes, for one, do not depend on the fact at all). Plain data
# only: pair scores and texts as JSON, distributions as raw float32 bytes; keys are SHA-256 of canonical
# JSON (model fingerprint first, so other weights never hit). EDITSCOPE_PRECACHE=0 switches it off.
DISK_LIMIT_BYTES = 2 * 2**30
_disk_state: dict = {}


def _disk():
    if os.environ.get("EDITSCOPE_PRECACHE", "1") == "0":
        return None
    where = str(paths.sub("prescores"))
    with _CACHE_LOCK:
        if _disk_state.get("where") != where:  # EDITSCOPE_HOME changed (tests): reopen
            import diskcache

            old = _disk_state.get("cache")
            if old is not None:
                old.close()
            _disk_state.update(where=where, cache=diskcache.Cache(where, size_limit=DISK_LIMIT_BYTES))
        return _disk_state["cache"]


def _disk_key(cache: OrderedDict, key) -> str | None:
    if len(key) < 2 or key[1] != "base":
        return None
    kind = _KINDS[id(cache)]
    return hashlib.sha256(json.dumps([kind, *key], separators=(",", ":"), ensure_ascii=False).encode()).hexdigest()


def _encode(kind: str, value):
    if kind == "dist":
        return value.detach().to(torch.float32).contiguous().cpu().numpy().tobytes()
    if kind == "pair":
        return json.dumps([value.token_logprobs, value.token_correct, value.argmax])
    return json.dumps(value)


def _decode(kind: str, raw):
    if kind == "dist":
        import numpy as np

        return torch.from_numpy(np.frombuffer(raw, dtype=np.float32).copy())
    data = json.loads(raw)
    if kind == "pair":
        return PairScore(tuple(data[0]), tuple(bool(x) for x in data[1]), tuple(data[2]))
    return tuple(data) if isinstance(data, list) else data


def _disk_get(cache: OrderedDict, key):
    dkey = _disk_key(cache, key)
    store = _disk() if dkey else None
    if store is None:
        return None
    try:
        raw = store.get(dkey)
        return None if raw is None else _decode(_KINDS[id(cache)], raw)
    except Exception as exc:  # a damaged cache must never break an evaluation
        log.warning("ignoring unreadable pre-edit cache entry (%s)", exc)
        return None


def _disk_put(cache: OrderedDict, key, value) -> None:
    dkey = _disk_key(cache, key)
    store = _disk() if dkey else None
    if store is None:
        return
    try:
        store.set(dkey, _encode(_KINDS[id(cache)], value))
    except Exception as exc:
        log.warning("could not write the pre-edit cache (%s)", exc)


_KINDS = {id(_PAIR_CACHE): "pair", id(_DIST_CACHE): "dist", id(_TEXT_CACHE): "text"}
_SIZES = {id(_PAIR_CACHE): PAIR_CACHE_SIZE, id(_DIST_CACHE): DIST_CACHE_SIZE, id(_TEXT_CACHE): TEXT_CACHE_SIZE}


def clear_cache(disk: bool = True) -> None:
    with _CACHE_LOCK:
        _PAIR_CACHE.clear()
        _DIST_CACHE.clear()
        _TEXT_CACHE.clear()
    store = _disk() if disk else None
    if store is not None:
        store.clear()


def cache_sizes() -> dict[str, int]:
    with _CACHE_LOCK:
        return {"pairs": len(_PAIR_CACHE), "dists": len(_DIST_CACHE), "texts": len(_TEXT_CACHE)}


@torch.no_grad()
def _score_pairs(lm, prompts: Sequence[str], targets: Sequence[str], batch_size: int,
                 dist_prompts: Sequence[str] = ()) -> tuple[list[PairScore], torch.Tensor]:
    """Like :func:`editcore.text.score_targets`, but also keeps the argmax token at each position; and the
    next-token log-distributions after ``dist_prompts``, read from the same passes
    (:func:`editcore.text.pairs_and_dists`)."""
    tok = lm.tokenizer
    encoded = [(text.prompt_ids(tok, p), text.target_ids(tok, t)) for p, t in zip(prompts, targets)]
    read, dists = text.pairs_and_dists(lm, encoded, [text.prompt_ids(tok, p) for p in dist_prompts], batch_size)
    out: list[PairScore] = []
    for (logp, am), (_, t) in zip(read, encoded):
        lp = [floor_log(v) for v in logp.tolist()]
        out.append(PairScore(tuple(lp), tuple((am == torch.tensor(t)).tolist()), tuple(am.tolist())))
    return out, dists


# Distributions read along with pair scores are kept for at most this many prompts (1 MB each on Gemma).
SPARE_DISTS_MAX = 64


class Scorer:
    """Batched reads of the model's current state; see the module docstring for ``pre``/``state``."""

    def __init__(self, lm, *, pre: bool = False, state: str = "base", batch_size: int = 16):
        self.lm = lm
        self.pre = pre
        self.state = state
        self.batch_size = batch_size
        self._pairs: dict = {}
        self._dists: dict = {}
        self._texts: dict = {}
        self._gen_ids: dict[str, list[int]] = {}
        self._spare_dists: dict[str, torch.Tensor] = {}  # distributions read along with pairs, not asked yet
        self.passes = 0  # forward batches actually run (tests check the cache saves them)
        self.frozen = False
        self.reset_asked()

    def reset_asked(self) -> None:
        """Start recording what this scorer is asked for (see :meth:`prefetch_like`)."""
        self.asked: dict[str, dict] = {"pairs": {}, "dists": {}, "greedy": {}}

    def prefetch_like(self, other: "Scorer", progress: Callable[[str], None] | None = None) -> None:
        """Read everything ``other`` was asked for since its :meth:`reset_asked`, in one batched call per kind.

        ``evaluate`` runs the metric families on the unedited model first; the edited model is then asked
        for the same prompts and targets. Family by family that is a dozen small batches; all at once, the
        batches are full and sorted by length (less padding), and every later family call is a lookup."""
        pairs = [k for k in other.asked["pairs"] if k not in self._pairs]
        dists = [p for p in other.asked["dists"] if p not in self._dists]
        if progress is not None and (pairs or dists):
            progress(f"scoring {len(pairs)} targets and {len(dists)} distributions")
        if pairs:  # the distributions are read at prompts the families also score, from the same passes
            self.pairs([p for p, _ in pairs], [t for _, t in pairs], with_dists=dists)
        if dists:
            self.dists(dists)
        if other.asked["greedy"]:
            wanted = list(other.asked["greedy"])
            if progress is not None:
                progress(f"continuing {len(wanted)} prompts greedily")
            self.prefetch_greedy(wanted, drafts={p: other.continuation_ids(p) for p, _ in wanted})

    def continuation_ids(self, prompt: str) -> list[int] | None:
        """Token ids of the longest greedy continuation of ``prompt`` this scorer knows (re-tokenised from
        the text if it came from the cache); None if it has none. Used as a draft (see ``prefetch_greedy``)."""
        if prompt in self._gen_ids:
            return self._gen_ids[prompt]
        known = [(k[1], t) for k, t in self._texts.items()
                 if len(k) == 2 and k[0] == prompt and isinstance(k[1], int) and isinstance(t, str)]
        if not known:
            return None
        return list(self.lm.tokenizer(max(known)[1], add_special_tokens=False)["input_ids"])

    def freeze(self) -> "Scorer":
        """After this, a miss raises instead of reading the model: ``evaluate`` freezes the pre-edit
        scorer before applying the patch, so nothing computed on the edited model can pass as pre-edit."""
        self.frozen = True
        return self

    def _check(self, todo) -> None:
        if todo and self.frozen:
            raise RuntimeError("a frozen (pre-edit) scorer was asked for something it did not compute "
                               f"before the edit: {list(todo)[:2]}")

    def _key(self, *parts):
        return (self.lm.fingerprint, self.state, *parts)

    def _recall(self, memo: dict, key, cache: OrderedDict, cache_key):
        """What this scorer read before under ``key``; else, for a pre-edit scorer only, the process cache's
        entry under ``cache_key``."""
        hit = memo.get(key)
        if hit is None and self.pre:
            hit = _get(cache, cache_key)
        return hit

    def _known_and_missing(self, keys: Sequence, lookup: Callable) -> tuple[dict, list]:
        """The reads of ``keys`` that ``lookup`` knows (None: unknown) and, in first-asked order, the keys
        left to read; a frozen scorer raises if any are left."""
        found: dict = {}
        for k in set(keys):
            hit = lookup(k)
            if hit is not None:
                found[k] = hit
        todo = [k for k in dict.fromkeys(keys) if k not in found]
        self._check(todo)
        return found, todo

    def _share(self, cache: OrderedDict, cache_key, value, size: int) -> None:
        """Offer a read to the process cache, which only a pre-edit scorer may fill (module docstring)."""
        if self.pre:
            _put(cache, cache_key, value, size)

    # -- teacher-forced targets ----------------------------------------------------------------------
    def pairs(self, prompts: Sequence[str], targets: Sequence[str], with_dists: Sequence[str] = ()) -> list[PairScore]:
        """Teacher-forced scores of each target after its prompt. Passes that run also read the next-token
        distributions after ``with_dists`` and (up to :data:`SPARE_DISTS_MAX`) after the scored prompts, kept
        for a following :meth:`dists` call."""
        if len(prompts) != len(targets):
            raise ValueError("prompts and targets differ in length")
        keys = [(p, t) for p, t in zip(prompts, targets)]
        self.asked["pairs"].update(dict.fromkeys(keys))
        found, todo = self._known_and_missing(
            keys, lambda k: self._recall(self._pairs, k, _PAIR_CACHE, self._key(*k)))
        if todo:
            self.passes += math.ceil(len(todo) / self.batch_size)
            # The families read next-token distributions mostly at prompts they also score (NKL and shifts
            # after CounterFact's), and from these passes one costs a row of logits, not a forward pass.
            spare = [p for p in dict.fromkeys(p for p, _ in todo) if p not in self._dists]
            if len(spare) + len(self._spare_dists) > SPARE_DISTS_MAX:  # a probe set, not a fact's prompts
                spare = []
            spare += [p for p in dict.fromkeys(with_dists) if p not in self._dists and p not in spare]
            scores, rows = _score_pairs(self.lm, [p for p, _ in todo], [t for _, t in todo], self.batch_size,
                                        spare)
            self._spare_dists.update(zip(spare, rows))
            for k, s in zip(todo, scores):
                found[k] = s
                self._share(_PAIR_CACHE, self._key(*k), s, PAIR_CACHE_SIZE)
        self._pairs.update(found)
        return [found[k] for k in keys]

    # -- full next-token distributions ---------------------------------------------------------------
    def dists(self, prompts: Sequence[str]) -> torch.Tensor:
        """``[n, vocab]`` next-token log-probabilities (float32, CPU) at the end of each prompt."""
        if not prompts:
            return torch.empty(0, 0)
        self.asked["dists"].update(dict.fromkeys(prompts))

        def lookup(p):
            hit = self._recall(self._dists, p, _DIST_CACHE, self._key("dist", p))
            if hit is None and p in self._spare_dists:  # read along with pair scores (see pairs)
                hit = self._spare_dists.pop(p)
                self._share(_DIST_CACHE, self._key("dist", p), hit, DIST_CACHE_SIZE)
            return hit

        found, todo = self._known_and_missing(prompts, lookup)
        if todo:
            self.passes += math.ceil(len(todo) / self.batch_size)
            rows = text.next_token_logprobs(self.lm, todo, self.batch_size)
            for p, row in zip(todo, rows):
                found[p] = row
                self._share(_DIST_CACHE, self._key("dist", p), row, DIST_CACHE_SIZE)
        self._dists.update(found)
        return torch.stack([found[p] for p in prompts])

    # -- greedy continuations ------------------------------------------------------------------------
    def greedy(self, prompts: Sequence[str], max_new_tokens: int) -> list[str]:
        self.prefetch_greedy([(p, max_new_tokens) for p in prompts])
        return [self._texts[(p, max_new_tokens)] for p in prompts]

    def prefetch_greedy(self, wanted: Sequence[tuple[str, int]], drafts: dict | None = None) -> None:
        """Generate every ``(prompt, max_new_tokens)`` not known yet in *one* batched call at the largest
        length, and keep each prompt's prefix of the length asked for. Generation on CPU is bound by reading
        the weights once per step (for Gemma the 262k-row unembedding alone is 670 MB), so one call of 16
        steps is far cheaper than four calls of 6-16 steps. ``drafts`` (prompt -> guessed token ids, e.g.
        the unedited model's continuation) make decoding faster where they are right and never change it
        (:func:`editcore.decoding.greedy_tokens`)."""
        self.asked["greedy"].update(dict.fromkeys(wanted))
        todo = [(p, n) for p, n in dict.fromkeys(wanted) if (p, n) not in self._texts]
        if self.pre:
            for p, n in list(todo):
                hit = _get(_TEXT_CACHE, self._key("greedy", n, p))
                if hit is not None:
                    self._texts[(p, n)] = hit
                    todo.remove((p, n))
        self._check(todo)
        if not todo:
            return
        need: dict[str, int] = {}
        for p, n in todo:
            need[p] = max(n, need.get(p, 0))
        prompts = list(need)
        self.passes += math.ceil(len(prompts) / self.batch_size)
        ids = dict(zip(prompts, decoding.greedy_tokens(self.lm, prompts, max(need.values()), self.batch_size,
                                                   lengths=[need[p] for p in prompts],
                                                   drafts=[(drafts or {}).get(p) for p in prompts])))
        pad = text.pad_id(self.lm.tokenizer)
        for p in prompts:
            row = list(ids[p][:need[p]])
            while row and row[-1] == pad:
                row.pop()
            if len(row) > len(self._gen_ids.get(p, [])):
                self._gen_ids[p] = row
        for p, n in todo:
            out = self.lm.tokenizer.decode(ids[p][:n], skip_special_tokens=True)
            self._texts[(p, n)] = out
            self._share(_TEXT_CACHE, self._key("greedy", n, p), out, TEXT_CACHE_SIZE)

    def greedy_ids(self, prompt: str, k: int) -> list[int]:
        """Greedy next ``k`` token ids (memoised per scorer, not in the process cache)."""
        key = ("ids", prompt, k)
        if key not in self._texts:
            self._check([prompt])
            from .nkl import greedy_ids

            self.passes += 1
            self._texts[key] = greedy_ids(self.lm, prompt, k)
        return self._texts[key]

    @torch.no_grad()
    def dists_along(self, prompt: str, continuation: Sequence[int]) -> torch.Tensor:
        """``[k, vocab]`` log-distributions at the k positions that predict ``continuation`` after
        ``prompt`` (teacher-forced). Not cached: only NKL over generated tokens uses it."""
        key = ("along", prompt, tuple(continuation))
        if key in self._dists:
            return self._dists[key]
        self._check([prompt])
        ids = text.prompt_ids(self.lm.tokenizer, prompt)
        seq = ids + list(continuation)
        text.check_length(self.lm, len(seq))
        pos = list(range(len(ids) - 1, len(ids) - 1 + len(continuation)))
        self.passes += 1
        h = text.hidden_at(self.lm, [seq], [pos])[0]
        out = torch.log_softmax(self.lm.adapter.logits(h).float(), dim=-1).cpu()
        self._dists[key] = out
        return out
