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

# Imported after the repair above: both modules use numpyro.distributions.
from gaussmix.models.mixture import gaussian_mixture  # noqa: E402
from gaussmix.models.peaks import peaks  # noqa: E402

__all__ = ["gaussian_mixture", "peaks"]
