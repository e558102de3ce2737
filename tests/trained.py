"""Quick training for the methods that need it (:class:`editcore.methods.base.Trainable`), so the
registry-wide tests can run them on tiny models in a private home without any pre-trained artefact."""

from editcore.methods.base import load_hparams, needs_training

# Settings that train in seconds, applied only to fields a method's training settings have.
TINY_TRAINING = {
    "encoder": "hashed-bow",  # SERAC: the deterministic test encoder, no model to load
    "sources": ["catalog"],
    "max_facts": 120,
    "hidden": 16,
    "epochs": 2,
}


def prepare(method, lm) -> None:
    """Train what ``method`` needs for ``lm`` (nothing for a method that needs no training)."""
    if not needs_training(method):
        return
    fields = set(method.TrainHparams.__dataclass_fields__)
    small = {k: v for k, v in TINY_TRAINING.items() if k in fields}
    method.train(lm, load_hparams(method.name, method.TrainHparams, None, small, prefix="train_"))
