"""FT-L: fine-tuning with an L-infinity constraint on the weight change; see :mod:`editcore.methods.ft`."""

from .ft import FTMethod

METHOD = FTMethod("ft_l", constrained=True)
