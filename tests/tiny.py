"""Tiny random models of every supported family, built offline from configs (no hub).

They are for behaviour tests: shapes, restoring, hooks, maths identities. Their outputs are noise.
"""

from __future__ import annotations

import functools

import torch

CORPUS = [
    "The Louvre is located in the city of Paris.",
    "The Eiffel Tower is located in Paris, France.",
    "Big Ben stands in London by the Thames.",
    "The capital of Japan is Tokyo.",
    "Danielle Darrieux's mother tongue is French.",
    "Windows 11 is developed by Microsoft.",
    "The Colosseum is in Rome, Italy. Berlin is in Germany.",
    "He plays the piano and the guitar. She speaks English and Spanish.",
]


@functools.lru_cache(maxsize=4)
def tokenizer(bos: bool = False):
    """A byte-level BPE trained on a few sentences, wrapped as a HF fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<pad>", "<bos>", "<eos>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS * 4, trainer)
    if bos:
        tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<bos>", eos_token="<eos>")


def config(family: str, vocab_size: int, n_layers: int = 3, **extra):
    """A tiny config; ``extra`` goes to the llama-like families (e.g. ``sliding_window``)."""
    import transformers as T

    common = dict(vocab_size=vocab_size)
    if family == "gpt2":
        return T.GPT2Config(n_layer=n_layers, n_embd=32, n_head=2, n_positions=128, **common)
    if family == "gptj":
        return T.GPTJConfig(n_layer=n_layers, n_embd=32, n_head=2, rotary_dim=8, n_positions=128, **common)
    if family == "gpt_neox":
        return T.GPTNeoXConfig(num_hidden_layers=n_layers, hidden_size=32, num_attention_heads=2,
                               intermediate_size=64, max_position_embeddings=128, **common)
    llama_like = dict(num_hidden_layers=n_layers, hidden_size=32, num_attention_heads=2, num_key_value_heads=1,
                      intermediate_size=48, max_position_embeddings=128, **common)
    llama_like.update(extra)  # extra may override a default, e.g. a longer context
    if family == "llama":
        return T.LlamaConfig(**llama_like)
    if family == "mistral":
        return T.MistralConfig(**llama_like)
    if family == "qwen2":
        return T.Qwen2Config(**llama_like)
    if family == "gemma2":
        return T.Gemma2Config(head_dim=16, **llama_like)
    if family == "gemma3":
        return T.Gemma3TextConfig(head_dim=16, **llama_like)
    raise ValueError(family)


FAMILIES = ("gpt2", "gptj", "gpt_neox", "llama", "mistral", "qwen2", "gemma2", "gemma3")


def model(family: str = "gpt2", seed: int = 0, n_layers: int = 3, bos: bool | None = None, **extra):
    """``(model, tokenizer)`` with random weights; Gemma variants get a BOS-adding tokenizer like Gemma's."""
    from transformers import AutoModelForCausalLM

    tok = tokenizer(bos=family.startswith("gemma") if bos is None else bos)
    torch.manual_seed(seed)
    m = AutoModelForCausalLM.from_config(config(family, len(tok), n_layers, **extra))
    m.eval()
    return m, tok


def lm(family: str = "gpt2", seed: int = 0, n_layers: int = 3, **extra):
    """An :class:`editcore.models.LM` around a tiny random model."""
    from editcore.models import LM

    m, tok = model(family, seed, n_layers, **extra)
    return LM.from_model(m, tok, name=f"tiny-{family}")


DASHBOARD_FAMILIES = ("gpt2", "llama", "gemma3")  # offered in the dashboard's model picker by its tests


def register_models(n_layers: int = 3) -> None:
    """Offer tiny-gpt2 (the default), tiny-llama and tiny-gemma3 in the dashboard through the service."""
    from editcore import service

    for family in DASHBOARD_FAMILIES:
        service.register_model(f"tiny-{family}", functools.partial(lm, family, n_layers=n_layers))


def unregister_models() -> None:
    from editcore import service

    for family in DASHBOARD_FAMILIES:
        service.unregister_model(f"tiny-{family}")


# Training settings that make a trainable method's component in seconds on a tiny model (only the fields the
# method's TrainHparams has are used): the registry-wide tests train one on the fly, in their private home.
TINY_TRAINING = {
    "sources": ["catalog"],
    # MEND's hypernetwork
    "steps": 2, "batch_edits": 2, "val_every": 2, "n_val": 2, "rank": 8, "checkpoint_every": 2,
    "known_only": False, "holdout": "none",
    # KE's condition and heads (with "hidden" below)
    "lstm_hidden": 8, "d_cond": 16,
    # SERAC's scope classifier, over the deterministic test encoder (no model to load)
    "encoder": "hashed-bow", "max_facts": 120, "hidden": 16, "epochs": 2,
}


def train_if_needed(lm, method) -> None:
    """Train ``method``'s component for ``lm`` (e.g. MEND's hypernetwork) unless it needs none or has one."""
    from editcore.methods.base import needs_training

    if not needs_training(method) or method.trained(lm) is not None:
        return
    method.train(lm, training_hparams(method))


def training_hparams(method, **over):
    """``method``'s training settings for a tiny model: :data:`TINY_TRAINING` where it has the field, then
    ``over``."""
    import dataclasses

    from editcore.methods.base import load_hparams

    fields = {f.name for f in dataclasses.fields(method.TrainHparams)}
    return load_hparams(method.name, method.TrainHparams, None,
                        {**{k: v for k, v in TINY_TRAINING.items() if k in fields}, **over}, prefix="train_")


def nll_grad(lm, prompt: str, target: str, param: str):
    """d(mean NLL of ``target`` after ``prompt``)/d(``param``) by plain autograd (what the hyper-network editors'
    gradient factors must rebuild)."""
    import torch

    from editcore.methods.mend.factors import make_batch

    batch = make_batch(lm, [(prompt, target)])
    part = batch.parts[0]
    p = dict(lm.model.named_parameters())[param]
    p.requires_grad_(True)
    try:
        h = lm.model.base_model(input_ids=part.ids, attention_mask=part.mask, use_cache=False).last_hidden_state
        logits = lm.adapter.logits(h[0, batch.pos]).float().log_softmax(-1)
        loss = -logits.gather(1, batch.labels[:, None]).mean()
        return torch.autograd.grad(loss, p)[0]
    finally:
        p.requires_grad_(False)
