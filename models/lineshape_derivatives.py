"""Lineshapes and baselines with their derivatives in closed form.

A lineshape's ``value_and_jacobian`` returns its profile at x (computed by the profile
function itself, so that it is the very value of :mod:`gaussmix.models.lineshapes`) and
one column per parameter, :math:`\\partial p(x; \\theta) / \\partial \\theta_j`, stacked on
a last axis. With :math:`u = (x - c)/\\sigma`, :math:`v = (x - c)/\\gamma`,
:math:`e = e^{-u^2/2}` and :math:`\\ell = 1/(1 + v^2)`:

==================  ==============================================================
lineshape           columns
==================  ==============================================================
gaussian            :math:`e,\\; h e u/\\sigma,\\; h e u^2/\\sigma`
lorentzian          :math:`\\ell,\\; 2 h \\ell^2 v/\\gamma,\\; 2 h \\ell^2 v^2/\\gamma`
pseudo_voigt        the Gaussian's and the Lorentzian's (:math:`\\gamma = k\\sigma`),
                    mixed by :math:`1-\\eta` and :math:`\\eta`; :math:`h(\\ell - e)` for
                    :math:`\\eta`
pearson7            :math:`w^{-m},\\; 2hmuw^{-m-1}/\\sigma,\\; 2hmu^2w^{-m-1}/\\sigma,\\;
                    -hw^{-m}\\ln w` with :math:`w = 1 + u^2`
polynomial          :math:`x^k`
exponential         :math:`e^{-rx},\\; -a x e^{-rx}`
==================  ==============================================================

The other lineshapes (Voigt, skewed Gaussian, Doniach-Sunjic) take forward-mode derivatives of their own
profile only (:func:`forward_value_and_jacobian`), never of the whole program.
"""

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from gaussmix.models.lineshapes import (
    GAUSSIAN_FWHM,
    Baseline,
    Lineshape,
    exponential,
    gaussian,
    lorentzian,
    pearson7,
    polynomial,
    pseudo_voigt,
)

__all__ = [
    "VALUE_AND_JACOBIAN",
    "baseline_value_and_jacobian",
    "forward_value_and_jacobian",
    "gaussian_value_and_jacobian",
    "lineshape_value_and_jacobian",
    "lorentzian_value_and_jacobian",
    "pearson7_value_and_jacobian",
    "pseudo_voigt_value_and_jacobian",
]

#: Lorentzian half width of the pseudo-Voigt per unit of its Gaussian sigma,
#: :math:`\sqrt{2\ln 2}`.
PSEUDO_VOIGT_GAMMA = GAUSSIAN_FWHM / 2.0


def _gaussian_parts(x, height, center, sigma):
    u = (x - center) / sigma
    shape = jnp.exp(-0.5 * u**2)
    slope = height * shape * u / sigma
    return shape, slope, slope * u


def _lorentzian_parts(x, height, center, gamma):
    v = (x - center) / gamma
    shape = 1.0 / (1.0 + v**2)
    slope = 2.0 * height * shape**2 * v / gamma
    return shape, slope, slope * v


def gaussian_value_and_jacobian(
    x: ArrayLike, height: ArrayLike, center: ArrayLike, sigma: ArrayLike
) -> tuple[jax.Array, jax.Array]:
    """:func:`~gaussmix.models.lineshapes.gaussian` and its (..., 3) Jacobian.

    Example:
        >>> value, columns = gaussian_value_and_jacobian(1.0, 2.0, 1.0, 0.5)
        >>> float(value), [float(c) for c in columns]
        (2.0, [1.0, 0.0, 0.0])
    """
    value = gaussian(x, height, center, sigma)
    return value, jnp.stack(_gaussian_parts(x, height, center, sigma), axis=-1)


def lorentzian_value_and_jacobian(
    x: ArrayLike, height: ArrayLike, center: ArrayLike, gamma: ArrayLike
) -> tuple[jax.Array, jax.Array]:
    """:func:`~gaussmix.models.lineshapes.lorentzian` and its (..., 3) Jacobian."""
    value = lorentzian(x, height, center, gamma)
    return value, jnp.stack(_lorentzian_parts(x, height, center, gamma), axis=-1)


