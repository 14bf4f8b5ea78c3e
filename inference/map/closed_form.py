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
partial's keywords. The peak program has one,
:func:`gaussmix.models.peaks.location_and_jacobian`, tested against forward mode, but it is
not registered by default. It once ran 1.5x slower than forward mode on P3 (one core,
float64): its columns were concatenated into an (M, P) matrix, which XLA stored
point-major, so that J^T J read it across; built (P, M) as forward mode's is, it runs
0.44-0.47 ms of CPU per spectrum against forward mode's 0.48-0.56 (interleaved, on a
loaded machine) and agrees with it to 3e-12. Register it with
``register_location_jacobian(peaks, location_and_jacobian)``; the compiled fit is keyed
by what is registered (:func:`registered_function`), so a fit after registering compiles
anew.

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

__all__ = ["location_jacobian_of", "register_location_jacobian", "registered_function"]

_REGISTRY: dict[Callable, Callable] = {}


def register_location_jacobian(program: Callable, location_jacobian_fn: Callable) -> None:
    """Register the closed-form location and Jacobian of ``program`` (replacing any
    registered before)."""
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
