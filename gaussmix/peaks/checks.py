"""Checks of a peak fit's input (data, starting values) and of its result (parameters at
a prior bound, failed fits), with messages that say what to do."""

import functools
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from gaussmix.models.peak_priors import HalfNormalPrior, UniformPrior, default_prior_boxes
from gaussmix.models.peaks import NOISE_SITE, PeakModel
from gaussmix.peaks.result import PeakFit, PeakFitWarning, to_numpy

__all__ = [
    "NAN_POLICIES",
    "HalfNormalPrior",
    "UniformPrior",
    "bound_hits",
    "check_data",
    "check_init_support",
    "check_init_values",
    "check_result",
    "default_priors_on_host",
    "describe_spectra",
    "priors_of_sites",
    "uniform_bounds",
]

NAN_POLICIES = ("raise", "omit")


def uniform_bounds(prior: Any) -> tuple | None:
    """(low, high) of a uniform prior, a default one (:class:`UniformPrior`) or a user's
    ``numpyro.distributions.Uniform``; None for any other prior (or none)."""
    if isinstance(prior, UniformPrior):
        return prior.low, prior.high
    if prior is None or isinstance(prior, HalfNormalPrior):
        return None
    import numpyro.distributions as dist  # a user's prior: NumPyro is imported already

    return (prior.low, prior.high) if isinstance(prior, dist.Uniform) else None


def _numeric(name: str, value: ArrayLike) -> np.ndarray:
    try:
        array = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be numeric; got {type(value).__name__}.") from None
    return array


def check_data(x, y, nan_policy: str):
    """x (M,), y (M,) or (B, M) as float arrays, and a mask (None when all finite)."""
    if nan_policy not in NAN_POLICIES:
        raise ValueError(f"nan_policy must be one of {list(NAN_POLICIES)}, got {nan_policy!r}.")
    x = _numeric("x", x)
    y = _numeric("y", y)
    if x.ndim != 1:
        raise ValueError(f"x must be one-dimensional (M,), got shape {x.shape}.")
    if y.ndim not in (1, 2):
        raise ValueError(f"y must have shape (M,) or (B, M), got shape {y.shape}.")
    if y.shape[-1] != x.shape[0]:
        raise ValueError(
            f"x has {x.shape[0]} points but y has {y.shape[-1]} per spectrum: give one y "
            "value per x (y of shape (M,) or (B, M))."
        )
    bad_x = ~np.isfinite(x)
    if bad_x.any():
        if nan_policy == "raise":
            raise ValueError(
                f"x contains NaN or infinity at {int(bad_x.sum())} point(s); remove them or "
                "pass nan_policy='omit'."
            )
        x, y = x[~bad_x], y[..., ~bad_x]
    finite = np.isfinite(y)
    mask = None
    if not finite.all():
        if nan_policy == "raise":
            raise ValueError(
                f"y contains NaN or infinity at {int((~finite).sum())} point(s); remove them "
                "or pass nan_policy='omit'."
            )
        mask = finite
        y = np.where(finite, y, 0.0)
    if x.size < 2 or np.ptp(x) <= 0:
        raise ValueError("x must hold at least two distinct finite values.")
    return x, y, mask


def check_init_values(init: Mapping, model: PeakModel, n_spectra: int | None) -> dict:
    if not isinstance(init, Mapping):
        raise ValueError(
            f"init must be 'auto' or a dict of starting values, got {type(init).__name__}."
        )
    allowed = set(model.site_names)
    ignored = set(model.parameter_names) - set(model.free_names) | set(model.derived_names)
    unknown = sorted(set(init) - allowed - ignored)
    if unknown:
        raise ValueError(
            f"init names unknown parameter(s) {unknown}; free parameters: {list(model.site_names)}."
        )
    values = {}
    for name, value in init.items():
        if name not in allowed:
            continue
        array = _numeric(f"init[{name!r}]", value)
        if array.ndim > 1 or (array.ndim == 1 and array.shape[0] != (n_spectra or -1)):
            raise ValueError(
                f"init[{name!r}] has shape {array.shape}; give a number"
                + (f" or {n_spectra} values, one per spectrum." if n_spectra else ".")
            )
        if not np.all(np.isfinite(array)):
            raise ValueError(f"init[{name!r}] must be finite, got {value!r}.")
        kind = "noise" if name == NOISE_SITE else model.kind(name)
        if kind in ("width", "noise") and np.any(array <= 0):
            raise ValueError(
                f"init[{name!r}] = {value!r}: {'widths' if kind == 'width' else 'sigma'} must "
                "be > 0."
            )
        if kind == "fraction" and np.any((array < 0) | (array > 1)):
            raise ValueError(f"init[{name!r}] = {value!r}: a fraction must lie in [0, 1].")
        values[name] = array
    return values


def check_init_support(given: Mapping, site_priors: Mapping) -> None:
    """Starting values given by the user inside their priors' supports (per spectrum),
    checked before anything is compiled."""
    for name, value in given.items():
        prior = site_priors[name]
        inside = np.asarray(prior.support(np.asarray(value)), bool)
        if not inside.all():
            default = isinstance(prior, UniformPrior | HalfNormalPrior)
            support = prior.describe() if default else prior.support
            raise ValueError(
                f"init[{name!r}] = {np.asarray(value).tolist()} lies outside the support of "
                f"its prior {support}; start inside it or widen the prior."
            )


