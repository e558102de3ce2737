"""The one case schema that catalog facts, benchmark records and typed-in facts all become.

A :class:`Case` is a single edit request plus everything metrics need to judge it: paraphrases
(generalisation), neighbourhood probes (locality), attributes of the subject (other relations that must
stay put), related words of each target (for generation metrics), one-hop questions (portability) and
free-text generation prompts. Optional fields stay empty when a source has nothing for them; nothing is
invented here.

Multi-hop (MQuAKE), conflict (Li et al. 2024 ConflictEdit) and round-trip (RoundEdit) cases wrap several
edits and are kept as their own types.

Everything is a frozen dataclass made of strings, tuples and other such dataclasses, so a case can be
hashed, cached and sent through JSON (``to_dict`` / ``from_dict``) without loss.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

from ..errors import InputError


def _norm(text: str) -> str:
    return " ".join(text.split()).casefold()


def answers_equal(a: str | None, b: str | None) -> bool:
    """Whether two answers are the same once stripped and case-folded (``None`` equals nothing)."""
    if a is None or b is None:
        return False
    return _norm(a) == _norm(b)


def _strs(values: Any) -> tuple[str, ...]:
    if values is None:
        return ()
    if isinstance(values, str):
        return (values,)
    return tuple(str(v) for v in values)


@dataclass(frozen=True)
class Probe:
    """A full prompt (subject already filled in) and the answer expected after it.

    ``target`` names the candidate new target the answer belongs to when the answer depends on the edit
    (e.g. "London" for "The Louvre is located in the country of" -> "United Kingdom"); ``None`` means the
    answer holds for the unedited model.
    """

    prompt: str
    answer: str
    target: str | None = None
    aliases: tuple[str, ...] = ()  # other accepted spellings of the answer (MQuAKE's answer_alias)
    question: str | None = None  # the same fact asked as a question (MQuAKE asks unedited hops that way)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"prompt": self.prompt, "answer": self.answer}
        if self.target is not None:
            d["target"] = self.target
        if self.aliases:
            d["aliases"] = list(self.aliases)
        if self.question is not None:
            d["question"] = self.question
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Probe":
        return cls(prompt=str(d["prompt"]), answer=str(d["answer"]), target=d.get("target"),
                   aliases=_strs(d.get("aliases")), question=d.get("question"))

    @property
    def answers(self) -> tuple[str, ...]:
        """The answer and its aliases."""
        return (self.answer, *self.aliases)


def _probes(values: Any) -> tuple[Probe, ...]:
    if not values:
        return ()
    return tuple(v if isinstance(v, Probe) else Probe.from_dict(v) for v in values)


@dataclass(frozen=True)
class _Fact:
    """The fields a single fact and a round trip both start with: an id, the relation, and the prompt
    template (with ``{}``) that the subject goes in."""

    id: str
    relation_id: str
    relation: str
    prompt: str
    subject: str


@dataclass(frozen=True)
class Case(_Fact):
    """One fact to edit, in the shape methods and metrics consume."""

    target_true: str
    targets_new: tuple[str, ...]
    paraphrases: tuple[str, ...] = ()
    neighbourhood: tuple[Probe, ...] = ()
    distracting_neighbourhood: tuple[str, ...] = ()
    attributes: tuple[Probe, ...] = ()
    aliases: tuple[str, ...] = ()
    reverse: Probe | None = None
    related: tuple[tuple[str, tuple[str, ...]], ...] = ()
    one_hop: tuple[Probe, ...] = ()
    generation_prompts: tuple[str, ...] = ()
    provenance: str = ""
    # Subject-Replace probes a source states in full (Yao et al.'s zsRE ``alter_subject_question``); the
    # catalog and CounterFact build them from ``aliases`` and the prompt template instead.
    subject_replace: tuple[Probe, ...] = ()

    def __post_init__(self) -> None:
        if "{}" not in self.prompt:
            raise InputError(f"case {self.id}: the prompt template has no '{{}}' for the subject")
        if not self.targets_new:
            raise InputError(f"case {self.id}: no new target")

    # -- derived views -------------------------------------------------------------------------------
    @property
    def edit_prompt(self) -> str:
        """The template with the subject filled in."""
        return self.prompt.format(self.subject)

    @property
    def target_new(self) -> str:
        """The first candidate new target (the default edit)."""
        return self.targets_new[0]

    def related_words(self, target: str) -> tuple[str, ...]:
        """Words associated with ``target`` (old or new), matched case-insensitively; () when unknown."""
        for key, words in self.related:
            if answers_equal(key, target):
                return words
        return ()

    def one_hop_for(self, target: str | None) -> tuple[Probe, ...]:
        """One-hop probes whose answer holds after editing to ``target`` (``None``: before any edit)."""
        if target is None:
            return tuple(p for p in self.one_hop if p.target is None)
        return tuple(p for p in self.one_hop if p.target is not None and answers_equal(p.target, target))

    def request(self, target_index: int = 0):
        """The edit towards ``targets_new[target_index]`` as an :class:`editcore.types.Request`."""
        from ..types import Request

        if not -len(self.targets_new) <= target_index < len(self.targets_new):
            raise InputError(
                f"case {self.id} has {len(self.targets_new)} new target(s); index {target_index} is out of range"
            )
        return Request(
            prompt=self.prompt,
            subject=self.subject,
            target_new=self.targets_new[target_index],
            target_true=self.target_true or None,
        )

    def with_target_true(self, target_true: str) -> "Case":
        """A copy whose old answer is ``target_true`` (e.g. the model's own greedy answer)."""
        if any(answers_equal(target_true, t) for t in self.targets_new):
            raise InputError(f"the new target {target_true!r} equals the current answer")
        return replace(self, target_true=target_true)

    # -- JSON ----------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = _to_dict(self)
        if not self.subject_replace:  # absent rather than empty: earlier cases keep their JSON (and cache keys)
            del d["subject_replace"]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Case":
        try:
            return _from_dict(cls, d, required=("id", "prompt", "subject", "targets_new"))
        except KeyError as exc:
            raise InputError(f"a case record lacks the field {exc.args[0]!r}") from None


def _cases(values: Any) -> tuple[Case, ...]:
    return tuple(v if isinstance(v, Case) else Case.from_dict(v) for v in values or ())


@dataclass(frozen=True)
class MultiHopCase:
    """MQuAKE-style: several chained edits and a composed question whose answer moves with them."""

    id: str
    edits: tuple[Case, ...]
    questions: tuple[str, ...]
    answer: str
    new_answer: str
    answer_aliases: tuple[str, ...] = ()
    new_answer_aliases: tuple[str, ...] = ()
    single_hops: tuple[Probe, ...] = ()
    new_single_hops: tuple[Probe, ...] = ()
    provenance: str = ""

    def __post_init__(self) -> None:
        if not self.edits:
            raise InputError(f"multi-hop case {self.id}: no edit")
        if not self.questions:
            raise InputError(f"multi-hop case {self.id}: no question")

    def requests(self) -> list:
        return [c.request() for c in self.edits]

    def to_dict(self) -> dict[str, Any]:
        return _to_dict(self, ("id", "edits", "questions", "answer", "answer_aliases", "new_answer",
                               "new_answer_aliases", "single_hops", "new_single_hops", "provenance"))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "MultiHopCase":
        return _from_dict(cls, d, required=("id", "edits", "questions", "answer", "new_answer"))


CONFLICT_TYPES = ("reverse", "composite", "coverage")


@dataclass(frozen=True)
class ConflictCase:
    """Two edits that contradict each other (Li et al. 2024, ConflictEdit).

    * ``reverse``: edit 1 sets (s, r, o') which implies (o', r⁻¹, s); edit 2 then moves (o', r⁻¹) elsewhere.
    * ``composite``: ``tied`` facts imply a third one through ``rule``; edit 1 changes a tied fact, so the
      implied object becomes ``implied_object``; edit 2 sets the implied fact to something else.
    * ``coverage``: edit 2 overwrites edit 1 on the same subject and relation.

    ``tied`` holds the facts the rule links (prompts filled, answers = true objects); ``prerequisites``
    indexes the ones that stay true throughout. ``prompts`` maps a relation id to extra templates.
    """

    id: str
    type: str
    edits: tuple[Case, ...]
    rule: str = ""
    tied: tuple[Probe, ...] = ()
    prerequisites: tuple[int, ...] = ()
    implied_object: str = ""
    prompts: tuple[tuple[str, tuple[str, ...]], ...] = ()
    provenance: str = ""

    def __post_init__(self) -> None:
        if self.type not in CONFLICT_TYPES:
            raise InputError(f"conflict case {self.id}: unknown type {self.type!r}")
        if len(self.edits) != 2:
            raise InputError(f"conflict case {self.id}: needs exactly two edits, got {len(self.edits)}")

    def prompts_for(self, relation_id: str) -> tuple[str, ...]:
        for key, templates in self.prompts:
            if key == relation_id:
                return templates
        return ()

    def to_dict(self) -> dict[str, Any]:
        return _to_dict(self, ("id", "type", "rule", "edits", "tied", "prerequisites", "implied_object", "prompts",
                               "provenance"))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ConflictCase":
        return _from_dict(cls, d, required=("id", "type", "edits"))


@dataclass(frozen=True)
class RoundTripCase(_Fact):
    """RoundEdit (Li et al. 2024): edit (s, r, o) to o', then back to o; ``true_objects`` is the full set.

    ``type`` follows the source ("1-2@P69": a one-to-many relation with two true objects).
    """

    object: str
    new_object: str
    true_objects: tuple[str, ...]
    prompts: tuple[str, ...] = ()
    type: str = ""
    provenance: str = ""

    def __post_init__(self) -> None:
        if "{}" not in self.prompt:
            raise InputError(f"round-trip case {self.id}: the prompt template has no '{{}}'")

    def forward(self) -> Case:
        """The first edit, o -> o'."""
        return self._edit("forward", self.object, self.new_object)

    def backward(self) -> Case:
        """The second edit, o' -> o."""
        return self._edit("backward", self.new_object, self.object)

    def _edit(self, step: str, old: str, new: str) -> Case:
        return Case(id=f"{self.id}:{step}", relation_id=self.relation_id, relation=self.relation,
                    prompt=self.prompt, subject=self.subject, target_true=old, targets_new=(new,),
                    paraphrases=tuple(p.format(self.subject) for p in self.prompts), provenance=self.provenance)

    def to_dict(self) -> dict[str, Any]:
        return _to_dict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RoundTripCase":
        return _from_dict(cls, d, required=("id", "prompt", "subject", "object", "new_object"))


# -- JSON --------------------------------------------------------------------------------------------
# Every case type goes through the same two functions: a value is written by its shape (nested cases and
# probes as their dicts, tuples as lists) and read back by the field's annotation.

def _as_json(value: Any) -> Any:
    if isinstance(value, (tuple, list)):
        return [_as_json(v) for v in value]
    if isinstance(value, (Probe, Case)):
        return value.to_dict()
    return value


def _to_dict(obj, keys: tuple[str, ...] | None = None) -> dict[str, Any]:
    """``obj``'s fields as JSON, in the order of ``keys`` (default: the fields' own; the catalog files keep
    their key order)."""
    return {k: _as_json(getattr(obj, k)) for k in keys or [f.name for f in fields(obj)]}


def _pairs(values: Any) -> tuple[tuple[str, tuple[str, ...]], ...]:
    return tuple((str(k), _strs(v)) for k, v in (values or ()))


_READERS = {
    "str": lambda v: str(v or ""),
    "tuple[str, ...]": _strs,
    "tuple[int, ...]": lambda v: tuple(int(i) for i in v or ()),
    "tuple[Probe, ...]": _probes,
    "tuple[Case, ...]": _cases,
    "Probe | None": lambda v: Probe.from_dict(v) if v else None,
    "tuple[tuple[str, tuple[str, ...]], ...]": _pairs,
}


def _from_dict(cls, d: dict[str, Any], required: tuple[str, ...]):
    """``cls`` rebuilt from its dict. A key in ``required`` must be there (else KeyError) and a required
    text is taken as it is; every other key may be missing or null."""
    values = {}
    for f in fields(cls):
        if f.name in required:
            value = d[f.name]
            values[f.name] = str(value) if f.type == "str" else _READERS[f.type](value)
        else:
            values[f.name] = _READERS[f.type](d.get(f.name))
    return cls(**values)


_KINDS = {"case": Case, "multihop": MultiHopCase, "conflict": ConflictCase, "roundtrip": RoundTripCase}


def case_from_dict(d: dict[str, Any]):
    """Rebuild any case type from its dict; ``d["kind"]`` picks the type (default: :class:`Case`)."""
    kind = d.get("kind", "case")
    if kind not in _KINDS:
        raise InputError(f"unknown case kind {kind!r}")
    return _KINDS[kind].from_dict(d)


# -- free-form input -----------------------------------------------------------------------------------

def _template(prompt: str, subject: str) -> str:
    if "{}" in prompt:
        if prompt.count("{}") != 1:
            raise InputError("the prompt must contain '{}' exactly once")
        return prompt
    at = prompt.rfind(subject)
    if at < 0:
        raise InputError(f"the subject {subject!r} does not occur in the prompt")
    # Literal braces elsewhere in the prompt would break str.format; escape them.
    head = prompt[:at].replace("{", "{{").replace("}", "}}")
    tail = prompt[at + len(subject):].replace("{", "{{").replace("}", "}}")
    return head + "{}" + tail


def prompt_template(prompt: str, subject: str) -> str:
    """The template (``{}`` for the subject) of a typed prompt; see :func:`free_form_case` for the rule."""
    prompt, subject = (prompt or "").strip(), (subject or "").strip()
    if not prompt:
        raise InputError("the prompt is empty")
    if not subject:
        raise InputError("the subject is empty")
    return _template(prompt, subject)


def free_form_case(
    prompt: str,
    subject: str,
    target_new: str,
    target_true: str | None = None,
    *,
    max_tokens: int | None = None,
    tokenizer=None,
    case_id: str = "free-form",
) -> Case:
    """A :class:`Case` from typed-in text, validated with one-line :class:`InputError` messages.

    ``prompt`` either contains ``{}`` for the subject or contains the subject itself, in which case its
    *last* occurrence becomes the slot. The old answer may be left ``None`` and filled later (e.g. with
    the model's greedy answer via :meth:`Case.with_target_true`). With ``max_tokens`` the filled prompt
    plus the new target must fit in that many tokens of ``tokenizer``.
    """
    prompt = (prompt or "").strip()
    subject = (subject or "").strip()
    target_new = (target_new or "").strip()
    if not prompt:
        raise InputError("the prompt is empty")
    if not subject:
        raise InputError("the subject is empty")
    template = _template(prompt, subject)
    if not target_new:
        raise InputError("the new target is empty")
    old = (target_true or "").strip()
    if old and answers_equal(old, target_new):
        raise InputError(f"the new target {target_new!r} equals the current answer")
    filled = template.format(subject)
    if max_tokens is not None:
        if tokenizer is None:
            raise InputError("a token limit needs a tokenizer")
        n = len(tokenizer(filled + " " + target_new, add_special_tokens=False)["input_ids"])
        if n > max_tokens:
            raise InputError(f"the prompt and target are {n} tokens, over the limit of {max_tokens}")
    return Case(id=case_id, relation_id="", relation="", prompt=template, subject=subject, target_true=old,
                targets_new=(target_new,), provenance="free-form")
