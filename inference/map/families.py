"""Observation families of the MAP back end: Normal, StudentT and Poisson.

Each family gives, in units of the noise variance (every quantity multiplied by
:math:`\\sigma^2`; Poisson: :math:`\\sigma = 1`), the half deviance, the score and the
Fisher information of the location :math:`\\mu_m` of one observation:

.. math::

    \\tfrac12 \\sigma^2 D(y, \\mu), \\qquad
    \\sigma^2 \\frac{\\partial \\log p(y \\mid \\mu, \\sigma)}{\\partial \\mu}, \\qquad
    \\sigma^2 I(\\mu).

A new family is one :class:`ObservationFamily` row in :data:`FAMILIES`, keyed by its name,
and its NumPyro class in :func:`family_of`. The log densities are written out as NumPyro
computes them (bit for bit), so NumPyro is imported only where a distribution is read from
a trace (``split_fn``, :func:`family_of`, :func:`distribution_mask`): a fit of a program
with a registered closed form (:mod:`gaussmix.inference.map.closed_form`) needs none.
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.scipy.special import gammaln, xlogy

__all__ = [
    "FAMILIES",
    "ObservationFamily",
    "base_distribution",
    "distribution_mask",
    "family_of",
]


class ObservationFamily(NamedTuple):
    """How the MAP back end reads one observed distribution.

    Every function is pure and works pointwise on (M,) arrays; ``scale`` is the (M,)
    scale, or None for a family without one (Poisson), and ``extra`` what ``split_fn``
    returned besides location and scale (StudentT: the degrees of freedom).

    Attributes:
        name: "normal", "student_t" or "poisson".
        split_fn: distribution -> (location, scale or None, extra).
        log_prob_fn: (y, location, scale, extra) -> pointwise log density.
        half_deviance_fn: (y, location, scale, extra) -> :math:`\\sigma^2 D / 2`.
        score_fn: (y, location, scale, extra) -> :math:`\\sigma^2\\,\\partial_\\mu \\log p`.
        fisher_fn: (location, scale, extra) -> :math:`\\sigma^2 I(\\mu)`.
        noise_loss_fn: (y, location, mask, extra) -> (scale -> negative log-likelihood),
            None for a family without a noise scale.
    """

    name: str
    split_fn: Callable
    log_prob_fn: Callable
    half_deviance_fn: Callable
    score_fn: Callable
    fisher_fn: Callable
    noise_loss_fn: Callable | None


def _normal_noise_loss(y, location, mask, extra):
    n_points = jnp.sum(mask)
    residual_sum = jnp.sum(mask * (y - location) ** 2)
    return lambda scale: n_points * jnp.log(scale) + residual_sum / (2.0 * scale**2)


def _student_t_half_deviance(y, location, scale, df):
    return 0.5 * scale**2 * (df + 1.0) * jnp.log1p((y - location) ** 2 / (df * scale**2))


def _student_t_score(y, location, scale, df):
    residual = y - location
    return (df + 1.0) * residual * scale**2 / (df * scale**2 + residual**2)


def _student_t_noise_loss(y, location, mask, df):
    return lambda scale: -jnp.sum(mask * _student_t_log_prob(y, location, scale, df))


# The log densities as NumPyro's Normal, StudentT and Poisson compute them, operation for
# operation (so bit for bit; a test holds them equal), without importing NumPyro: with
# NumPyro's default validation, -inf where y is outside the support.


def _real(value):
    """NumPyro's ``real`` constraint: neither NaN nor infinite."""
    return (value == value) & (value != float("inf")) & (value != float("-inf"))


def _promote_shapes(*args):
    """The arguments reshaped to their broadcast rank by leading ones, as NumPyro's
    ``promote_shapes`` does: the derivatives by a scalar scale then sum their terms as
    NumPyro's do (a () scale rather than a (1,) one changes their last bit)."""
    shapes = [jnp.shape(arg) for arg in args]
    rank = len(jnp.broadcast_shapes(*shapes))
    return [
        jnp.reshape(arg, (1,) * (rank - len(shape)) + shape) if len(shape) < rank else arg
        for arg, shape in zip(args, shapes, strict=True)
    ]


