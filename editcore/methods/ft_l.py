"""FT-L: fine-tuning with an L-infinity constraint on the weight change; see :mod:`editcore.methods.ft`."""

from .ft import FT

METHOD = FT("ft_l", constrained=True)
