"""Programs whose location, Jacobian, priors and observed site are known in closed form.

The MAP back end reads a NumPyro program by tracing it: the priors of its latent sites
(once per spectrum), its observed site's distribution (at every step) and the location's
Jacobian (by forward mode through the whole program). A program may offer any of these
instead, as a :class:`ClosedForm`, whose functions are called with their own leading
arguments and then the program's ``(x, y, **kwargs)``, and must give what the program
computes, bit for bit:

* ``location_jacobian(values, x, y, **kwargs) -> (location, {site: jacobian})``, each
  curve site's Jacobian of shape ``(M, *site_shape)``;
* ``priors(x, y, **kwargs) -> {site: prior}`` (or None where these arguments need a
  trace), priors with NumPyro's ``log_prob`` and ``support`` that are JAX pytrees;
* ``observation(values, x, y, **kwargs) -> (location, scale, extra, mask)``, the observed
  distribution's parameters.

Register one with :func:`register_closed_form` (or only the location and Jacobian with
:func:`register_location_jacobian`). A program built with ``functools.partial`` finds the
one registered for the function it wraps, called with the partial's keywords.

gaussmix's own peak program :func:`gaussmix.models.peaks.peaks` comes registered with
:data:`PEAKS_CLOSED_FORM`: :func:`~gaussmix.models.peaks.location_and_jacobian`,
:func:`~gaussmix.models.peaks.latent_priors` (its default priors as
:mod:`gaussmix.models.peak_priors` boxes; None where the caller gave NumPyro priors) and
:func:`~gaussmix.models.peaks.observed_parts`, so that a fit with the default priors
neither imports nor traces NumPyro (tested equal to the trace for every lineshape,
baseline, tie, fixed value, mask and likelihood). The first call of ``fit_peaks`` in a
fresh process with an empty compilation cache then skips NumPyro's import (about 0.27 s)
and the tracing of its handlers and distributions.

The closed-form Jacobian (tested against forward mode to 1e-10 of the largest entry):
forward mode carries all P tangents through every
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
from typing import NamedTuple

from gaussmix.models.peaks import latent_priors, location_and_jacobian, observed_parts, peaks

__all__ = [
    "PEAKS_CLOSED_FORM",
    "ClosedForm",
    "closed_form_of",
    "location_jacobian_of",
    "register_closed_form",
    "register_location_jacobian",
    "registered_function",
]


class ClosedForm(NamedTuple):
    """What a program offers the MAP back end in place of a trace; each part may be None
    (the back end then reads it from a trace, or forward mode, as without a closed form).

    Each function is called with its leading arguments and then the program's own
    ``(x, y, **kwargs)``, and must give what the program computes, bit for bit.

    Attributes:
        location_jacobian: ``(values, x, y, **kwargs) -> (location, {site: jacobian})``,
            the observed site's (M,) location and its derivative by every curve site.
        priors: ``(x, y, **kwargs) -> {site: prior}`` for every latent site, or None when
            these arguments need a trace (a caller's NumPyro priors, say). A prior has
            NumPyro's ``log_prob(value)`` and ``support(value)`` and is a pytree (as
            :class:`gaussmix.models.peak_priors.UniformPrior`); it may depend on the data,
            not on the latent sites.
        observation: ``(values, x, y, **kwargs) -> (location, scale, extra, mask)``: the
            observed distribution's parameters as its family's ``split_fn`` reads them
            from the distribution (scale None for Poisson; ``extra`` the StudentT degrees
            of freedom, else ``()``), and the mask of ``handlers.mask`` (or None).
    """

    location_jacobian: Callable | None = None
    priors: Callable | None = None
    observation: Callable | None = None


#: The closed form of gaussmix's peak program, :func:`gaussmix.models.peaks.peaks`.
PEAKS_CLOSED_FORM = ClosedForm(location_and_jacobian, latent_priors, observed_parts)

#: Program -> its :class:`ClosedForm`; the peak program's by default.
_REGISTRY: dict[Callable, ClosedForm] = {peaks: PEAKS_CLOSED_FORM}


def register_closed_form(program: Callable, closed_form: ClosedForm | None) -> None:
    """Register the :class:`ClosedForm` of ``program`` (replacing any registered before);
    None, or one without any part, removes it (the program is then traced)."""
    if closed_form is None or closed_form == ClosedForm():
        _REGISTRY.pop(program, None)
    else:
        _REGISTRY[program] = ClosedForm(*closed_form)


def register_location_jacobian(program: Callable, location_jacobian_fn: Callable | None) -> None:
    """Register the closed-form location and Jacobian of ``program`` (replacing the one
    registered before, keeping the other parts of its :class:`ClosedForm`); None removes
    it (the program's fits then take forward mode)."""
    registered = _lookup(program) or ClosedForm()
    register_closed_form(program, registered._replace(location_jacobian=location_jacobian_fn))


def _lookup(program: Callable) -> ClosedForm | None:
    """The closed form registered for ``program`` itself, or None."""
    try:
        return _REGISTRY.get(program)
    except TypeError:  # an unhashable callable
        return None


def registered_function(program: Callable) -> ClosedForm | None:
    """The :class:`ClosedForm` registered for ``program`` (for a keyword-only
    ``functools.partial``, the one registered for the function it wraps), or None.

    The very object :func:`register_closed_form` stored, so the same in every call: the
    compiled fit is keyed by it (a static argument, and its
    :func:`~gaussmix.inference.program_keys.fingerprint` on disk), so that registering
    one after a first fit compiles anew instead of reusing the traced program.
    """
    found = _lookup(program)
    if found is None and isinstance(program, functools.partial) and not program.args:
        found = registered_function(program.func)
    return found


def closed_form_of(program: Callable) -> ClosedForm | None:
    """The :class:`ClosedForm` of ``program`` with its functions ready to call, or None.

    A ``functools.partial`` of a registered function gets that function's, each part
    with the partial's keywords bound (a partial with positional arguments gets None).
    """
    found = _lookup(program)
    if found is None and isinstance(program, functools.partial) and not program.args:
        inner = closed_form_of(program.func)
        if inner is not None:
            found = ClosedForm(
                *(None if fn is None else functools.partial(fn, **program.keywords) for fn in inner)
            )
    return found


def location_jacobian_of(program: Callable) -> Callable | None:
    """``fn(values, *args, **kwargs)`` giving the location and Jacobian of ``program``,
    or None when it has none registered (the back end then uses forward mode).

    A ``functools.partial`` of a registered function gets that function's, with the
    partial's keywords bound (a partial with positional arguments gets None).
    """
    found = closed_form_of(program)
    return None if found is None else found.location_jacobian