def default_priors_on_host(
    model: PeakModel, x_range: tuple[ArrayLike, ArrayLike], y_range: tuple[ArrayLike, ArrayLike]
) -> dict[str, UniformPrior | HalfNormalPrior]:
    """:func:`gaussmix.models.peaks.default_priors` in NumPy: the same boxes by the same
    arithmetic in the same dtype (:func:`gaussmix.models.peak_priors.default_prior_boxes`
    with NumPy), as NumPy numbers (:class:`UniformPrior`, :class:`HalfNormalPrior`), so
    that the host-side checks of a fit (its starting values, its prior bounds) compile no
    program and need no NumPyro. A test holds the two equal for every kind of parameter
    (to the last bit but where XLA divides an array by a scalar through the scalar's
    reciprocal)."""
    return default_prior_boxes(model, x_range, y_range, xp=np)


def priors_of_sites(model: PeakModel, x, y, mask, priors) -> dict:
    """The prior of every latent site as the program sets it for this data (per spectrum
    bounds for a batch): the defaults (:func:`default_priors_on_host`), replaced by the
    user's (NumPyro distributions)."""
    values = y if mask is None else np.where(mask, y, np.nan)
    y_range = (np.nanmin(values, axis=-1), np.nanmax(values, axis=-1))
    site_priors = default_priors_on_host(model, (float(x.min()), float(x.max())), y_range)
    site_priors.update(priors or {})
    return site_priors


def bound_hits(params: Mapping, priors: Mapping, names: Sequence[str]) -> dict:
    """Per parameter of ``names`` with a uniform prior, per spectrum: whether it ended
    within 1e-6 (float32: 1e-4) of a bound, relative to the box."""
    relative = max(1e-6, 1e3 * float(jnp.finfo(jnp.result_type(float)).eps))
    hits = {}
    for name in names:
        bounds, value = uniform_bounds(priors.get(name)), params[name]
        if bounds is None:
            continue
        low, high = (np.asarray(bound) for bound in bounds)
        margin = relative * (high - low)
        value = np.asarray(value)
        hits[name] = (value <= low + margin) | (value >= high - margin)
    return hits


def _at_bound(params: Mapping, priors: Mapping, names: Sequence[str]):
    """Per spectrum, whether a parameter of ``names`` ended at a bound of its uniform
    prior (:func:`bound_hits`); and the names of those parameters."""
    hits = bound_hits(params, priors, names)
    names = [name for name, hit in hits.items() if np.any(hit)]
    return np.asarray(functools.reduce(np.logical_or, hits.values(), False)), names


def describe_spectra(indices: np.ndarray, batch: int | None) -> str:
    if batch is None:
        return "the spectrum"
    shown = indices[:10].tolist()
    return f"spectra {shown}" + (f" (and {indices.size - 10} more)" if indices.size > 10 else "")


def check_result(
    fit: PeakFit, model: PeakModel, site_priors: Mapping, started, max_iter: int
) -> None:
    """Flag spectra that ended at a prior bound of ``site_priors`` (:func:`priors_of_sites`)
    as not converged, and warn; then one warning for all the spectra whose fit failed
    (at its start, with a singular covariance, or out of iterations)."""
    at_bound, names = _at_bound(fit.params, site_priors, model.free_names)
    if names:
        fit.converged = to_numpy(np.asarray(fit.converged) & ~at_bound)
        which = "" if fit.n_spectra is None else f" in {int(np.sum(at_bound))} spectra"
        warnings.warn(
            f"Parameter(s) {names} ended at a bound of their prior{which}: a constrained, "
            "not a stationary, optimum (a lost peak, or a start far from it); flagged as not "
            "converged. Give better starting values, fewer peaks or a wider prior.",
            PeakFitWarning,
            stacklevel=3,
        )
    converged = np.atleast_1d(fit.converged) | np.atleast_1d(at_bound)
    if converged.all():
        return
    started = np.atleast_1d(np.asarray(started, bool))
    variances = np.diagonal(np.asarray(fit.covariance), axis1=-2, axis2=-1)
    singular = ~np.all(np.isfinite(np.reshape(variances, (converged.size, -1))), axis=-1)
    failed = ~converged
    reasons = []
    for kind, text in (
        (
            failed & ~started,
            "failed at the start: the log posterior, its gradient or its curvature is "
            "not finite at the starting values (give init values well inside the priors, "
            "or rescale the data), so params are NaN",
        ),
        (
            failed & started & singular,
            "ended with a singular covariance (an unidentified parameter: a peak without "
            "data under it, or a degenerate baseline), so stderr and covariance are NaN",
        ),
        (
            failed & started & ~singular,
            f"did not converge in {max_iter} iterations (or stalled)",
        ),
    ):
        if kind.any():
            reasons.append(f"{describe_spectra(np.flatnonzero(kind), fit.n_spectra)} {text}")
    bad = np.flatnonzero(failed)
    warnings.warn(
        f"The MAP fit of {describe_spectra(bad, fit.n_spectra)} did not converge ({bad.size} of "
        f"{converged.size}): " + "; ".join(reasons) + ". They are flagged in "
        "PeakFit.converged, with NaN for what could not be computed (rss, redchi, stderr, "
        "covariance). Try better starting values, fewer peaks or more iterations.",
        PeakFitWarning,
        stacklevel=3,
    )
