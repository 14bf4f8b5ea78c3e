"""Active photoelectron backgrounds: Shirley and Tougaard, computed from the fitted peaks.

Both are fitted with the peaks, inside the program: the background is a function of the
peak curves, so it moves with them at every step of the fit or the sampler, and the
derivatives by every peak parameter flow through it. x is the binding energy: both step up
toward *higher* x (the inelastic losses of a line lie on its high-binding-energy side),
whatever order the points come in. With :math:`P(x) = \\sum_i p_i(x)` the sum of the peaks,

.. math::

    B_{\\mathrm{Shirley}}(x) = b_0 + k \\int_{-\\infty}^{x} P(x')\\,dx', \\qquad
    B_{\\mathrm{Tougaard}}(x) = b_0 + \\int_{-\\infty}^{x} K(x - x')\\,P(x')\\,dx', \\quad
    K(T) = \\frac{B\\,T}{(C + T^2)^2},

parameters ``baseline_offset`` :math:`b_0` (the level below every peak, at low x) and
``baseline_step`` :math:`k` (the background's rise per unit of peak area: the step across
a peak of area A is kA) or ``baseline_b`` :math:`B` (Tougaard's universal cross-section,
:math:`C =` :data:`TOUGAARD_C` :math:`= 1643\\ \\mathrm{eV}^2` fixed: x must be in eV; far
above a peak the background has risen by :math:`BA/(2C)`).

Both integrals are exact in x rather than sums over the data grid, so the background is
the same function of x on the data and on any other grid (``predict``, plots): the
Shirley through each lineshape's integral (closed forms; Voigt and Pearson VII by their
quadratures, :func:`gaussmix.models.lineshapes.integrate_profile`), the Tougaard by
128-point Gauss-Legendre per peak after the substitution :math:`x' = c + w\\tan\\theta`
(w the peak's half width at half maximum), which follows the peak and its tails.

lmfitxps (``lmfitxps.backgrounds.shirley`` and ``tougaard``) sums over the data points
instead, in the kinetic-energy order: on a grid of spacing :math:`\\Delta` sorted by
decreasing binding energy, its Shirley ``k' * cumsum(P)`` with :math:`k' = k\\Delta` is
this one plus :math:`k\\Delta P(x)/2` (the rectangle rule counts the point itself) plus
:math:`k\\Delta^2 P'(x)/12` up to :math:`O(\\Delta^4)` (Euler-Maclaurin); its Tougaard multiplies by :math:`|x_{M-1} - x_0|/M` rather than
:math:`\\Delta` (a factor :math:`(M-1)/M`). Both agree with these within that
discretization once the peaks lie inside the data range (the tests check it).

The Doniach-Sunjic's heavy tail lies toward higher x, where these integrals are finite
for every x (its integral to :math:`+\\infty` diverges, but is never needed).
"""

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax import lax
from jax.typing import ArrayLike

from gaussmix.models.lineshapes import (
    ACTIVE_BASELINE_PARAMETERS,
    Lineshape,
    gauss_legendre,
    integrate_profile,
)

__all__ = [
    "ACTIVE_BACKGROUNDS",
    "TOUGAARD_C",
    "active_background",
    "peak_integral_below",
    "shirley",
    "tougaard",
    "tougaard_kernel",
    "tougaard_response",
]

#: Background name -> its parameter names (sites ``baseline_<name>``).
ACTIVE_BACKGROUNDS = ACTIVE_BASELINE_PARAMETERS
#: C of the universal cross-section, in eV^2 (Tougaard 1989).
TOUGAARD_C = 1643.0

#: Nodes of the Gauss-Legendre rule of the Tougaard response.
TOUGAARD_NODES = 128

Peaks = Sequence[tuple[Lineshape, Sequence[ArrayLike]]]


def _float_x(x: ArrayLike) -> jax.Array:
    x = jnp.asarray(x)
    return x.astype(jnp.result_type(float, x))


