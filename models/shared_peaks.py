"""Peaks across a batch as one NumPyro program: shared and pooled parameters.

B spectra on common abscissae, each the peak model of :func:`gaussmix.models.peaks.peaks`
(same lineshapes, baseline, likelihood, ties and fixed values):

.. math::

    y_{bm} \\sim \\mathcal{N}\\big(f(x_m; \\theta_b, \\phi), \\sigma_b\\big), \\qquad
    \\theta_{bj} = \\mu_j + \\tau_j z_{bj},\\; z_{bj} \\sim \\mathcal{N}(0, 1)
    \\text{ for a pooled } j,

with :math:`\\phi` the shared parameters (one value for the batch), :math:`\\theta_b`
the spectrum's own (sampled in a plate over spectra), and for each pooled parameter a
population mean :math:`\\mu_j` and spread :math:`\\tau_j`, sites ``{name}_mu`` and
``{name}_tau``. Non-centred by default: the site ``{name}_z`` (B,) and ``{name}``
deterministic, the geometry NUTS needs where the data say little about each spectrum's
value (Betancourt & Girolami 2015); where they pin it (a centre known to 1 % of the
population's spread), the non-centred posterior is a narrow curved ridge and the centred
form ``{name}`` (B,) ~ Normal(mu, tau) samples better: ``centered`` names those.

Priors. A spectrum's own parameters take the one-spectrum defaults of
:func:`gaussmix.models.peaks.default_priors` on that spectrum's data ranges (or the
user's). A shared parameter takes the user's prior, or the default on the batch's ranges
(the lowest and highest y of all spectra): :func:`batch_priors`, which the MAP of
``fit_peaks(..., shared=...)`` reads too (its objective is minus this program's log
density, where nothing is pooled). A pooled parameter with default box
:math:`[a, b]` on the batch's ranges (its kind's box, e.g. the x range for a centre, (0,
10 Y) for a height) takes the weakly informative hyperpriors

.. math::

    \\mu_j \\sim \\mathcal{N}\\big(\\tfrac{a+b}{2}, \\tfrac{b-a}{2}\\big), \\qquad
    \\tau_j \\sim \\mathrm{HalfNormal}\\big(\\tfrac{b-a}{4}\\big).

Only parameters on the whole real line can be pooled (centres, heights, areas, skews,
baseline coefficients): a Normal population would put mass outside a width's or a
fraction's support. The noise is per spectrum, or one for the batch when ``"sigma"`` is
shared.
"""

import contextlib
from collections.abc import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from jax.typing import ArrayLike
from numpyro import handlers
from numpyro.distributions import constraints

from gaussmix.models.peaks import (
    NOISE_SITE,
    check_program_inputs,
    data_ranges,
    default_priors,
    derived_quantities,
    mean_curve,
    peak_model,
    program_priors,
    resolve_parameters,
    site_support,
)

__all__ = ["batch_priors", "check_pooled_support", "hyperpriors", "shared_peaks"]


def check_pooled_support(model, pooled: Sequence[str]) -> None:
    """Refuse a pooled parameter whose support is not the real line."""
    for name in pooled:
        if site_support(model, name) is not constraints.real:
            raise ValueError(
                f"pooled names {name!r}, which lives on {site_support(model, name)}: a Normal "
                "population would leave its support. Pool centres, heights, areas or "
                "baseline coefficients; share a width instead, or leave it per spectrum."
            )


def batch_priors(
    model,
    x_range: tuple[ArrayLike, ArrayLike],
    y_range: tuple[ArrayLike, ArrayLike],
    priors: Mapping[str, dist.Distribution],
    default_priors_fn: Callable = default_priors,
) -> dict[str, dist.Distribution]:
    """The prior of every latent site on the whole batch: what a shared site takes, and
    the box a pooled site's hyperpriors come from (:func:`hyperpriors`).

    The user's ``priors``, else the default on the batch's ranges: x's, and y from the
    lowest of the spectra's lows to the highest of their highs. The MAP of
    ``fit_peaks(..., shared=...)`` reads its shared sites' priors from here too (with
    ``default_priors_fn`` the NumPy twin of :func:`~gaussmix.models.peaks.default_priors`).

    Args:
        model: the :class:`~gaussmix.models.peaks.PeakModel`.
        x_range: (low, high) of x.
        y_range: ((B,) lows, (B,) highs) of the spectra.
        priors: site name -> the user's prior (checked).
        default_priors_fn: ``(model, x_range, y_range) -> dict`` of default priors.
    """
    y_low, y_high = y_range
    site_priors = default_priors_fn(model, x_range, (y_low.min(), y_high.max()))
    site_priors.update(priors)
    return site_priors


def hyperpriors(box: dist.Uniform) -> tuple[dist.Distribution, dist.Distribution]:
    """(mu prior, tau prior) from a parameter's default box [a, b] (module docstring)."""
    middle, half = (box.low + box.high) / 2, (box.high - box.low) / 2
    return dist.Normal(middle, half), dist.HalfNormal(half / 2)


