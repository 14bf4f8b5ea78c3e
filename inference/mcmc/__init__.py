"""NUTS for any NumPyro program, started at the MAP, returned as an ArviZ DataTree.

:func:`sample` runs the No-U-Turn sampler (NumPyro's kernel) on the potential of a
NumPyro program, the negative log joint density in the unconstrained space of its latent
sites,

.. math::

    U(z) = -\\log p\\big(T(z), y\\big) - \\log\\left|\\det J_T(z)\\right|,

with :math:`T` the transform from the unconstrained space to each site's support.

Initialization (:mod:`gaussmix.inference.mcmc.initialization`). Chains start at the mode
:math:`z^*` with jitter drawn from the Laplace approximation
:math:`\\mathcal{N}(z^*, H^{-1})`, :math:`H = \\nabla^2 U(z^*)` (central differences of
the gradient), which also seeds the mass matrix. The mode is

* ``init`` when given (constrained site values, e.g. a MAP from elsewhere);
* the starting point of the program's sampling hooks when it has one
  (:mod:`gaussmix.inference.sampling_hooks`; for
  :func:`gaussmix.models.gaussian_mixture`, the EM answer, see
  :mod:`gaussmix.inference.mixture_sampling`);
* otherwise the minimum of :math:`U` found by BFGS from NumPyro's ``init_to_median``;
  when that search fails, ``init_to_median`` itself (with a
  :class:`~gaussmix.inference.diagnostics.SamplingWarning`).

A program without any point of finite log density and gradient raises ``ValueError``.

Execution. Three ``jax.jit``-compiled programs do all the work: preparation (NumPyro's
``initialize_model``, the MAP search, the Laplace fit), the chains (warmup and sampling
in one ``lax.scan`` around NumPyro's NUTS step, :mod:`gaussmix.inference.mcmc.chain`) and
post-processing (constrained draws, pointwise log-likelihood, observed values,
:mod:`gaussmix.inference.mcmc.output`). Array arguments of the program are traced, so a
later call with data of the same shapes reuses all three
(:mod:`gaussmix.inference.mcmc.program`; compile time is reported apart from sampling
time in ``sample_stats.attrs``), and gaussmix's persistent compilation cache keeps them
for later processes. Each program evaluates the potential and its gradient in one place
(the preparation's Laplace loop also evaluates the chain starts), so that they are
compiled once per program; small runs, where XLA's compile time dominates, are compiled
with fewer LLVM optimizations (:data:`~gaussmix.inference.mcmc.program.SMALL_WORK`). Chains run one after the other on one device
(``lax.map``): measured on a 2-core CPU this is 2-3x faster than vectorizing them with
``vmap``, whose tree building waits for the slowest chain at every step. With several
host devices, chains are split over them (``shard_map``); on CPU create the devices
before JAX starts with

>>> import numpyro  # doctest: +SKIP
>>> numpyro.set_host_device_count(4)  # doctest: +SKIP

The mass matrix is dense up to 100 unconstrained dimensions and diagonal beyond.

Program-specific steps. The driver (:mod:`gaussmix.inference.mcmc.driver`) knows no
model: a program may register sampling hooks (a starting point, post-processing of the
draws, dimension names;
:func:`~gaussmix.inference.sampling_hooks.register_sampling_hooks`). The mixture
program's hooks relabel its draws (see :mod:`gaussmix.inference.relabel`) to the
labelling of the starting point before anything is summarized; its log-likelihood is
the marginal one (the component index is summed out), so ``arviz_stats.loo`` is right.
:func:`sample_mixture` (from :mod:`gaussmix.inference.mixture_sampling`) adds the
posterior mean of the responsibilities.
"""

import importlib

from gaussmix.inference.mcmc.chain import Draws, NutsSettings
from gaussmix.inference.mcmc.driver import DENSE_MASS_MAX_DIMENSION, sample
from gaussmix.inference.sampling_hooks import SamplingHooks, register_sampling_hooks

__all__ = [
    "DENSE_MASS_MAX_DIMENSION",
    "Draws",
    "NutsSettings",
    "SamplingHooks",
    "posterior_responsibilities",
    "register_sampling_hooks",
    "sample",
    "sample_mixture",
]

# The mixture's public names, kept on this path; their module is built on the driver.
_MIXTURE_NAMES = {
    "posterior_responsibilities": "gaussmix.inference.mixture_sampling",
    "sample_mixture": "gaussmix.inference.mixture_sampling",
}


def __getattr__(name: str):
    if name in _MIXTURE_NAMES:
        return getattr(importlib.import_module(_MIXTURE_NAMES[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
