"""Peak lineshapes and baselines as pure JAX functions, with their areas, widths, heights.

A lineshape is a pure function of one abscissa ``x`` and its parameters; it is written
with element-wise operations, so arrays of ``x`` broadcast (batching is the caller's
``vmap`` or broadcasting). Every lineshape is registered in :data:`LINESHAPES` with its
parameter names and the functions giving its area, full width at half maximum (FWHM),
height (the profile's maximum) and integral over an interval.

==================  ==================================  =====================================
name                parameters                          profile
==================  ==================================  =====================================
gaussian            height, center, sigma               :math:`h\\,e^{-u^2/2}`
lorentzian          height, center, gamma               :math:`h / (1 + v^2)`
voigt               height, center, sigma, gamma        :math:`h\\,V(x-c)/V(0)`
voigt_area          area, center, sigma, gamma          :math:`A\\,V(x-c)`
pseudo_voigt        height, center, sigma, fraction     :math:`h[(1-\\eta)e^{-u^2/2}+\\eta/(1+v^2)]`
skewed_gaussian     height, center, sigma, skew         :math:`h\\,e^{-u^2/2}(1+\\mathrm{erf}(\\alpha u/\\sqrt2))`
pearson7            height, center, sigma, exponent     :math:`h(1 + u^2)^{-m}`, m > 1/2
doniach_sunjic      height, center, gamma, alpha        asymmetric, tail toward higher x
==================  ==================================  =====================================

with :math:`u = (x - c)/\\sigma`, :math:`v = (x - c)/\\gamma` (:math:`\\gamma` is the
Lorentzian half width at half maximum) and :math:`V` the Voigt profile, the convolution of
a normal density of standard deviation :math:`\\sigma` with a Cauchy density of scale
:math:`\\gamma`,

.. math::

    V(x; \\sigma, \\gamma) = \\frac{\\operatorname{Re} w(z)}{\\sigma\\sqrt{2\\pi}}, \\qquad
    z = \\frac{x + i\\gamma}{\\sigma\\sqrt2},

where :math:`w` is the Faddeeva function (:func:`faddeeva`). The pseudo-Voigt shares
one width between its parts: Gaussian standard deviation :math:`\\sigma` and Lorentzian
half width :math:`\\gamma = \\sigma\\sqrt{2\\ln 2}`, so both have the FWHM
:math:`2\\sigma\\sqrt{2\\ln 2}`. The skewed Gaussian's ``height`` is the height of its
Gaussian factor (the maximum itself for ``skew = 0``; :attr:`Lineshape.height_fn` gives
the maximum for any skew).

Pearson VII and Doniach-Sunjic are defined in :mod:`gaussmix.models.xps_lineshapes`
(their parametrizations against lmfit's models, FWHM and areas); the Doniach-Sunjic's
integral over the real line diverges for :math:`\\alpha > 0`, so its ``area_fn`` is None.

Baselines (:func:`baseline_model`): ``"constant"`` and ``"linear"`` are polynomials of
degree 0 and 1, an integer ``n`` a polynomial of degree ``n`` with parameters ``c0 ...
cn`` (:math:`\\sum_k c_k x^k`), ``"exponential"`` is :math:`a\\,e^{-r x}` with parameters
``amplitude`` and ``rate``; ``"shirley"`` and ``"tougaard"`` are the active backgrounds of
:mod:`gaussmix.models.backgrounds`, functions of the peaks (parameters ``offset, step`` and
``offset, b``): their :class:`Baseline` only names them, the peak model computes them.
"""

import functools
import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.scipy.special import erf, log_ndtr, ndtr, owens_t
from jax.typing import ArrayLike

from gaussmix.models.xps_lineshapes import (
    doniach_sunjic,
    doniach_sunjic_fwhm,
    doniach_sunjic_integral,
    pearson7,
    pearson7_area,
    pearson7_fwhm,
    pearson7_integral,
)

__all__ = [
    "ACTIVE_BASELINE_PARAMETERS",
    "BASELINES",
    "LINESHAPES",
    "Baseline",
    "Lineshape",
    "baseline_model",
    "doniach_sunjic",
    "exponential",
    "faddeeva",
    "gauss_legendre",
    "gaussian",
    "get_lineshape",
    "integrate_profile",
    "lorentzian",
    "pearson7",
    "polynomial",
    "pseudo_voigt",
    "skewed_gaussian",
    "voigt",
    "voigt_area",
    "voigt_profile",
]

SQRT2 = math.sqrt(2.0)
SQRT_PI = math.sqrt(math.pi)
SQRT_2PI = math.sqrt(2.0 * math.pi)
#: FWHM of a normal density in units of its standard deviation, :math:`2\sqrt{2\ln 2}`.
GAUSSIAN_FWHM = 2.0 * math.sqrt(2.0 * math.log(2.0))


