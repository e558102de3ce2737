"""User-facing errors.

Every failure a user can cause (bad input, missing model, offline hub) raises a subclass of
:class:`EditScopeError` whose message is one readable line. The CLI prints it and exits with 2; the
dashboard shows it in an error box. Anything else is a bug and is allowed to surface as a traceback in
logs (never on the page).
"""


class EditScopeError(Exception):
    """Base class for errors whose message is meant for the user."""


class InputError(EditScopeError, ValueError):
    """The user's input (fact, target, hyper-parameter, prompt) is invalid."""


class ModelNotFoundError(EditScopeError):
    """The named model is neither built in, a local path, nor reachable on the hub."""


class UnsupportedArchitectureError(EditScopeError):
    """The model's architecture has no adapter."""


class CorruptModelError(EditScopeError):
    """A model file exists but cannot be read."""