def pseudo_voigt_value_and_jacobian(
    x: ArrayLike, height: ArrayLike, center: ArrayLike, sigma: ArrayLike, fraction: ArrayLike
) -> tuple[jax.Array, jax.Array]:
    """:func:`~gaussmix.models.lineshapes.pseudo_voigt` and its (..., 4) Jacobian."""
    value = pseudo_voigt(x, height, center, sigma, fraction)
    gamma = sigma * PSEUDO_VOIGT_GAMMA
    g_shape, g_center, g_sigma = _gaussian_parts(x, height, center, sigma)
    l_shape, l_center, l_gamma = _lorentzian_parts(x, height, center, gamma)
    columns = (
        (1.0 - fraction) * g_shape + fraction * l_shape,
        (1.0 - fraction) * g_center + fraction * l_center,
        (1.0 - fraction) * g_sigma + fraction * PSEUDO_VOIGT_GAMMA * l_gamma,
        height * (l_shape - g_shape),
    )
    return value, jnp.stack(columns, axis=-1)


def pearson7_value_and_jacobian(
    x: ArrayLike, height: ArrayLike, center: ArrayLike, sigma: ArrayLike, exponent: ArrayLike
) -> tuple[jax.Array, jax.Array]:
    """:func:`~gaussmix.models.lineshapes.pearson7` and its (..., 4) Jacobian."""
    value = pearson7(x, height, center, sigma, exponent)
    x, height, center, sigma, exponent = _floats(x, height, center, sigma, exponent)
    u = (x - center) / sigma
    log_w = jnp.log1p(u**2)
    shape = jnp.exp(-exponent * log_w)
    slope = 2.0 * height * exponent * shape / (1.0 + u**2) * u / sigma
    columns = (shape, slope, slope * u, -height * shape * log_w)
    return value, jnp.stack(jnp.broadcast_arrays(*columns), axis=-1)


def forward_value_and_jacobian(
    profile_fn: Callable[..., jax.Array], x: ArrayLike, *parameters: ArrayLike
) -> tuple[jax.Array, jax.Array]:
    """A profile and its (..., k) Jacobian by forward mode, one tangent per parameter."""
    value = profile_fn(x, *parameters)
    stacked = jnp.stack(jnp.broadcast_arrays(*_floats(*parameters)))
    columns = jax.jacfwd(lambda flat: profile_fn(x, *flat))(stacked)
    return value, columns


def _floats(*values):
    return [jnp.asarray(value, jnp.result_type(float, value)) for value in values]


#: Lineshape name -> ``value_and_jacobian(x, *parameters)`` in closed form.
VALUE_AND_JACOBIAN: dict[str, Callable[..., tuple[jax.Array, jax.Array]]] = {
    "gaussian": gaussian_value_and_jacobian,
    "lorentzian": lorentzian_value_and_jacobian,
    "pseudo_voigt": pseudo_voigt_value_and_jacobian,
    "pearson7": pearson7_value_and_jacobian,
}


def lineshape_value_and_jacobian(
    lineshape: Lineshape, x: ArrayLike, parameters: Sequence[ArrayLike]
) -> tuple[jax.Array, jax.Array]:
    """A lineshape's profile at x and its (..., k) Jacobian: in closed form where
    :data:`VALUE_AND_JACOBIAN` has it, else by forward mode on the profile alone.

    Example:
        >>> from gaussmix.models.lineshapes import get_lineshape
        >>> value, columns = lineshape_value_and_jacobian(
        ...     get_lineshape("voigt"), 1.0, (3.0, 1.0, 0.7, 0.2))
        >>> round(float(value), 5), columns.shape
        (3.0, (4,))
    """
    closed = VALUE_AND_JACOBIAN.get(lineshape.name)
    if closed is not None:
        return closed(x, *parameters)
    return forward_value_and_jacobian(lineshape.profile_fn, x, *parameters)


def baseline_value_and_jacobian(
    baseline: Baseline, x: ArrayLike, parameters: Sequence[ArrayLike]
) -> tuple[jax.Array, jax.Array]:
    """A baseline at x and its (..., k) Jacobian (polynomial: :math:`x^k`; exponential:
    :math:`e^{-rx}` and :math:`-axe^{-rx}`).

    Example:
        >>> from gaussmix.models.lineshapes import baseline_model
        >>> value, columns = baseline_value_and_jacobian(
        ...     baseline_model("linear"), 2.0, (1.0, 0.5))
        >>> float(value), [float(c) for c in columns]
        (2.0, [1.0, 2.0])
    """
    x = jnp.asarray(x, jnp.result_type(float, x))
    if baseline.name == "exponential":
        amplitude, rate = parameters
        value = exponential(x, amplitude, rate)
        decay = jnp.exp(-rate * x)
        return value, jnp.stack([decay, -amplitude * x * decay], axis=-1)
    value = polynomial(x, tuple(parameters))
    powers = [jnp.ones_like(x)]
    for _ in range(1, len(parameters)):
        powers.append(powers[-1] * x)
    return value, jnp.stack(jnp.broadcast_arrays(*powers, value)[:-1], axis=-1)