def _float(*values: ArrayLike) -> list[jax.Array]:
    """Promote inputs to one inexact dtype (float32, or float64 under x64)."""
    dtype = jnp.result_type(float, *values)
    return [jnp.asarray(value, dtype) for value in values]


# ---------------------------------------------------------------------------------------
# Faddeeva function
# ---------------------------------------------------------------------------------------


def _weideman_coefficients(n_terms: int) -> tuple[np.ndarray, float]:
    """Coefficients of Weideman's (1994) rational approximation with ``n_terms`` terms."""
    m = 2 * n_terms
    k = np.arange(-m + 1, m)
    length = math.sqrt(n_terms / math.sqrt(2.0))
    t = length * np.tan(k * np.pi / m / 2.0)
    f = np.concatenate([[0.0], np.exp(-(t**2)) * (length**2 + t**2)])
    a = np.real(np.fft.fft(np.fft.fftshift(f))) / (2 * m)
    return np.flipud(a[1 : n_terms + 1]), length


_WEIDEMAN_COEFFICIENTS, _WEIDEMAN_LENGTH = _weideman_coefficients(40)
# |z| beyond which the Laplace continued fraction is used, and its depth.
_CONTINUED_FRACTION_RADIUS = 6.0
_CONTINUED_FRACTION_DEPTH = 20
_CONTINUED_FRACTION_AXIS = 0.75
# Im z below which (and |Re z| below the radius) the Taylor series about the real axis is
# used, and its number of terms.
_TAYLOR_HEIGHT = 0.05
_TAYLOR_TERMS = 18


def _weideman(z: jax.Array) -> jax.Array:
    length = _WEIDEMAN_LENGTH
    ratio = (length + 1j * z) / (length - 1j * z)
    coefficients = jnp.asarray(_WEIDEMAN_COEFFICIENTS, z.real.dtype)
    polynomial_value = lax.fori_loop(
        0,
        coefficients.shape[0],
        lambda k, value: value * ratio + coefficients[k],
        jnp.zeros_like(z),
    )
    denominator = length - 1j * z
    return 2.0 * polynomial_value / denominator**2 + (1.0 / SQRT_PI) / denominator


