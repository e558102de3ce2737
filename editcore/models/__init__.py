"""Loading models: built-in offline models, local directories, ``.gguf`` files and hub ids."""

from .arch import SUPPORTED_FAMILIES, ArchAdapter
from .handle import LM
from .registry import BUILTIN, is_prepared, list_models, load_model, prepare

__all__ = ["ArchAdapter", "BUILTIN", "LM", "SUPPORTED_FAMILIES", "is_prepared", "list_models", "load_model", "prepare"]
