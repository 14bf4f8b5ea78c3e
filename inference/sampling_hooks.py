"""What a NumPyro program may add to the generic NUTS driver: a small hook protocol.

:func:`gaussmix.inference.mcmc.sample` knows no model. A program that needs more than the
generic path (a better starting point than the BFGS search of the mode, draws to
post-process, named dimensions) registers a *hooks function* for itself:

.. code-block:: python

    register_sampling_hooks(program, hooks_fn)

``hooks_fn(args, kwargs)`` is called once per :func:`~gaussmix.inference.mcmc.sample`
call, with the program's concrete arguments, before anything is traced: it checks them
(a ``ValueError`` stops the call) and returns a :class:`SamplingHooks` whose functions
close over what they need. A fixed :class:`SamplingHooks` may be registered instead of a
function. Every hook is optional; the driver calls them in this order:

1. ``initial_values_fn(seed)`` when the caller passed no ``init``: constrained site
   values to start the chains from (the mode), or ``None`` for the generic search.
   ``seed`` is the integer seed of the call (0 when a JAX key was given). The values are
   trusted: they must name the program's sites.
2. ``postprocess_fn(samples, start, source)`` after the chains: ``samples`` maps each
   site to its (chain, draw, ...) constrained draws (NumPy), ``start`` the constrained
   point the chains started from (``init``, the hook's values or the mode found), and
   ``source`` how it was found (``sample_stats.attrs["init"]``). Returns
   :class:`PostprocessedDraws`: the draws to store (e.g. relabeled), attributes of the
   ``posterior`` group and further groups of the DataTree.
3. ``dims_fn(samples, observed)``: site -> names of its dimensions after (chain, draw),
   for the draws returned by ``postprocess_fn`` and the observed sites; by default
   ArviZ's ``infer_dims`` reads them from the program's plates.

``potential_fn_gen``, when given, replaces NumPyro's potential energy of the program in
the preparation and the chains: ``potential_fn_gen(*args, **kwargs)`` (the traced
arguments) returns :math:`U` of the dict of unconstrained site values. It must be the
same function, in the same unconstrained coordinates (a closed form that compiles to a
smaller program); everything else (starting point, log-likelihood, constrained draws)
still reads the program.

The mixture program's hooks (EM start, relabeling, dimension names) live in
:mod:`gaussmix.inference.mixture_sampling`. Models may not import inference code, so a
program provided by gaussmix is mapped here to the module that registers its hooks
(:data:`PROVIDERS`), imported the first time the program is sampled.

Example:
    >>> import numpy as np, numpyro, numpyro.distributions as dist
    >>> def model(y):
    ...     loc = numpyro.sample("loc", dist.Normal(0.0, 10.0))
    ...     numpyro.sample("y", dist.Normal(loc, 1.0), obs=y)
    >>> register_sampling_hooks(
    ...     model, SamplingHooks(initial_values_fn=lambda seed: {"loc": np.asarray(3.0)}))
    >>> hooks = sampling_hooks(model, (np.ones(5),), {})
    >>> hooks.initial_values_fn(0)
    {'loc': array(3.)}
"""

import importlib
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

__all__ = [
    "PROVIDERS",
    "PostprocessedDraws",
    "SamplingHooks",
    "register_sampling_hooks",
    "sampling_hooks",
]


class PostprocessedDraws(NamedTuple):
    """What ``postprocess_fn`` returns.

    Attributes:
        samples: site -> (chain, draw, ...) draws to store in ``posterior``.
        posterior_attrs: attributes added to the ``posterior`` group.
        groups: name -> ``xarray.Dataset``, further groups of the DataTree.
    """

    samples: dict
    posterior_attrs: dict
    groups: dict


class SamplingHooks(NamedTuple):
    """A program's additions to the generic NUTS driver; every field is optional.

    Attributes:
        initial_values_fn: ``seed -> {site: constrained value} | None``, the starting
            point when the caller gives no ``init``.
        initial_values_label: ``sample_stats.attrs["init"]`` when the chains start at
            the values of ``initial_values_fn``.
        postprocess_fn: ``(samples, start, source) -> PostprocessedDraws``.
        dims_fn: ``(samples, observed) -> {site: [dimension names]}``.
        potential_fn_gen: ``(*args, **kwargs) -> potential``, the program's potential
            energy of its unconstrained site values in closed form (used in place of
            NumPyro's by the preparation and the chains).
    """

    initial_values_fn: Callable[[int], Mapping[str, Any] | None] | None = None
    initial_values_label: str = "hooks"
    postprocess_fn: Callable[[dict, Mapping, str], PostprocessedDraws] | None = None
    dims_fn: Callable[[Mapping, tuple], dict] | None = None
    potential_fn_gen: Callable[..., Callable] | None = None


#: program -> hooks function ``(args, kwargs) -> SamplingHooks``.
_REGISTRY: dict = {}

#: ``(module, qualified name)`` of a gaussmix program -> module that registers its hooks.
PROVIDERS = {
    ("gaussmix.models.mixture", "gaussian_mixture"): "gaussmix.inference.mixture_sampling",
    ("gaussmix.models.dirichlet_mixture", "dirichlet_process_mixture"): (
        "gaussmix.inference.dirichlet_sampling"
    ),
    ("gaussmix.models.dirichlet_mixture", "dirichlet_mixture"): (
        "gaussmix.inference.dirichlet_sampling"
    ),
}


def register_sampling_hooks(
    program: Callable,
    hooks: SamplingHooks | Callable[[tuple, dict], SamplingHooks],
) -> None:
    """Register the sampling hooks of ``program`` (replacing any registered before).

    Args:
        program: the NumPyro program (the callable passed to ``sample``).
        hooks: a :class:`SamplingHooks`, or ``hooks_fn(args, kwargs) -> SamplingHooks``
            called with the program's concrete arguments at each ``sample`` call.

    Raises:
        ValueError: ``hooks`` is neither.
    """
    if isinstance(hooks, SamplingHooks):
        fixed = hooks

        def hooks(args, kwargs):
            return fixed

    elif not callable(hooks):
        raise ValueError(
            f"hooks must be a SamplingHooks or a function (args, kwargs) -> SamplingHooks, "
            f"got {type(hooks).__name__}."
        )
    _REGISTRY[program] = hooks


def _hooks_function(program: Callable) -> Callable | None:
    try:
        hooks_fn = _REGISTRY.get(program)
    except TypeError:  # an unhashable callable registers nothing
        return None
    if hooks_fn is not None:
        return hooks_fn
    provider = PROVIDERS.get(
        (getattr(program, "__module__", None), getattr(program, "__qualname__", None))
    )
    if provider is None:
        return None
    importlib.import_module(provider)  # registers the program's hooks
    return _REGISTRY.get(program)


def sampling_hooks(program: Callable, args: tuple, kwargs: dict) -> SamplingHooks | None:
    """The hooks of ``program`` for these arguments, or None when it has none.

    Args:
        program: the NumPyro program.
        args: its positional arguments (concrete values).
        kwargs: its keyword arguments.

    Raises:
        ValueError: the program's hooks function refused the arguments.
    """
    hooks_fn = _hooks_function(program)
    return None if hooks_fn is None else hooks_fn(args, kwargs)
