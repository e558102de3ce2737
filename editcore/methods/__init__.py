"""Registry of editing methods: ``get_method("rome")``; see :mod:`editcore.methods.base` for the contract."""

from __future__ import annotations

import importlib

from ..errors import InputError

# name -> module that defines ``METHOD``. Add a line here when a method lands.
_MODULES: dict[str, str] = {
    "alphaedit": "editcore.methods.alphaedit",
    "calinet": "editcore.methods.calinet",
    "deepedit": "editcore.methods.deepedit",
    "emmet": "editcore.methods.emmet",
    "ft": "editcore.methods.ft",
    "ft_l": "editcore.methods.ft_l",
    "ft_l_easyedit": "editcore.methods.ft_l_easyedit",
    "grace": "editcore.methods.grace",
    "ike": "editcore.methods.ike",
    "ke": "editcore.methods.ke",
    "kn": "editcore.methods.kn",
    "kn_easyedit": "editcore.methods.kn_easyedit",
    "malmen": "editcore.methods.malmen",
    "melo": "editcore.methods.melo",
    "mello": "editcore.methods.mello",
    "mend": "editcore.methods.mend",
    "memit": "editcore.methods.memit",
    "pmet": "editcore.methods.pmet",
    "rome": "editcore.methods.rome",
    "serac": "editcore.methods.serac",
    "t_patcher": "editcore.methods.t_patcher",
    "wise": "editcore.methods.wise",
}


def available() -> list[str]:
    return sorted(_MODULES)


def get_method(name: str):
    key = (name or "").strip().lower()
    if key not in _MODULES:
        raise InputError(f"unknown method {name!r}; available: {', '.join(available()) or 'none yet'}")
    return importlib.import_module(_MODULES[key]).METHOD