def _normal_log_prob(y, loc, scale, extra):
    loc, scale = _promote_shapes(loc, scale)
    normalize_term = jnp.log(jnp.sqrt(2 * jnp.pi) * scale)
    value_scaled = (y - loc) / scale
    return jnp.where(_real(y), -0.5 * value_scaled**2 - normalize_term, -jnp.inf)


def _student_t_log_prob(y, loc, scale, df):
    df, loc, scale = _promote_shapes(df, loc, scale)
    value_scaled = (y - loc) / scale
    normalize_term = (
        jnp.log(scale)
        + 0.5 * jnp.log(df)
        + 0.5 * jnp.log(jnp.pi)
        + gammaln(0.5 * df)
        - gammaln(0.5 * (df + 1.0))
    )
    log_prob = -0.5 * (df + 1.0) * jnp.log1p(value_scaled**2.0 / df) - normalize_term
    return jnp.where(_real(y), log_prob, -jnp.inf)


def _poisson_log_prob(y, rate, scale, extra):
    dtype = jnp.result_type(float)  # NumPyro's cast of the rate and the counts
    rate, counts = jnp.astype(rate, dtype), jnp.astype(y, dtype)
    log_prob = xlogy(counts, rate) - gammaln(counts + 1.0) - rate
    return jnp.where((jnp.mod(y, 1) == 0) & (y >= 0), log_prob, -jnp.inf)


def _poisson_half_deviance(y, rate, scale, extra):
    return jax.scipy.special.xlogy(y, y) - jax.scipy.special.xlogy(y, rate) - y + rate


#: Family name -> the family (:func:`family_of` reads it from a distribution).
FAMILIES = {
    "normal": ObservationFamily(
        "normal",
        lambda fn: (fn.loc, fn.scale, ()),
        _normal_log_prob,
        lambda y, loc, scale, extra: 0.5 * (y - loc) ** 2,
        lambda y, loc, scale, extra: y - loc,
        lambda loc, scale, extra: jnp.ones_like(loc),
        _normal_noise_loss,
    ),
    "student_t": ObservationFamily(
        "student_t",
        lambda fn: (fn.loc, fn.scale, fn.df),
        _student_t_log_prob,
        _student_t_half_deviance,
        _student_t_score,
        lambda loc, scale, df: jnp.broadcast_to((df + 1.0) / (df + 3.0), loc.shape),
        _student_t_noise_loss,
    ),
    "poisson": ObservationFamily(
        "poisson",
        lambda fn: (fn.rate, None, ()),
        _poisson_log_prob,
        _poisson_half_deviance,
        lambda y, rate, scale, extra: y / rate - 1.0,
        lambda rate, scale, extra: 1.0 / rate,
        None,
    ),
}


def base_distribution(fn: Any) -> Any:
    """The distribution under numpyro's wrappers (masks, expanded or independent batches)."""
    while hasattr(fn, "base_dist"):
        fn = fn.base_dist
    return fn


def distribution_mask(fn: Any):
    """The mask of numpyro's ``handlers.mask`` (a MaskedDistribution wrapper), or None."""
    import numpyro.distributions as dist

    mask = None
    while hasattr(fn, "base_dist"):
        if isinstance(fn, dist.MaskedDistribution) and not isinstance(fn._mask, bool):
            mask = fn._mask if mask is None else mask & fn._mask
        elif isinstance(fn, dist.MaskedDistribution) and fn._mask is False:
            mask = False
        fn = fn.base_dist
    return mask


def family_of(fn: Any) -> ObservationFamily:
    """The family of an observed site's distribution.

    Raises:
        ValueError: the distribution is not Normal, StudentT or Poisson.

    Example:
        >>> import numpyro.distributions as dist
        >>> family_of(dist.StudentT(4.0, 0.0, 1.0)).name
        'student_t'
    """
    import numpyro.distributions as dist

    base = base_distribution(fn)
    kinds = {dist.Normal: "normal", dist.StudentT: "student_t", dist.Poisson: "poisson"}
    if type(base) in kinds:
        return FAMILIES[kinds[type(base)]]
    raise ValueError(
        "The MAP back end fits Normal, StudentT or Poisson observations; the observed site "
        f"has a {type(base).__name__} distribution."
    )
