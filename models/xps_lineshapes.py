"""Lineshapes of photoelectron spectroscopy: Pearson VII and Doniach-Sunjic.

Registered in :data:`gaussmix.models.lineshapes.LINESHAPES` as ``"pearson7"`` and
``"doniach_sunjic"``. With :math:`u = (x - c)/\\sigma` and :math:`v = (x - c)/\\gamma`:

.. math::

    \\mathrm{pearson7}(x) = h\\,(1 + u^2)^{-m}, \\qquad
    \\mathrm{doniach\\_sunjic}(x) = \\frac{h}{s_{\\max}}\\,
    \\frac{\\cos\\big(\\pi\\alpha/2 - (1-\\alpha)\\arctan v\\big)}{(1 + v^2)^{(1-\\alpha)/2}}

**Pearson VII** is lmfit's ``Pearson7Model`` with the height :math:`h` (the maximum) as
parameter instead of the area: lmfit's ``amplitude`` is the area
:math:`A = h\\sigma\\,B(m - 1/2, 1/2) = h\\sigma\\sqrt\\pi\\,\\Gamma(m-1/2)/\\Gamma(m)`,
finite for :math:`m > 1/2` only (the exponent's support). Its FWHM is
:math:`2\\sigma\\sqrt{2^{1/m} - 1}`; :math:`m = 1` is the Lorentzian of half width
:math:`\\sigma`, :math:`m \\to \\infty` (with :math:`\\sigma^2 = 2m s^2`) the Gaussian of
standard deviation s.

**Doniach-Sunjic** (metals' asymmetric core lines) with :math:`\\gamma` the Lorentzian half
width at half maximum and the asymmetry :math:`\\alpha \\in [0, 1)` (:math:`\\alpha = 0` is
the Lorentzian). Its heavy tail :math:`\\propto v^{\\alpha-1}` lies toward *higher* x: the
binding-energy convention, the side toward which the Shirley and Tougaard backgrounds of
:mod:`gaussmix.models.backgrounds` step up. It is lmfit's ``DoniachModel`` mirrored about
the centre (lmfit's tail lies toward lower x, the kinetic-energy convention):
``doniach_sunjic(x, h, c, g, a) == lmfit.lineshapes.doniach(2c - x, h g**(1-a) / s_max,
c, g, a)``. The height h is the maximum, reached at :math:`v^* = \\tan\\theta^*`,
:math:`\\theta^* = \\pi\\alpha / (2(2 - \\alpha))`, where the shape is
:math:`s_{\\max} = \\cos^{2-\\alpha}\\theta^*`. Its integral over the real line diverges for
:math:`\\alpha > 0` (the tail), so the fits report no ``area`` for it: integrate it over a
finite interval (``PeakFit.integrate(a, b)``), in closed form,

.. math::

    \\int \\frac{\\cos(\\pi\\alpha/2 - (1-\\alpha)\\arctan v)}{(1 + v^2)^{(1-\\alpha)/2}}\\,dv
    = \\operatorname{Re}\\Big[-i e^{i\\pi\\alpha/2}\\,\\frac{(1 + iv)^\\alpha - 1}{\\alpha}
    \\Big],

the shape being :math:`\\operatorname{Re}[e^{i\\pi\\alpha/2}(1 + iv)^{\\alpha - 1}]`
(:math:`\\arctan v` at :math:`\\alpha = 0`). Its FWHM has no closed form: the half-maximum
points are found by bisection in :math:`\\theta = \\arctan v`, then one Newton step (so
that derivatives follow the implicit function theorem).
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.scipy.special import gammaln
from jax.typing import ArrayLike

__all__ = [
    "doniach_sunjic",
    "doniach_sunjic_fwhm",
    "doniach_sunjic_integral",
    "doniach_sunjic_peak_shape",
    "pearson7",
    "pearson7_area",
    "pearson7_fwhm",
    "pearson7_integral",
]


def _as_float(*values: ArrayLike) -> list[jax.Array]:
    dtype = jnp.result_type(float, *values)
    return [jnp.asarray(value, dtype) for value in values]


# ---------------------------------------------------------------------------------------
# Pearson VII
# ---------------------------------------------------------------------------------------


def pearson7(
    x: ArrayLike, height: ArrayLike, center: ArrayLike, sigma: ArrayLike, exponent: ArrayLike
) -> jax.Array:
    """Pearson VII peak :math:`h\\,(1 + ((x-c)/\\sigma)^2)^{-m}`.

    Args:
        x: abscissae, any shape; parameters broadcast against it.
        height: peak height h (the maximum, at c).
        center: position c.
        sigma: scale, > 0 (the FWHM is :math:`2\\sigma\\sqrt{2^{1/m}-1}`).
        exponent: m > 1/2 (1: Lorentzian; large: close to a Gaussian).

    Example:
        >>> float(pearson7(2.0, 4.0, 1.0, 1.0, 1.0))
        2.0
    """
    x, height, center, sigma, exponent = _as_float(x, height, center, sigma, exponent)
    u = (x - center) / sigma
    return height * jnp.exp(-exponent * jnp.log1p(u**2))


def pearson7_area(height: ArrayLike, sigma: ArrayLike, exponent: ArrayLike) -> jax.Array:
    """Area of :func:`pearson7`, :math:`h\\sigma\\sqrt\\pi\\,\\Gamma(m-1/2)/\\Gamma(m)`
    (lmfit's ``amplitude``).

    Example:
        >>> round(float(pearson7_area(1.0, 1.0, 1.0)), 6)  # the Lorentzian's pi h sigma
        3.141593
    """
    height, sigma, exponent = _as_float(height, sigma, exponent)
    log_beta = gammaln(exponent - 0.5) - gammaln(exponent) + 0.5 * math.log(math.pi)
    return height * sigma * jnp.exp(log_beta)


def pearson7_fwhm(sigma: ArrayLike, exponent: ArrayLike) -> jax.Array:
    """FWHM of :func:`pearson7`, :math:`2\\sigma\\sqrt{2^{1/m} - 1}`.

    Example:
        >>> float(pearson7_fwhm(1.0, 1.0))
        2.0
    """
    sigma, exponent = _as_float(sigma, exponent)
    return 2.0 * sigma * jnp.sqrt(jnp.expm1(math.log(2.0) / exponent))


# Gauss-Legendre nodes and weights on [0, 1].
_NODES, _WEIGHTS = (
    0.5 * (v + 1.0) if i == 0 else 0.5 * v
    for i, v in enumerate(np.polynomial.legendre.leggauss(64))
)


def _legendre(function, upper):
    """:math:`\\int_0^{U} f`, 64-point Gauss-Legendre, U of any shape."""
    nodes = jnp.asarray(_NODES, upper.dtype)
    weights = jnp.asarray(_WEIGHTS, upper.dtype)
    return upper * jnp.sum(weights * function(upper[..., None] * nodes), axis=-1)


def _pearson7_half_integral(u, exponent):
    """:math:`\\int_0^{|u|} (1 + t^2)^{-m} dt`: Gauss-Legendre on [0, |u|] for
    :math:`|u| \\le 1`, else half the area less the tail :math:`\\int_{|u|}^\\infty`. The
    tail is smooth in :math:`\\theta = \\arctan t`, :math:`\\int \\cos^{2m-2}\\theta\\,
    d\\theta`, for :math:`m \\ge 3/2`; below, where that integrand is singular at
    :math:`\\pi/2`, after :math:`q = (1 + t^2)^{-(m - 1/2)}`:
    :math:`\\int_0^{Q} (1 - q^{1/(m-1/2)})^{-1/2} dq / (2m - 1)`, an integrand below
    :math:`\\sqrt2` there, smooth even as m nears 1/2."""
    size = jnp.abs(u)
    near = size <= 1.0
    head = _legendre(
        lambda t: jnp.exp(-exponent[..., None] * jnp.log1p(t**2)), jnp.where(near, size, 1.0)
    )
    excess = exponent - 0.5
    far = jnp.where(near | jnp.isinf(size), 2.0, size)
    upper = jnp.exp(-excess * jnp.log1p(far**2))  # in (0, 2^(1/2 - m)]
    power = 1.0 / excess
    heavy = _legendre(lambda q: 1.0 / jnp.sqrt(-jnp.expm1(power[..., None] * jnp.log(q))), upper)
    angle = jnp.arctan(far)
    light = _legendre(
        lambda t: jnp.exp(
            (2.0 * exponent[..., None] - 2.0) * jnp.log(jnp.cos(angle[..., None] + t))
        ),
        math.pi / 2.0 - angle,
    )
    tail = jnp.where(exponent < 1.5, heavy / (2.0 * excess), light)
    tail = jnp.where(jnp.isinf(size), 0.0, tail)
    half = 0.5 * jnp.exp(gammaln(excess) - gammaln(exponent) + 0.5 * math.log(math.pi))
    return jnp.where(near, head, half - tail)


def pearson7_integral(a, b, height, center, sigma, exponent) -> jax.Array:
    """Integral of :func:`pearson7` from a to b (may be infinite), by 64-point
    Gauss-Legendre on a substitution that keeps the integrand smooth (see
    ``_pearson7_half_integral``): in float64 an error below 1e-9 of the value or 1e-12
    of the area for m from 0.51 to 100 on the tested limits (measured against the
    incomplete beta function: at most 1e-10 of the area); differentiable in every parameter (the closed form
    through the incomplete beta function is not, in the exponent, in JAX).

    Example:
        >>> import numpy as np
        >>> round(float(pearson7_integral(-np.inf, np.inf, 1.0, 0.0, 1.0, 1.0)), 5)
        3.14159
    """
    a, b, height, center, sigma, exponent = _as_float(a, b, height, center, sigma, exponent)
    a, b, height, center, sigma, exponent = jnp.broadcast_arrays(
        a, b, height, center, sigma, exponent
    )

    def signed(limit):
        infinite = jnp.isinf(limit)  # no infinite u: its derivative by sigma is not finite
        u = (jnp.where(infinite, center + sigma, limit) - center) / sigma
        u = jnp.where(infinite, limit, u)
        return jnp.sign(u) * _pearson7_half_integral(u, exponent)

    return height * sigma * (signed(b) - signed(a))


# ---------------------------------------------------------------------------------------
# Doniach-Sunjic
# ---------------------------------------------------------------------------------------


def _mode_angle(alpha):
    return (math.pi / 2.0) * alpha / (2.0 - alpha)


def doniach_sunjic_peak_shape(alpha: ArrayLike) -> tuple[jax.Array, jax.Array]:
    """Position of the maximum in units of gamma, :math:`v^* = \\tan\\theta^*`, and the
    unnormalized shape there, :math:`s_{\\max} = \\cos^{2-\\alpha}\\theta^*`.

    Example:
        >>> [float(value) for value in doniach_sunjic_peak_shape(0.0)]
        [0.0, 1.0]
    """
    (alpha,) = _as_float(alpha)
    angle = _mode_angle(alpha)
    return jnp.tan(angle), jnp.cos(angle) ** (2.0 - alpha)


def doniach_sunjic(
    x: ArrayLike, height: ArrayLike, center: ArrayLike, gamma: ArrayLike, alpha: ArrayLike
) -> jax.Array:
    """Doniach-Sunjic peak of maximum h, tail toward higher x (see the module docstring).

    Args:
        x: abscissae, any shape.
        height: the maximum h (reached at :math:`c + \\gamma v^*`, above c for
            :math:`\\alpha > 0`).
        center: position c of the line (the maximum for :math:`\\alpha = 0`).
        gamma: Lorentzian half width at half maximum, > 0.
        alpha: asymmetry in [0, 1).

    Example:
        >>> round(float(doniach_sunjic(2.0, 4.0, 1.0, 1.0, 0.0)), 5)  # alpha = 0: Lorentzian
        2.0
    """
    x, height, center, gamma, alpha = _as_float(x, height, center, gamma, alpha)
    v = (x - center) / gamma
    exponent = 1.0 - alpha
    shape = jnp.cos(math.pi / 2.0 * alpha - exponent * jnp.arctan(v)) * jnp.exp(
        -0.5 * exponent * jnp.log1p(v**2)
    )
    return height * shape / doniach_sunjic_peak_shape(alpha)[1]


def _exprel(z):
    """:math:`(e^z - 1)/z`, continued by its series near 0 (complex z)."""
    small = jnp.abs(z) < 1e-3
    safe = jnp.where(small, 1.0, z)
    return jnp.where(small, 1.0 + z / 2.0 + z**2 / 6.0 + z**3 / 24.0, jnp.expm1(safe) / safe)


def _doniach_sunjic_antiderivative(v, alpha):
    """:math:`G(v)`, the antiderivative of the unnormalized shape in v; its limits are
    :math:`-\\sin(\\pi\\alpha/2)/\\alpha` at :math:`-\\infty` and :math:`+\\infty` at
    :math:`+\\infty` (:math:`\\pm\\pi/2` at :math:`\\alpha = 0`)."""
    finite = jnp.where(jnp.isinf(v), 0.0, v)
    complex_dtype = jnp.result_type(finite.dtype, jnp.complex64)
    logarithm = jnp.log(1.0 + 1j * finite.astype(complex_dtype))
    rotation = jnp.exp(1j * (math.pi / 2.0) * alpha)
    value = jnp.real(-1j * rotation * logarithm * _exprel(alpha * logarithm))
    low = -(math.pi / 2.0) * jnp.sinc(alpha / 2.0)
    high = jnp.where(alpha == 0, math.pi / 2.0, jnp.inf)
    return jnp.where(v == -jnp.inf, low, jnp.where(v == jnp.inf, high, value))


def doniach_sunjic_integral(a, b, height, center, gamma, alpha) -> jax.Array:
    """Integral of :func:`doniach_sunjic` from a to b in closed form (+inf for
    :math:`b = +\\infty` and :math:`\\alpha > 0`).

    Example:
        >>> import numpy as np
        >>> round(float(doniach_sunjic_integral(-np.inf, np.inf, 1.0, 0.0, 1.0, 0.0)), 6)
        3.141593
    """
    a, b, height, center, gamma, alpha = _as_float(a, b, height, center, gamma, alpha)
    scale = height * gamma / doniach_sunjic_peak_shape(alpha)[1]

    def scaled(limit):  # no infinite v from a division: its derivative is not finite
        infinite = jnp.isinf(limit)
        v = (jnp.where(infinite, center, limit) - center) / gamma
        return jnp.where(infinite, limit, v)

    upper = _doniach_sunjic_antiderivative(scaled(b), alpha)
    lower = _doniach_sunjic_antiderivative(scaled(a), alpha)
    return scale * (upper - lower)


def _log_shape_drop(theta, alpha):
    """log of the shape at :math:`\\theta = \\arctan v` over its maximum, plus log 2 (zero
    at the half-maximum points), and its theta-derivative."""
    exponent = 1.0 - alpha
    phase = math.pi / 2.0 * alpha - exponent * theta
    log_value = jnp.log(jnp.cos(phase)) + exponent * jnp.log(jnp.cos(theta))
    log_maximum = (2.0 - alpha) * jnp.log(jnp.cos(_mode_angle(alpha)))
    slope = exponent * (jnp.tan(phase) - jnp.tan(theta))
    return log_value - log_maximum + math.log(2.0), slope


def _bisect(function, low, high, n_steps):
    """Root of a function positive at ``low`` and negative at ``high``."""

    def step(bounds, _):
        low, high = bounds
        middle = 0.5 * (low + high)
        positive = function(middle) > 0
        return (jnp.where(positive, middle, low), jnp.where(positive, high, middle)), None

    (low, high), _ = lax.scan(step, (low, high), None, length=n_steps)
    return 0.5 * (low + high)


def doniach_sunjic_fwhm(gamma: ArrayLike, alpha: ArrayLike) -> jax.Array:
    """FWHM of :func:`doniach_sunjic`: :math:`\\gamma(\\tan\\theta_r - \\tan\\theta_l)` at
    the half-maximum angles (bisection, then one Newton step).

    Example:
        >>> round(float(doniach_sunjic_fwhm(1.0, 0.0)), 9)  # the Lorentzian's 2 gamma
        2.0
    """
    gamma, alpha = _as_float(gamma, alpha)
    n_steps = 64 if alpha.dtype == jnp.float64 else 32
    frozen = lax.stop_gradient(alpha)
    mode = _mode_angle(frozen)
    edge = jnp.full_like(frozen, math.pi / 2.0)

    def drop(theta):
        return _log_shape_drop(theta, frozen)[0]

    right = _bisect(drop, mode, edge, n_steps)
    left = _bisect(lambda theta: -drop(theta), -edge, mode, n_steps)
    right = right - _log_shape_drop(right, alpha)[0] / _log_shape_drop(right, frozen)[1]
    left = left - _log_shape_drop(left, alpha)[0] / _log_shape_drop(left, frozen)[1]
    return gamma * (jnp.tan(right) - jnp.tan(left))
