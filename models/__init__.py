"""Gaussian mixture and peak models as NumPyro programs."""

import sys

import numpyro
import numpyro.distributions


def _reattach_numpyro_submodules() -> None:
    """Repair numpyro when ArviZ imported it lazily.

    ``arviz_base`` loads numpyro through ``lazy_loader`` (``importlib.util.LazyLoader``).
    When ArviZ is imported first, the lazy module drops the submodule attributes that
    numpyro's package sets while it executes, so ``numpyro.distributions.distribution``
    is missing and ``numpyro.factor`` (used by NUTS initialization) raises
    AttributeError. Re-attach each loaded numpyro submodule to its parent package.
    """
    for name, module in list(sys.modules.items()):
        if module is None or not name.startswith("numpyro."):
            continue
        parent_name, _, child = name.rpartition(".")
        parent = sys.modules.get(parent_name)
        if parent is not None and not hasattr(parent, child):
            setattr(parent, child, module)


_reattach_numpyro_submodules()
del numpyro