def peak_integral_below(x: ArrayLike, peaks: Peaks) -> jax.Array:
    """:math:`\\int_{-\\infty}^{x} P(x')\\,dx'` at each x, P the sum of the peaks.

    Args:
        x: abscissae, any shape.
        peaks: (lineshape, parameters) pairs, parameters scalars (or broadcasting with x).

    Example:
        >>> from gaussmix.models.lineshapes import get_lineshape
        >>> round(float(peak_integral_below(0.0, [(get_lineshape("gaussian"),
        ...                                         (1.0, 0.0, 1.0))])), 6)
        1.253314
    """
    x = _float_x(x)
    total = jnp.zeros_like(x)
    for lineshape, parameters in peaks:
        total = total + integrate_profile(lineshape, -jnp.inf, x, tuple(parameters))
    return total


def shirley(x: ArrayLike, offset: ArrayLike, step: ArrayLike, peaks: Peaks) -> jax.Array:
    """Active Shirley background :math:`b_0 + k\\int_{-\\infty}^{x} P`.

    Example:
        >>> from gaussmix.models.lineshapes import get_lineshape
        >>> peak = [(get_lineshape("lorentzian"), (1.0, 0.0, 1.0))]
        >>> [round(float(v), 6) for v in shirley(jnp.array([-1e9, 0.0, 1e9]), 2.0, 0.5, peak)]
        [2.0, 2.785398, 3.570796]
    """
    return offset + step * peak_integral_below(x, peaks)


def tougaard_kernel(t: ArrayLike, b: ArrayLike, c: float = TOUGAARD_C) -> jax.Array:
    """Universal cross-section :math:`K(T) = BT/(C + T^2)^2` (zero for T <= 0).

    Example:
        >>> float(tougaard_kernel(0.0, 1.0))
        0.0
    """
    t = jnp.maximum(_float_x(t), 0.0)
    return b * t / (c + t**2) ** 2


def tougaard_response(x: ArrayLike, lineshape: Lineshape, parameters, c: float = TOUGAARD_C):
    """:math:`\\int_{-\\infty}^{x} K(x - x')\\,p(x')\\,dx'` of one peak for B = 1: 128-point
    Gauss-Legendre in :math:`\\theta`, :math:`x' = c_p + w\\tan\\theta`, over
    :math:`(-\\pi/2, \\arctan((x - c_p)/w))`."""
    x = _float_x(x)
    parameters = [jnp.asarray(p, x.dtype) for p in parameters]
    center = parameters[lineshape.kinds.index("center")]
    half_width = lax.stop_gradient(0.5 * lineshape.fwhm_fn(*parameters))
    low = jnp.full_like(x, -math.pi / 2.0)
    high = jnp.arctan((x - center) / half_width)
    middle, radius = 0.5 * (high + low), 0.5 * (high - low)
    nodes, weights = gauss_legendre(TOUGAARD_NODES)
    angles = middle[..., None] + radius[..., None] * jnp.asarray(nodes, x.dtype)
    sources = center + half_width * jnp.tan(angles)
    values = lineshape.profile_fn(sources, *parameters)
    jacobian = half_width / jnp.cos(angles) ** 2
    kernel = tougaard_kernel(x[..., None] - sources, 1.0, c)
    weights = jnp.asarray(weights, x.dtype)
    return radius * jnp.sum(weights * kernel * values * jacobian, axis=-1)


def tougaard(x: ArrayLike, offset: ArrayLike, b: ArrayLike, peaks: Peaks) -> jax.Array:
    """Active Tougaard background :math:`b_0 + \\int_{-\\infty}^{x} K(x - x') P(x') dx'`.

    Example:
        >>> from gaussmix.models.lineshapes import get_lineshape
        >>> peak = [(get_lineshape("gaussian"), (1.0, 0.0, 0.5))]
        >>> float(tougaard(-100.0, 1.0, 2866.0, peak))  # below the peak: the offset
        1.0
    """
    x = _float_x(x)
    total = jnp.zeros_like(x)
    for lineshape, parameters in peaks:
        total = total + tougaard_response(x, lineshape, parameters)
    return offset + b * total


def active_background(
    name: str, x: ArrayLike, parameters: Sequence[ArrayLike], peaks: Peaks
) -> jax.Array:
    """The background ``name`` ("shirley" or "tougaard") at x from its parameters
    (:data:`ACTIVE_BACKGROUNDS` order) and the peaks."""
    function = {"shirley": shirley, "tougaard": tougaard}[name]
    return function(x, *parameters, peaks)
