"""Programs whose location and Jacobian are known in closed form.

The MAP back end differentiates a program's location by forward mode through the whole
NumPyro program. A program may offer its location and Jacobian instead,
``location_jacobian_fn(values, *args, **kwargs) -> (location, {site: jacobian})``, called
with the latent sites' values and then the program's own arguments; each curve site's
Jacobian has shape ``(M, *site_shape)``. The back end then traces the program only for the
rest of the observed site (its scale, mask and further parameters) and takes the location
from ``location_jacobian_fn``: it must be the program's, bit for bit.

Register one with :func:`register_location_jacobian`. A program built with
``functools.partial`` finds the one registered for the function it wraps, called with the
partial's keywords. gaussmix's own peak program :func:`gaussmix.models.peaks.peaks` comes
registered with its closed form, :func:`gaussmix.models.peaks.location_and_jacobian`
(every lineshape, baseline, tie, fixed value, mask and likelihood; tested against forward
mode to 1e-10 of the largest entry). Forward mode carries all P tangents through every
operation of the curve (on P3, one fused kernel of some 60 elementwise operations on
(11, 1000) arrays, each tangent through all three peaks), the closed form computes each
column once: the P3 fit (three Gaussians on a line, 1 000 points, one core, float64)
takes about 17-19 % less CPU with it (0.32-0.33 ms per spectrum against 0.39-0.41 ms,
side by side in one process), with the same iterations, parameters within 2e-12 and RSS
within 5e-16 relative. Its columns are stacked parameter-major, (P, M), as forward
mode's are, so that J^T J reads each contiguously.
``register_location_jacobian(peaks, None)`` (or any program's) returns a program to
forward mode; the compiled fit is keyed by what is registered
(:func:`registered_function`), so a fit after registering compiles anew.

Example:
    >>> import jax.numpy as jnp, numpyro, numpyro.distributions as dist
    >>> def line(x, y):
    ...     slope = numpyro.sample("slope", dist.Normal(0.0, 10.0))
    ...     numpyro.sample("y", dist.Normal(slope * x, 1.0), obs=y)
    >>> register_location_jacobian(
    ...     line, lambda values, x, y: (values["slope"] * x, {"slope": x}))
    >>> fn = location_jacobian_of(line)
    >>> fn({"slope": 2.0}, jnp.arange(3.0), None)[0].tolist()
    [0.0, 2.0, 4.0]
"""

import functools
from collections.abc import Callable

from gaussmix.models.peaks import location_and_jacobian, peaks

__all__ = ["location_jacobian_of", "register_location_jacobian", "registered_function"]

#: Program -> its ``location_jacobian_fn``; the peak program's closed form by default.
_REGISTRY: dict[Callable, Callable] = {peaks: location_and_jacobian}


def register_location_jacobian(program: Callable, location_jacobian_fn: Callable | None) -> None:
    """Register the closed-form location and Jacobian of ``program`` (replacing any
    registered before); None removes it (the program's fits then take forward mode)."""
    if location_jacobian_fn is None:
        _REGISTRY.pop(program, None)
    else:
        _REGISTRY[program] = location_jacobian_fn


def _lookup(program: Callable) -> Callable | None:
    """The function registered for ``program`` itself, or None."""
    try:
        return _REGISTRY.get(program)
    except TypeError:  # an unhashable callable
        return None


def registered_function(program: Callable) -> Callable | None:
    """The function registered for ``program`` (for a keyword-only ``functools.partial``,
    the one registered for the function it wraps), or None.

    The very object :func:`register_location_jacobian` stored, so the same in every call
    (the compiled fit is keyed by it: registering one after a first fit compiles anew
    instead of reusing the forward-mode program).
    """
    found = _lookup(program)
    if found is None and isinstance(program, functools.partial) and not program.args:
        found = registered_function(program.func)
    return found


def location_jacobian_of(program: Callable) -> Callable | None:
    """``fn(values, *args, **kwargs)`` giving the location and Jacobian of ``program``,
    or None when it has none registered (the back end then uses forward mode).

    A ``functools.partial`` of a registered function gets that function's, with the
    partial's keywords bound (a partial with positional arguments gets None).
    """
    found = _lookup(program)
    if found is None and isinstance(program, functools.partial) and not program.args:
        inner = location_jacobian_of(program.func)
        found = None if inner is None else functools.partial(inner, **program.keywords)
    return found