def _continued_fraction(z: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Laplace's continued fraction :math:`w = (i/\\sqrt\\pi)/(z - R)`,
    :math:`R = \\tfrac12/(z - 1/(z - \\tfrac32/(z - \\dots)))`, and its derivative
    :math:`w' = -2Rw`; near the real axis it lacks the exponentially small
    :math:`e^{-z^2}` (the real part there), which is added back, with its derivative.

    :math:`w' = -2zw + 2i/\\sqrt\\pi` cancels for large :math:`|z|`: its two terms are
    :math:`|z|^2` times their sum, whose relative error :math:`|z|^2\\epsilon` then reached
    the Voigt FWHM's derivative in sigma at sigma << gamma (30 % at sigma/gamma = 1e-4).
    :math:`-2Rw` is as accurate as w.
    """
    depth = _CONTINUED_FRACTION_DEPTH
    remainder = lax.fori_loop(
        0, depth, lambda i, remainder: ((depth - i) / 2.0) / (z - remainder), jnp.zeros_like(z)
    )
    value = (1j / SQRT_PI) / (z - remainder)
    near_axis = z.imag < _CONTINUED_FRACTION_AXIS
    safe = jnp.where(near_axis, z, 0.0)
    gaussian = jnp.where(near_axis, jnp.exp(-(safe**2)), 0.0)
    return value + gaussian, -2.0 * remainder * value - 2.0 * z * gaussian


def _taylor_about_real_axis(z: jax.Array) -> jax.Array:
    """w(x + iy) by its Taylor series in iy about the real point x.

    On the real axis :math:`\\operatorname{Re} w(x) = e^{-x^2}` exactly, so the real part
    keeps full relative accuracy in the Gaussian tails, where the Lorentzian part is tiny.
    Derivatives follow :math:`w^{(k+1)} = -2x\\,w^{(k)} - 2k\\,w^{(k-1)}`.
    """
    x, y = z.real, z.imag
    on_axis = jnp.exp(-(x**2)) + 1j * _weideman(x.astype(z.dtype)).imag
    first = -2.0 * x * on_axis + 2j / SQRT_PI

    def term(k, carry):
        previous, current, power, total = carry
        previous, current = current, -2.0 * x * current - 2.0 * k * previous
        power = power * (1j * y) / (k + 1)
        return previous, current, power, total + power * current

    initial = (on_axis, first, 1j * y, on_axis + (1j * y) * first)
    return lax.fori_loop(1, _TAYLOR_TERMS, term, initial)[3]


@jax.custom_jvp
def faddeeva(z: ArrayLike) -> jax.Array:
    """The Faddeeva function :math:`w(z) = e^{-z^2}\\operatorname{erfc}(-iz)`, Im z >= 0.

    Weideman's 40-term rational approximation, the Laplace continued fraction for
    :math:`|z| > 6` and a Taylor series about the real axis for small
    :math:`\\operatorname{Im} z`. In float64 the relative error against
    ``scipy.special.wofz`` is below 1e-13 for :math:`w` and for its real part on the
    tested grid (:math:`10^{-3} \\le |\\operatorname{Re} z| \\le 10^{3}`,
    :math:`0 \\le \\operatorname{Im} z \\le 10^{3}`). The derivative is the analytic
    :math:`w'(z) = -2 z w(z) + 2i/\\sqrt{\\pi}`, and :math:`-2Rw` from the continued
    fraction for :math:`|z| > 6`, where the former cancels.

    Args:
        z: complex array, any shape, with non-negative imaginary part (the lower half
            plane is not supported).

    Returns:
        w(z), complex, same shape.

    Example:
        >>> import jax.numpy as jnp
        >>> round(float(faddeeva(jnp.asarray(0.0 + 0.0j)).real), 12)
        1.0
    """
    z = jnp.asarray(z)
    if not jnp.issubdtype(z.dtype, jnp.complexfloating):
        z = z.astype(jnp.result_type(z.dtype, jnp.complex64))
    far = jnp.abs(z) > _CONTINUED_FRACTION_RADIUS
    near_axis = (~far) & (z.imag < _TAYLOR_HEIGHT)
    # Evaluate every branch on inputs that are safe for it, then select.
    safe_far = jnp.where(far, z, _CONTINUED_FRACTION_RADIUS + 1.0 + 0j)
    safe_axis = jnp.where(near_axis, z, 0.0 + 0j)
    value = _weideman(z)
    value = jnp.where(near_axis, _taylor_about_real_axis(safe_axis), value)
    return jnp.where(far, _continued_fraction(safe_far)[0], value)


@faddeeva.defjvp
def _faddeeva_jvp(primals, tangents):
    (z,), (z_dot,) = primals, tangents
    value = faddeeva(z)
    z = jnp.asarray(z, value.dtype)
    derivative = -2.0 * z * value + 2j / SQRT_PI
    far = jnp.abs(z) > _CONTINUED_FRACTION_RADIUS  # there the identity cancels
    safe_far = jnp.where(far, z, _CONTINUED_FRACTION_RADIUS + 1.0 + 0j)
    derivative = jnp.where(far, _continued_fraction(safe_far)[1], derivative)
    return value, derivative * jnp.asarray(z_dot, value.dtype)


# ---------------------------------------------------------------------------------------
# Profiles
# ---------------------------------------------------------------------------------------


def gaussian(x: ArrayLike, height: ArrayLike, center: ArrayLike, sigma: ArrayLike) -> jax.Array:
    """Gaussian peak :math:`h\\exp(-(x-c)^2 / (2\\sigma^2))`.

    Args:
        x: abscissae, any shape; parameters broadcast against it.
        height: peak height h.
        center: position c.
        sigma: standard deviation, > 0.

    Example:
        >>> float(gaussian(1.0, 2.0, 1.0, 0.5))
        2.0
    """
    x, height, center, sigma = _float(x, height, center, sigma)
    return height * jnp.exp(-0.5 * ((x - center) / sigma) ** 2)


def lorentzian(x: ArrayLike, height: ArrayLike, center: ArrayLike, gamma: ArrayLike) -> jax.Array:
    """Lorentzian (Cauchy) peak :math:`h / (1 + ((x-c)/\\gamma)^2)`.

    Args:
        x: abscissae, any shape.
        height: peak height h.
        center: position c.
        gamma: half width at half maximum, > 0.

    Example:
        >>> float(lorentzian(2.0, 4.0, 1.0, 1.0))
        2.0
    """
    x, height, center, gamma = _float(x, height, center, gamma)
    return height / (1.0 + ((x - center) / gamma) ** 2)


def voigt_profile(x: ArrayLike, sigma: ArrayLike, gamma: ArrayLike) -> jax.Array:
    """Voigt probability density (area 1), as ``scipy.special.voigt_profile``.

    .. math::

        V(x; \\sigma, \\gamma) = \\frac{\\operatorname{Re} w\\big((x + i\\gamma) /
        (\\sigma\\sqrt2)\\big)}{\\sigma\\sqrt{2\\pi}}

    Args:
        x: abscissae, any shape (centred at 0).
        sigma: standard deviation of the Gaussian part, > 0.
        gamma: half width at half maximum of the Lorentzian part, >= 0.

    Example:
        >>> round(float(voigt_profile(0.0, 1.0, 0.0)), 6)  # the normal density at 0
        0.398942
    """
    x, sigma, gamma = _float(x, sigma, gamma)
    z = (x + 1j * gamma) / (sigma * SQRT2)
    return faddeeva(z).real / (sigma * SQRT_2PI)


def voigt(
    x: ArrayLike, height: ArrayLike, center: ArrayLike, sigma: ArrayLike, gamma: ArrayLike
) -> jax.Array:
    """Voigt peak of height h at its centre: :math:`h\\,V(x-c)/V(0)`.

    Args:
        x: abscissae, any shape.
        height: peak height h (the maximum).
        center: position c.
        sigma: Gaussian standard deviation, > 0.
        gamma: Lorentzian half width at half maximum, >= 0.

    Example:
        >>> round(float(voigt(1.0, 3.0, 1.0, 0.7, 0.2)), 5)
        3.0
    """
    x, height, center, sigma, gamma = _float(x, height, center, sigma, gamma)
    return height * voigt_profile(x - center, sigma, gamma) / voigt_profile(0.0, sigma, gamma)


def voigt_area(
    x: ArrayLike, area: ArrayLike, center: ArrayLike, sigma: ArrayLike, gamma: ArrayLike
) -> jax.Array:
    """Voigt peak of given area: :math:`A\\,V(x-c; \\sigma, \\gamma)`.

    Args:
        x: abscissae, any shape.
        area: integral over the real line.
        center: position c.
        sigma: Gaussian standard deviation, > 0.
        gamma: Lorentzian half width at half maximum, >= 0.

    Example:
        >>> round(float(voigt_area(0.0, 2.0, 0.0, 1.0, 0.0)), 6)
        0.797885
    """
    x, area, center, sigma, gamma = _float(x, area, center, sigma, gamma)
    return area * voigt_profile(x - center, sigma, gamma)


def pseudo_voigt(
    x: ArrayLike, height: ArrayLike, center: ArrayLike, sigma: ArrayLike, fraction: ArrayLike
) -> jax.Array:
    """Pseudo-Voigt peak: a Lorentzian fraction mixed with a Gaussian of the same FWHM.

    .. math::

        h\\left[(1-\\eta)\\,e^{-(x-c)^2/(2\\sigma^2)} +
        \\frac{\\eta}{1 + (x-c)^2/\\gamma^2}\\right], \\qquad
        \\gamma = \\sigma\\sqrt{2\\ln 2}

    Args:
        x: abscissae, any shape.
        height: peak height h.
        center: position c.
        sigma: Gaussian standard deviation, > 0.
        fraction: Lorentzian fraction :math:`\\eta` in [0, 1].

    Example:
        >>> float(pseudo_voigt(0.0, 2.0, 0.0, 1.0, 0.3))
        2.0
    """
    x, height, center, sigma, fraction = _float(x, height, center, sigma, fraction)
    gamma = sigma * (GAUSSIAN_FWHM / 2.0)
    return (1.0 - fraction) * gaussian(x, height, center, sigma) + fraction * lorentzian(
        x, height, center, gamma
    )


def skewed_gaussian(
    x: ArrayLike, height: ArrayLike, center: ArrayLike, sigma: ArrayLike, skew: ArrayLike
) -> jax.Array:
    """Skewed Gaussian (skew-normal shape) :math:`h\\,e^{-u^2/2}(1 + \\mathrm{erf}(\\alpha u/\\sqrt2))`.

    With :math:`u = (x-c)/\\sigma` and skewness parameter :math:`\\alpha`; ``skew = 0``
    is the Gaussian peak of height h.

    Args:
        x: abscissae, any shape.
        height: height of the Gaussian factor.
        center: location c (the mode only for ``skew = 0``).
        sigma: scale, > 0.
        skew: :math:`\\alpha`, any real.

    Example:
        >>> float(skewed_gaussian(1.0, 2.0, 1.0, 0.5, 0.0))
        2.0
    """
    x, height, center, sigma, skew = _float(x, height, center, sigma, skew)
    u = (x - center) / sigma
    return height * jnp.exp(-0.5 * u**2) * (1.0 + erf(skew * u / SQRT2))


# ---------------------------------------------------------------------------------------
# Areas, widths, heights
# ---------------------------------------------------------------------------------------


def _finite_limit(limit, center):
    """A limit safe to differentiate: infinite limits replaced by the centre (the caller
    substitutes the limiting value)."""
    return jnp.where(jnp.isinf(limit), center, limit)


def _erf_at(limit, center, scale):
    value = erf((_finite_limit(limit, center) - center) / scale)
    return jnp.where(jnp.isinf(limit), jnp.sign(limit), value)


def _arctan_at(limit, center, scale):
    value = jnp.arctan((_finite_limit(limit, center) - center) / scale)
    return jnp.where(jnp.isinf(limit), jnp.sign(limit) * (math.pi / 2), value)


def _gaussian_integral(a, b, height, center, sigma):
    scale = sigma * SQRT2
    difference = _erf_at(b, center, scale) - _erf_at(a, center, scale)
    return height * sigma * SQRT_2PI / 2.0 * difference


def _lorentzian_integral(a, b, height, center, gamma):
    return height * gamma * (_arctan_at(b, center, gamma) - _arctan_at(a, center, gamma))


def _pseudo_voigt_integral(a, b, height, center, sigma, fraction):
    gamma = sigma * (GAUSSIAN_FWHM / 2.0)
    return (1.0 - fraction) * _gaussian_integral(
        a, b, height, center, sigma
    ) + fraction * _lorentzian_integral(a, b, height, center, gamma)


def _skew_normal_cdf(limit, center, sigma, skew):
    """Skew-normal distribution function :math:`\\Phi(u) - 2T(u, \\alpha)`."""
    u = (_finite_limit(limit, center) - center) / sigma
    value = ndtr(u) - 2.0 * owens_t(u, skew)
    return jnp.where(jnp.isinf(limit), (jnp.sign(limit) + 1.0) / 2.0, value)


def _skewed_gaussian_integral(a, b, height, center, sigma, skew):
    cdf_difference = _skew_normal_cdf(b, center, sigma, skew) - _skew_normal_cdf(
        a, center, sigma, skew
    )
    return height * sigma * SQRT_2PI * cdf_difference


def _voigt_fwhm(sigma, gamma):
    """Exact FWHM of the Voigt profile: Newton on log V from Olivero's approximation."""
    sigma, gamma = _float(sigma, gamma)
    gaussian_width = GAUSSIAN_FWHM * sigma
    lorentzian_width = 2.0 * gamma
    olivero = 0.5346 * lorentzian_width + jnp.sqrt(0.2166 * lorentzian_width**2 + gaussian_width**2)
    scale = sigma * SQRT2
    height_parameter = gamma / scale
    log_half_maximum = jnp.log(faddeeva(1j * height_parameter).real) - math.log(2.0)

    def newton(u, _):
        z = u + 1j * height_parameter
        value = faddeeva(z)
        derivative = -2.0 * z * value + 2j / SQRT_PI
        step = (jnp.log(value.real) - log_half_maximum) / (derivative.real / value.real)
        return u - step, None

    start = lax.stop_gradient(olivero / 2.0 / scale)
    half_width, _ = lax.scan(newton, start, None, length=8)
    return 2.0 * half_width * scale


def _skew_log_shape(u, skew):
    """log of :math:`e^{-u^2/2}(1 + \\mathrm{erf}(\\alpha u/\\sqrt2))` and its u-derivative."""
    t = skew * u
    log_value = -0.5 * u**2 + math.log(2.0) + log_ndtr(t)
    mills = jnp.exp(-0.5 * t**2 - 0.5 * math.log(2.0 * math.pi) - log_ndtr(t))
    return log_value, -u + skew * mills


def _bisect(function, low, high, n_steps):
    """Root of a function decreasing from positive at ``low`` to negative at ``high``."""

    def step(bounds, _):
        low, high = bounds
        middle = 0.5 * (low + high)
        positive = function(middle) > 0
        return (jnp.where(positive, middle, low), jnp.where(positive, high, middle)), None

    (low, high), _ = lax.scan(step, (low, high), None, length=n_steps)
    return 0.5 * (low + high)


def _skewed_gaussian_mode_and_half_points(skew):
    """Standardized mode and the two half-maximum points of the skewed Gaussian.

    Bisection brackets (the mode lies in [-1, 1]; the half-maximum points within 4 of it,
    the shape being log-concave), then one Newton step so that derivatives follow the
    implicit function theorem.
    """
    (skew,) = _float(skew)
    n_steps = 64 if skew.dtype == jnp.float64 else 32
    frozen = lax.stop_gradient(skew)

    def slope(u, alpha):
        return _skew_log_shape(u, alpha)[1]

    one = jnp.ones_like(frozen)
    mode = _bisect(lambda u: slope(u, frozen), -one, one, n_steps)
    slope_derivative = jax.grad(slope)(mode, frozen)
    mode = mode - slope(mode, skew) / slope_derivative

    def drop(u, alpha, mode):
        return _skew_log_shape(u, alpha)[0] - _skew_log_shape(mode, alpha)[0] + math.log(2.0)

    frozen_mode = lax.stop_gradient(mode)
    right = _bisect(lambda u: drop(u, frozen, frozen_mode), frozen_mode, frozen_mode + 4, n_steps)
    left = _bisect(lambda u: -drop(u, frozen, frozen_mode), frozen_mode - 4, frozen_mode, n_steps)
    right = right - drop(right, skew, mode) / _skew_log_shape(right, frozen)[1]
    left = left - drop(left, skew, mode) / _skew_log_shape(left, frozen)[1]
    return mode, left, right


def _skewed_gaussian_fwhm(sigma, skew):
    _, left, right = _skewed_gaussian_mode_and_half_points(skew)
    return sigma * (right - left)


def _skewed_gaussian_height(height, sigma, skew):
    mode, _, _ = _skewed_gaussian_mode_and_half_points(skew)
    return height * jnp.exp(_skew_log_shape(mode, skew)[0])


# ---------------------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------------------


class Lineshape(NamedTuple):
    """A registered lineshape.

    Attributes:
        name: registry key.
        parameters: parameter names in the order of ``profile_fn``'s arguments after x.
        kinds: the role of each parameter, which sets default priors and starting values:
            "height", "area", "center", "width" (> 0), "fraction" (in [0, 1]), "shape",
            "exponent" (> 1/2, Pearson VII), "asymmetry" (in [0, 1), Doniach-Sunjic).
        profile_fn: ``profile_fn(x, *parameters)``.
        area_fn: ``area_fn(*parameters)``, integral over the real line, or None where it
            diverges (Doniach-Sunjic: no ``area`` is derived).
        fwhm_fn: ``fwhm_fn(*parameters)``, full width at half maximum.
        height_fn: ``height_fn(*parameters)``, the profile's maximum.
        integral_fn: ``integral_fn(a, b, *parameters)`` in closed form, or None when there
            is none (``integrate_profile`` then uses quadrature).
    """

    name: str
    parameters: tuple[str, ...]
    kinds: tuple[str, ...]
    profile_fn: Callable[..., jax.Array]
    area_fn: Callable[..., jax.Array] | None
    fwhm_fn: Callable[..., jax.Array]
    height_fn: Callable[..., jax.Array]
    integral_fn: Callable[..., jax.Array] | None


def _voigt_height(height, center, sigma, gamma):
    return jnp.asarray(height)


LINESHAPES: dict[str, Lineshape] = {
    "gaussian": Lineshape(
        "gaussian",
        ("height", "center", "sigma"),
        ("height", "center", "width"),
        gaussian,
        lambda height, center, sigma: height * sigma * SQRT_2PI,
        lambda height, center, sigma: GAUSSIAN_FWHM * sigma,
        lambda height, center, sigma: height,
        _gaussian_integral,
    ),
    "lorentzian": Lineshape(
        "lorentzian",
        ("height", "center", "gamma"),
        ("height", "center", "width"),
        lorentzian,
        lambda height, center, gamma: math.pi * height * gamma,
        lambda height, center, gamma: 2.0 * gamma,
        lambda height, center, gamma: height,
        _lorentzian_integral,
    ),
    "voigt": Lineshape(
        "voigt",
        ("height", "center", "sigma", "gamma"),
        ("height", "center", "width", "width"),
        voigt,
        lambda height, center, sigma, gamma: height / voigt_profile(0.0, sigma, gamma),
        lambda height, center, sigma, gamma: _voigt_fwhm(sigma, gamma),
        _voigt_height,
        None,
    ),
    "voigt_area": Lineshape(
        "voigt_area",
        ("area", "center", "sigma", "gamma"),
        ("area", "center", "width", "width"),
        voigt_area,
        lambda area, center, sigma, gamma: area,
        lambda area, center, sigma, gamma: _voigt_fwhm(sigma, gamma),
        lambda area, center, sigma, gamma: area * voigt_profile(0.0, sigma, gamma),
        None,
    ),
    "pseudo_voigt": Lineshape(
        "pseudo_voigt",
        ("height", "center", "sigma", "fraction"),
        ("height", "center", "width", "fraction"),
        pseudo_voigt,
        lambda height, center, sigma, fraction: (
            height
            * (
                (1.0 - fraction) * sigma * SQRT_2PI
                + fraction * math.pi * sigma * GAUSSIAN_FWHM / 2.0
            )
        ),
        lambda height, center, sigma, fraction: GAUSSIAN_FWHM * sigma,
        lambda height, center, sigma, fraction: height,
        _pseudo_voigt_integral,
    ),
    "skewed_gaussian": Lineshape(
        "skewed_gaussian",
        ("height", "center", "sigma", "skew"),
        ("height", "center", "width", "shape"),
        skewed_gaussian,
        lambda height, center, sigma, skew: height * sigma * SQRT_2PI,
        lambda height, center, sigma, skew: _skewed_gaussian_fwhm(sigma, skew),
        lambda height, center, sigma, skew: _skewed_gaussian_height(height, sigma, skew),
        _skewed_gaussian_integral,
    ),
    "pearson7": Lineshape(
        "pearson7",
        ("height", "center", "sigma", "exponent"),
        ("height", "center", "width", "exponent"),
        pearson7,
        lambda height, center, sigma, exponent: pearson7_area(height, sigma, exponent),
        lambda height, center, sigma, exponent: pearson7_fwhm(sigma, exponent),
        lambda height, center, sigma, exponent: height,
        pearson7_integral,
    ),
    "doniach_sunjic": Lineshape(
        "doniach_sunjic",
        ("height", "center", "gamma", "alpha"),
        ("height", "center", "width", "asymmetry"),
        doniach_sunjic,
        None,
        lambda height, center, gamma, alpha: doniach_sunjic_fwhm(gamma, alpha),
        lambda height, center, gamma, alpha: height,
        doniach_sunjic_integral,
    ),
}


def get_lineshape(name: str) -> Lineshape:
    """The registered lineshape called ``name``; ValueError naming the known ones otherwise.

    Example:
        >>> get_lineshape("lorentzian").parameters
        ('height', 'center', 'gamma')
    """
    if not isinstance(name, str) or name not in LINESHAPES:
        raise ValueError(f"Unknown lineshape {name!r}; choose one of {sorted(LINESHAPES)}.")
    return LINESHAPES[name]


@functools.cache
def gauss_legendre(n_nodes: int) -> tuple[np.ndarray, np.ndarray]:
    """Gauss-Legendre nodes and weights on [-1, 1] (NumPy's ``leggauss``), computed once, on
    first use: 128 nodes take 15 ms, which a fit whose program is cached need not spend."""
    return np.polynomial.legendre.leggauss(n_nodes)


def integrate_profile(
    lineshape: Lineshape,
    a: ArrayLike,
    b: ArrayLike,
    parameters: tuple[ArrayLike, ...],
) -> jax.Array:
    """Integral of a lineshape from a to b: closed form where one exists, else quadrature.

    Closed forms: gaussian (erf), lorentzian (arctan), pseudo_voigt (both), skewed_gaussian
    (the skew-normal distribution function through Owen's T), doniach_sunjic (a complex
    power); pearson7 by its own smooth substitution
    (:func:`gaussmix.models.xps_lineshapes.pearson7_integral`). The Voigt lineshapes use
    128-point Gauss-Legendre quadrature after the substitution
    :math:`x = c + w\\tan\\theta` (w the half width at half maximum), which maps the real
    line onto :math:`(-\\pi/2, \\pi/2)` and makes the Lorentzian tails smooth there.

    Args:
        lineshape: a registered :class:`Lineshape`.
        a, b: integration limits (a <= b, may be infinite), broadcast with the parameters.
        parameters: the lineshape's parameters, in order.

    Example:
        >>> round(float(integrate_profile(LINESHAPES["gaussian"], -jnp.inf, jnp.inf,
        ...                               (1.0, 0.0, 1.0))), 6)
        2.506628
    """
    if lineshape.integral_fn is not None:
        return lineshape.integral_fn(*_float(a, b, *parameters))
    a, b, *parameters = _float(a, b, *parameters)
    center = parameters[lineshape.kinds.index("center")]
    half_width = lax.stop_gradient(0.5 * lineshape.fwhm_fn(*parameters))
    angle_low = jnp.arctan((a - center) / half_width)
    angle_high = jnp.arctan((b - center) / half_width)
    nodes, weights = (jnp.asarray(v, a.dtype) for v in gauss_legendre(128))
    middle = 0.5 * (angle_high + angle_low)
    radius = 0.5 * (angle_high - angle_low)
    angles = middle[..., None] + radius[..., None] * nodes
    x = center[..., None] + half_width[..., None] * jnp.tan(angles)
    jacobian = half_width[..., None] / jnp.cos(angles) ** 2
    values = lineshape.profile_fn(x, *[p[..., None] for p in parameters])
    return radius * jnp.sum(weights * values * jacobian, axis=-1)


# ---------------------------------------------------------------------------------------
# Baselines
# ---------------------------------------------------------------------------------------


def polynomial(x: ArrayLike, coefficients: tuple[ArrayLike, ...]) -> jax.Array:
    """Polynomial baseline :math:`\\sum_k c_k x^k` (Horner).

    Args:
        x: abscissae, any shape.
        coefficients: :math:`(c_0, c_1, \\ldots, c_n)`.

    Example:
        >>> float(polynomial(2.0, (1.0, 0.5, 0.25)))
        3.0
    """
    x, *coefficients = _float(x, *coefficients)
    value = jnp.zeros_like(x) + coefficients[-1]
    for coefficient in coefficients[-2::-1]:
        value = value * x + coefficient
    return value


def exponential(x: ArrayLike, amplitude: ArrayLike, rate: ArrayLike) -> jax.Array:
    """Exponential baseline :math:`a\\,e^{-r x}`.

    Example:
        >>> round(float(exponential(1.0, 2.0, 0.0)), 6)
        2.0
    """
    x, amplitude, rate = _float(x, amplitude, rate)
    return amplitude * jnp.exp(-rate * x)


def _polynomial_integral(a, b, *coefficients):
    def antiderivative(x):
        return polynomial(x, tuple(c / (k + 1) for k, c in enumerate(coefficients))) * x

    return antiderivative(b) - antiderivative(a)


def _exponential_integral(a, b, amplitude, rate):
    # (e^{-ra} - e^{-rb}) / r, continued to r = 0 as b - a.
    small = jnp.abs(rate) < 1e-8
    safe_rate = jnp.where(small, 1.0, rate)
    exact = amplitude * (jnp.exp(-safe_rate * a) - jnp.exp(-safe_rate * b)) / safe_rate
    return jnp.where(small, amplitude * (b - a) * (1.0 - 0.5 * rate * (a + b)), exact)


class Baseline(NamedTuple):
    """A baseline model.

    Attributes:
        name: "polynomial", "exponential", "shirley" or "tougaard".
        parameters: parameter names (``c0 ... cn``, ``amplitude, rate``, ``offset, step``
            or ``offset, b``).
        profile_fn: ``profile_fn(x, *parameters)``; for the active backgrounds (Shirley,
            Tougaard), which depend on the peaks, one that raises: see
            :func:`gaussmix.models.peaks.baseline_curve`.
        integral_fn: ``integral_fn(a, b, *parameters)`` (raises for the active ones).
    """

    name: str
    parameters: tuple[str, ...]
    profile_fn: Callable[..., jax.Array]
    integral_fn: Callable[..., jax.Array]


def _polynomial_profile(x, *coefficients):
    return polynomial(x, coefficients)


BASELINES = (
    "constant",
    "linear",
    "exponential",
    "shirley",
    "tougaard",
    "polynomial degree n (an int)",
)
#: The active backgrounds (functions of the peaks) and their parameter names.
ACTIVE_BASELINE_PARAMETERS = {"shirley": ("offset", "step"), "tougaard": ("offset", "b")}


def _active_profile(x, *parameters):
    raise ValueError(
        "The Shirley and Tougaard backgrounds are functions of the peaks: compute them with "
        "gaussmix.models.peaks.baseline_curve(x, model, params)."
    )


def _active_integral(a, b, *parameters):
    raise ValueError(
        "The integral of a Shirley or Tougaard background is not available; integrate the "
        "peaks (baseline=False), or sum the background curve on a grid."
    )


def baseline_model(baseline: str | int | None) -> Baseline | None:
    """The baseline model for ``baseline``: None, "constant", "linear", "exponential",
    "shirley", "tougaard" or n.

    Example:
        >>> baseline_model("linear").parameters
        ('c0', 'c1')
    """
    if baseline is None:
        return None
    if isinstance(baseline, str):
        degrees = {"constant": 0, "linear": 1}
        if baseline == "exponential":
            return Baseline(
                "exponential", ("amplitude", "rate"), exponential, _exponential_integral
            )
        if baseline in ACTIVE_BASELINE_PARAMETERS:
            parameters = ACTIVE_BASELINE_PARAMETERS[baseline]
            return Baseline(baseline, parameters, _active_profile, _active_integral)
        if baseline not in degrees:
            raise ValueError(
                f"Unknown baseline {baseline!r}; use None, 'constant', 'linear', 'exponential', "
                "'shirley', 'tougaard' or an int n >= 0 for a polynomial of degree n."
            )
        baseline = degrees[baseline]
    if isinstance(baseline, bool) or not isinstance(baseline, int | np.integer) or baseline < 0:
        raise ValueError(
            f"Invalid baseline {baseline!r}; use None, 'constant', 'linear', 'exponential', "
            "'shirley', 'tougaard' or an int n >= 0 for a polynomial of degree n."
        )
    names = tuple(f"c{k}" for k in range(int(baseline) + 1))
    return Baseline("polynomial", names, _polynomial_profile, _polynomial_integral)
