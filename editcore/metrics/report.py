"""``evaluate(lm, case, edit_or_patch) -> EvalReport``: every per-fact metric family in one call.

Order of work (the pattern every metric follows):

1. pre-edit pass — on the model as it is (for a fresh session: the unedited base model), with a
   ``pre=True`` scorer whose results go to the process-wide LRU cache; each family is run once against
   (pre, pre) so that everything it will need from the unedited model is computed and memoised now;
2. the scorer is frozen, the patch is applied inside ``lm.scope()``;
3. post-edit pass — each family runs against (pre, post); pre-edit reads are memo hits;
4. the scope exits (model restored bit-for-bit), and the report holds only plain data.

Sequential editing: if the caller already holds kept edits, pass ``pre_state`` naming that state (or
``None`` to disable the cross-call cache); the core functions never assume the model is pristine.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, is_dataclass, replace
from typing import Any

from ..errors import InputError
from ..scope import Patch
from . import counterfact as cf
from . import general as gen
from . import locality as loc
from . import nkl as nklmod
from . import portability as port
from . import shifts as sh
from .scoring import Scorer

log = logging.getLogger(__name__)

FAMILIES = ("counterfact", "nkl", "shifts", "portability", "locality", "general")
Progress = Callable[[str, float], None]


def _plain(obj: Any) -> Any:
    """Dataclasses/tuples/dicts down to JSON types; a non-finite float becomes None (and is logged)."""
    if is_dataclass(obj) and not isinstance(obj, type):
        if hasattr(obj, "to_dict"):
            return _plain(obj.to_dict())
        return _plain(asdict(obj))
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, float):
        if not math.isfinite(obj):
            log.warning("a non-finite number reached a report; stored as null")
            return None
        return obj
    if isinstance(obj, (str, int, bool)) or obj is None:
        return obj
    return repr(obj)


@dataclass
class EvalReport:
    """Plain data: what one edit did to one fact and its surroundings. ``families`` maps a family name to
    its result as JSON-able dicts (see each module for the fields)."""

    model: str
    fingerprint: str
    case_id: str
    edit_prompt: str
    subject: str
    target_new: str
    target_true: str
    convention: str
    families: dict[str, Any] = field(default_factory=dict)
    counterfact_pre: dict | None = None
    # The edit's method, the preset that produced it and any adaptation of the paper it carries.
    method: dict = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    generations: list[dict] = field(default_factory=list)  # {"prompt", "pre", "post"} per generation_prompts

    def to_dict(self) -> dict:
        return _plain({k: getattr(self, k) for k in self.__dataclass_fields__})

    def render(self) -> str:
        return render(self.to_dict())


def _patch_of(edit_or_patch) -> Patch:
    if isinstance(edit_or_patch, Patch):
        return edit_or_patch
    patch = getattr(edit_or_patch, "patch", None)
    if isinstance(patch, Patch):
        return patch
    raise TypeError("evaluate() needs a Patch or an Edit (with .patch)")


def method_record(edit_or_patch) -> dict:
    """``{"name", "preset", "adaptation"}`` of an :class:`~editcore.methods.base.Edit` (empty for a bare
    patch). The adaptation is the one the edit reports (MEMIT's only where its post-norm step ran), else the
    method's :class:`~editcore.methods.base.MethodInfo` one."""
    name = getattr(edit_or_patch, "method", None)
    if not isinstance(name, str):
        return {}
    diag = getattr(edit_or_patch, "diagnostics", {}) or {}
    adaptation = diag.get("adaptation")
    if adaptation is None:
        try:
            from ..methods import get_method

            adaptation = get_method(name).info.adaptation
        except Exception:  # an unregistered method (a test's stand-in): nothing to add
            adaptation = ""
    return {"name": name, "preset": diag.get("preset"), "adaptation": adaptation or ""}


def evaluate(lm, case, edit_or_patch, *, families: Sequence[str] = FAMILIES, target_new: str | None = None,
             convention: str = cf.DEFAULT_CONVENTION, pre_state: str | None = "base", related_new: Sequence[str] = (),
             related_old: Sequence[str] = (), suggest: int = 6, general_sizes: dict[str, int] | None = None,
             general_paths: dict[str, str] | None = None, heldout: str | None = None, heldout_chars: int = 1000,
             nkl_generated_tokens: int = 0, shift_k: int = 10, max_related: int = 5, progress: Progress | None = None,
             generation_prompts: Sequence[str] = (), generation_tokens: int = 16,
             fluency: str | None = None) -> EvalReport:
    """Evaluate one edit of ``case`` (see the module docstring). ``target_new`` defaults to the case's
    first new target; related words come from the caller, the case, and (``suggest`` > 0, when neither
    has any) from :func:`~editcore.metrics.shifts.suggest_related` on the unedited model. CounterFact
    numbers use ``convention`` (ROME's by default) and carry the other one's too. ``fluency`` is ``"quick"``
    or ``"reference"`` (ROME's sampling, :mod:`.fluency`); by default the edit's preset decides.

    ``generation_prompts`` are also continued greedily (``generation_tokens``) before and after the edit, in
    the same decoding loops as the families' own generations (the dashboard shows them side by side);
    they come back in :attr:`EvalReport.generations`."""
    unknown = sorted(set(families) - set(FAMILIES))
    if unknown:
        raise InputError(f"unknown metric family {unknown[0]!r}; known: {', '.join(FAMILIES)}")
    if convention not in cf.CONVENTIONS:
        raise InputError(f"unknown convention {convention!r}; use one of {', '.join(cf.CONVENTIONS)}")
    patch = _patch_of(edit_or_patch)
    method = method_record(edit_or_patch)
    if fluency is None:
        fluency = "reference" if method.get("preset") == "reference" else "quick"
    if fluency not in ("quick", "reference"):
        raise InputError(f"unknown fluency mode {fluency!r}; use quick or reference")
    method["fluency"] = fluency
    target_new = target_new or case.target_new
    notes: list[str] = []
    t0 = time.perf_counter()

    def say(stage: str, frac: float) -> None:
        if progress is not None:
            progress(stage, frac)

    pre = Scorer(lm, pre=pre_state is not None, state=pre_state or "-")
    with lm.scope():
        say("reading the unedited model", 0.0)
        target_true = case.target_true
        if not target_true:
            # The model's own answer stands in for an unknown old answer (as the dashboard does).
            words = pre.greedy([case.edit_prompt], 4)[0].strip().split()
            target_true = words[0].strip(".,;:") if words else ""
            if not target_true:
                raise InputError("the fact has no old answer and the model gave none")
            case = replace(case, target_true=target_true)
            notes.append(f"old answer taken from the unedited model's greedy continuation: {target_true!r}")
        # Capped: every word is scored on every subject prompt, before and after.
        rel_new = sh.related_words(case, target_new, related_new)[:max_related]
        rel_old = sh.related_words(case, target_true, related_old)[:max_related]
        if suggest > 0:
            if not rel_new:
                rel_new = [(w, "suggested") for w in sh.suggest_related(lm, target_new, min(suggest, max_related), scorer=pre)]
            if not rel_old:
                rel_old = [(w, "suggested") for w in sh.suggest_related(lm, target_true, min(suggest, max_related), scorer=pre)]

    neighbours = cf.case_neighbours(case)
    subject_prompts = list(dict.fromkeys([case.edit_prompt, *case.paraphrases, *(p.prompt for p in case.attributes)]))
    # Related words are read where the edited fact is asked (edit prompt + paraphrases), not after
    # attribute prompts such as "The Louvre is a famous", where they are not a natural continuation.
    fact_prompts = list(dict.fromkeys([case.edit_prompt, *case.paraphrases]))
    runners: dict[str, Callable[[Scorer, Scorer], Any]] = {
        "counterfact": lambda a, b: cf.counterfact_from_scores(case.edit_prompt, case.paraphrases, neighbours,
                                                               target_new, target_true, b, convention),
        "nkl": lambda a, b: nklmod.neighbourhood_kl(a, b, [p for p, _ in neighbours], edit_prompt=case.edit_prompt,
                                                    target_new=target_new, generated_tokens=nkl_generated_tokens),
        "shifts": lambda a, b: sh.probability_shifts(a, b, subject_prompts=subject_prompts, fact_prompts=fact_prompts,
                                                     neighbour_prompts=[p for p, _ in neighbours],
                                                     target_new=target_new, target_old=target_true,
                                                     related_new=rel_new, related_old=rel_old, k=shift_k),
        "portability": lambda a, b: port.portability(a, b, case, target_new),
        "locality": lambda a, b: loc.locality(a, b, case, target_new, convention),
        "general": lambda a, b: gen.general_abilities(a, b, sizes=general_sizes, paths=general_paths,
                                                      heldout=heldout, heldout_chars=heldout_chars,
                                                      generation_prompts=case.generation_prompts, fluency=fluency),
    }
    chosen = [f for f in FAMILIES if f in families]
    seconds: dict[str, float] = {}
    pre.reset_asked()  # what the families ask the unedited model, the edited one is asked too
    with lm.scope():
        if generation_prompts:
            pre.greedy(list(generation_prompts), generation_tokens)
        for i, name in enumerate(chosen):
            say(f"unedited model: {name}", 0.05 + 0.45 * i / len(chosen))
            t = time.perf_counter()
            runners[name](pre, pre)
            seconds[f"pre_{name}"] = time.perf_counter() - t
        cf_pre = cf.counterfact_from_scores(case.edit_prompt, case.paraphrases, neighbours, target_new,
                                            target_true, pre, convention) if "counterfact" in chosen else None
    pre.freeze()
    out: dict[str, Any] = {}
    with lm.scope() as s:
        s.apply(patch)
        post = Scorer(lm)
        say("edited model: reading", 0.5)
        t = time.perf_counter()
        post.prefetch_like(pre, lambda stage: say(f"edited model: {stage}", 0.5))
        seconds["post_prefetch"] = time.perf_counter() - t
        for i, name in enumerate(chosen):
            say(f"edited model: {name}", 0.5 + 0.5 * i / len(chosen))
            t = time.perf_counter()
            out[name] = runners[name](pre, post)
            seconds[f"post_{name}"] = time.perf_counter() - t
        generations = [{"prompt": p, "pre": a, "post": b} for p, a, b in zip(
            generation_prompts, pre.greedy(list(generation_prompts), generation_tokens),
            post.greedy(list(generation_prompts), generation_tokens))]
    seconds["total"] = time.perf_counter() - t0
    say("done", 1.0)
    if "general" in out:
        g = out["general"]
        notes.append(f"perplexity over {g.perplexity_tokens} tokens in windows of {g.perplexity_context}")
    if "nkl" in out and out["nkl"].vocab_size:  # a free-form fact has no neighbours, so no NKL to explain
        notes.append(f"NKL in nats (true KL); divide by vocab_size={out['nkl'].vocab_size} for specificityplus' numbers")
    if method.get("preset"):
        notes.append(f"{method['name']} preset: {method['preset']}"
                     + (" (as the paper's released code runs it)" if method["preset"] == "reference" else ""))
    if method.get("adaptation"):
        notes.append(f"{method['name']}: EditScope adaptation — {method['adaptation']}")
    if "counterfact" in out:
        notes.append(f"CounterFact convention: {convention}" + (" (ROME's code)" if convention == "rome_mean_nll" else ""))
    return EvalReport(lm.name, lm.fingerprint, case.id, case.edit_prompt, case.subject, target_new, target_true,
                      convention, out, cf_pre.to_dict() if cf_pre else None, method, seconds, notes, generations)


# ---- text rendering (CLI) -----------------------------------------------------------------------------

def _ci(d: dict | None, pct: bool = False, digits: int = 3) -> str:
    if not d or not d.get("n"):
        return "n/a"
    k, u = (100.0, "%") if pct else (1.0, "")
    body = f"{d['mean'] * k:.{digits}f}{u}"
    if d["n"] > 1:
        body += f" [{d['lo'] * k:.{digits}f}, {d['hi'] * k:.{digits}f}]"
    return f"{body} (n={d['n']})"


def render(r: dict) -> str:
    """A readable multi-line report of :meth:`EvalReport.to_dict` output (95% bootstrap CIs in brackets)."""
    L: list[str] = []
    add = L.append
    add(f"EditScope evaluation — {r['model']} ({r['fingerprint']})")
    add(f"fact {r['case_id']}: {r['edit_prompt']} [{r['target_true']} → {r['target_new']}]")
    m = r.get("method") or {}
    if m:
        add(f"method {m.get('name')}: preset {m.get('preset') or '-'}; fluency {m.get('fluency', 'quick')}"
            + (f"; EditScope adaptation: {m['adaptation']}" if m.get("adaptation") else ""))
    add(f"probability convention: {r['convention']}; intervals: 95% percentile bootstrap, 1000 resamples")
    f = r["families"]
    if "counterfact" in f:
        c, p = f["counterfact"], r.get("counterfact_pre") or {}
        add("\n== CounterFact (Meng et al. 2022) ==  post-edit  |  pre-edit")
        for key, label, pct in (("es", "ES  efficacy", True), ("ps", "PS  paraphrase", True),
                                ("ns", "NS  neighbourhood", True), ("em", "EM  P(new)-P(true)", False),
                                ("pm", "PM", False), ("nm", "NM  P(true)-P(new)", False)):
            d = 1 if pct else 3
            add(f"  {label:<22} {_ci(c[key], pct, d):<36} | {_ci(p.get(key), pct, d)}")
        add(f"  {'Score (harmonic)':<22} {c['score']:.3f}{'':<31} | {p.get('score', float('nan')):.3f}")
        o = c.get("other") or {}
        if o:
            add(f"  other convention ({o['convention']}): ES {o['es']:.1%}, PS {o['ps']:.1%}, NS {o['ns']:.1%}, "
                f"EM {o['em']:.3f}, PM {o['pm']:.3f}, NM {o['nm']:.3f}, Score {o['score']:.3f}")
        add(f"  token accuracy (EasyEdit): edit {_ci(c['edit_token_acc'])}, paraphrase {_ci(c['paraphrase_token_acc'])}")
    if "nkl" in f:
        n = f["nkl"]
        add("\n== Neighbourhood KL (CounterFact+, Hoelscher-Obermaier et al. 2023), nats ==")
        add(f"  NKL            {_ci(n['nkl'], digits=4)}")
        add(f"  distracted NKL {_ci(n['distracted_nkl'], digits=4)}   (vocab_size {n['vocab_size']})")
        if n["generated_tokens"]:
            add(f"  over {n['generated_tokens']} generated tokens {_ci(n['generated_nkl'], digits=4)}")
    if "shifts" in f:
        s = f["shifts"]
        add("\n== Probability shifts ==")
        for g, lists in s["groups"].items():
            ups = ", ".join(f"{t['token'].strip() or repr(t['token'])} {t['p_pre']:.3f}→{t['p_post']:.3f}"
                            for t in lists["risers"][:6])
            downs = ", ".join(f"{t['token'].strip() or repr(t['token'])} {t['p_pre']:.3f}→{t['p_post']:.3f}"
                              for t in lists["fallers"][:6])
            add(f"  {g:<13} risers: {ups or '-'}")
            add(f"  {'':<13} fallers: {downs or '-'}")
        for w in s["related"]:
            add(f"  related to {w['of']} target ({w['source']}): {w['word']:<18} P {w['p_pre']:.2e} → {w['p_post']:.2e}"
                f"  Δlog P {_ci(w['dlogp'], digits=2)}")
        b = s["bleed"]
        add(f"  bleed: new target becomes top-1 on {_ci(b['rate'], pct=True, digits=1)} of neighbour/unrelated prompts;"
            f" mean P rise {_ci(b['rise'], digits=4)}")
    if "portability" in f:
        add("\n== Portability (Yao et al. 2023) ==  token acc (EasyEdit)  |  greedy exact match")
        for k, v in f["portability"].items():
            add(f"  {k:<18} {_ci(v['token_acc']):<30} | {_ci(v['exact'], pct=True, digits=1)}")
    if "locality" in f:
        add("\n== Locality (Yao et al. 2023) ==  argmax agreement (EasyEdit)  |  NS")
        for k, v in f["locality"].items():
            add(f"  {k:<18} {_ci(v['agreement']):<30} | {_ci(v['ns'], pct=True, digits=1)}")
    if "general" in f:
        g = f["general"]
        add("\n== General abilities (pre → post; Other-Task locality) ==")
        for k, v in g["probes"].items():
            add(f"  {k:<14} {v['metric']:<40} {_ci(v['pre'])} → {_ci(v['post'])}  "
                f"(SE {v.get('se_post', 0):.3f}, SE of the change {v.get('delta_se', 0):.3f}; {v.get('source', '')})")
        if g["perplexity_pre"] is not None:
            add(f"  perplexity     {g['perplexity_pre']:.2f} → {g['perplexity_post']:.2f} "
                f"({g['perplexity_tokens']} tokens, context {g['perplexity_context']})")
        if g["fluency_pre"] is not None:
            add(f"  fluency (n-gram entropy, bits) {g['fluency_pre']:.3f} → {g['fluency_post']:.3f}  "
                f"[{g.get('fluency_note', '')}]")
    if r.get("notes"):
        add("\nnotes: " + "; ".join(r["notes"]))
    secs = r.get("seconds", {})
    if "total" in secs:
        add(f"evaluated in {secs['total']:.1f} s")
    return "\n".join(L)
