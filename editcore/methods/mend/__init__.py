"""MEND (Mitchell et al. 2022a, "Fast Model Editing at Scale"): a hypernetwork trained once per model maps the
rank-one factors of an edit's fine-tuning gradient to a weight update.

* :mod:`.hypernet` — the network (normalisation, low-rank residual layers, shared per shape, learned step sizes);
* :mod:`.factors` — reading the factors (base pass) and running the model with an update (post pass);
* :mod:`.data` — edit / equivalence / locality examples from the catalog and the public benchmarks;
* :mod:`.training` — the training loop, validation curve and checkpoints; :mod:`.store` — the artefacts;
* :mod:`.trainer` — the loop shared with KE and MALMEN; :mod:`.trainable` — the trainable contract and
  ``compute`` they share; :mod:`.method` — MEND's settings.

"The edited model" for MEND is the base model with the update added to the weights of its last MLP layers,
like any weight-editing method; the hypernetwork is only used to compute it.
"""

from .method import METHOD, Mend, MendHparams, MendTrainHparams
from .trainable import edit_targets

__all__ = ["METHOD", "Mend", "MendHparams", "MendTrainHparams", "edit_targets"]