def shared_peaks(
    x: ArrayLike,
    y: ArrayLike | None = None,
    *,
    lineshapes: str | tuple[str, ...] = ("gaussian",),
    baseline: str | int | None = None,
    likelihood: str = "normal",
    degrees_of_freedom: ArrayLike = 4.0,
    priors: Mapping[str, dist.Distribution] | None = None,
    ties: Mapping[str, str] | None = None,
    fixed: Mapping[str, ArrayLike] | None = None,
    mask: ArrayLike | None = None,
    shared: tuple[str, ...] = (),
    pooled: tuple[str, ...] = (),
    centered: tuple[str, ...] = (),
    y_range: tuple[ArrayLike, ArrayLike] | None = None,
    n_spectra: int | None = None,
) -> None:
    """Peaks on a batch with shared and pooled parameters (see the module docstring).

    Args:
        x: (M,) abscissae.
        y: (B, M) spectra, or None to simulate (then give ``y_range`` (low, high) of
            arrays (B,) and ``n_spectra``).
        lineshapes, baseline, likelihood, degrees_of_freedom, priors, ties, fixed: as for
            :func:`gaussmix.models.peaks.peaks` (a prior applies to every spectrum, or
            once to a shared parameter).
        mask: (B, M) booleans, False drops a point.
        shared: names of free parameters (or ``"sigma"``) with one value for the batch.
        pooled: names of real-valued free parameters drawn from a population.
        centered: the pooled names sampled centred (the others non-centred).
        y_range: ((B,), (B,)) data ranges setting the default priors without y.
        n_spectra: B, when y is None.

    Example:
        >>> import jax, numpy as np
        >>> from numpyro.infer import Predictive
        >>> x = np.linspace(0.0, 10.0, 30)
        >>> draws = Predictive(shared_peaks, num_samples=2)(
        ...     jax.random.key(0), x, lineshapes=("gaussian",), shared=("peak0_sigma",),
        ...     pooled=("peak0_center",), y_range=(np.zeros(3), np.ones(3)), n_spectra=3)
        >>> draws["y"].shape, draws["peak0_sigma"].shape, draws["peak0_center"].shape
        ((2, 3, 30), (2,), (2, 3))
    """
    model = peak_model(lineshapes, baseline, likelihood, ties, fixed or {})
    if y is None and n_spectra is None:
        raise ValueError("Without data y, give n_spectra (and y_range of (B,) lows and highs).")
    x, y, mask, user_priors = check_program_inputs(
        model, x, y, mask, priors=priors, fixed=fixed, degrees_of_freedom=degrees_of_freedom,
        y_range=y_range, n_spectra=n_spectra if y is None else (np.shape(y) or (0,))[0],
    )  # fmt: skip
    check_pooled_support(model, pooled)
    if y is not None:
        n_spectra = y.shape[0]
    x_low, x_high, y_low, y_high = data_ranges(x, y, mask, y_range)
    own_priors = program_priors(model, (x_low, x_high), (y_low, y_high), user_priors)
    batch = batch_priors(model, (x_low, x_high), (y_low, y_high), user_priors)

    free = {}
    for name in model.free_names:
        if name in shared:
            free[name] = numpyro.sample(name, batch[name])
    for name in pooled:
        mu_prior, tau_prior = hyperpriors(batch[name])
        free[name] = (
            numpyro.sample(name + "_mu", mu_prior),
            numpyro.sample(name + "_tau", tau_prior),
        )
    with numpyro.plate("spectra", n_spectra, dim=-1):
        for name in model.free_names:
            if name in pooled and name in centered:
                mu, tau = free[name]
                free[name] = numpyro.sample(name, dist.Normal(mu, tau))
            elif name in pooled:
                mu, tau = free[name]
                z = numpyro.sample(name + "_z", dist.Normal(jnp.zeros((), x.dtype), 1.0))
                free[name] = numpyro.deterministic(name, mu + tau * z)
            elif name not in shared:
                free[name] = numpyro.sample(name, own_priors[name])
    fixed_values = {name: jnp.asarray((fixed or {})[name], x.dtype) for name in model.fixed}
    free = {name: jnp.broadcast_to(value, (n_spectra,)) for name, value in free.items()}
    params = resolve_parameters(model, free, fixed_values)
    params = {name: jnp.broadcast_to(value, (n_spectra,)) for name, value in params.items()}
    for name, _ in model.ties:
        numpyro.deterministic(name, params[name])
    for name, value in derived_quantities(model, params).items():
        numpyro.deterministic(name, value)
    mean = jax.vmap(lambda one: mean_curve(x, model, one))(params)  # (B, M)

    if model.has_noise:
        if NOISE_SITE in shared:
            noise = numpyro.sample(NOISE_SITE, batch[NOISE_SITE])
        else:
            with numpyro.plate("spectra", n_spectra, dim=-1):
                noise = numpyro.sample(NOISE_SITE, own_priors[NOISE_SITE])
        noise = jnp.broadcast_to(noise, (n_spectra,))[:, None]
        if model.likelihood == "normal":
            observation = dist.Normal(mean, noise)
        else:
            observation = dist.StudentT(jnp.asarray(degrees_of_freedom, x.dtype), mean, noise)
    else:
        observation = dist.Poisson(jnp.maximum(mean, jnp.finfo(x.dtype).tiny))
    with numpyro.plate("spectra", n_spectra, dim=-2), numpyro.plate("points", x.shape[0], dim=-1):
        context = (
            handlers.mask(mask=jnp.asarray(mask, bool))
            if mask is not None
            else contextlib.nullcontext()
        )
        with context:
            numpyro.sample("y", observation, obs=y)
