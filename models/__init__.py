"""Gaussian mixture and peak models as NumPyro programs.

The package exports the two programs of gaussmix's public contract::

    from gaussmix.models import gaussian_mixture, peaks

:func:`gaussian_mixture` (sites ``weights``, ``means`` and the covariance site of its
``covariance_type``; observed ``x``) and :func:`peaks` (sites ``peak{i}_{parameter}``,
``baseline_*``, ``sigma``; observed ``y``). The name ``peaks`` is the program: its module
stays reachable as ``from gaussmix.models.peaks import ...``. The pure JAX functions they
use live in :mod:`gaussmix.models.lineshapes`, :mod:`gaussmix.models.priors` and the
modules ``mixture`` and ``peaks``.
"""

import importlib
import sys


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


def load_numpyro():
    """``numpyro``, imported and repaired (:func:`_reattach_numpyro_submodules`).

    gaussmix imports NumPyro where it builds or reads a NumPyro object (a program's trace,
    a prior), not when it is imported: a fit whose compiled program is found in the
    cache needs none, and NumPyro's import (SciPy's, mostly) would be a third of its time.
    """
    import numpyro
    import numpyro.distributions

    _reattach_numpyro_submodules()
    return numpyro


if "numpyro" in sys.modules:  # imported already (by the user, or lazily by ArviZ)
    load_numpyro()

# The peak program's module imports NumPyro only when a program runs; the mixture's
# imports it with the module, on first use of the name (PEP 562).
from gaussmix.models.peaks import peaks  # noqa: E402

__all__ = ["gaussian_mixture", "peaks"]


def __getattr__(name: str):
    if name == "gaussian_mixture":
        program = importlib.import_module("gaussmix.models.mixture").gaussian_mixture
        load_numpyro()
        return program
    raise AttributeError(f"module 'gaussmix.models' has no attribute {name!r}")
