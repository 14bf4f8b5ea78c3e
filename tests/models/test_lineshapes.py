"""Lineshapes against scipy: Faddeeva/Voigt, areas (quad), FWHM (brentq), integrals."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, optimize, special

from gaussmix.models.lineshapes import (
    LINESHAPES,
    baseline_model,
    doniach_sunjic,
    exponential,
    faddeeva,
    get_lineshape,
    integrate_profile,
    polynomial,
    voigt_profile,
)

PARAMETERS = {
    "gaussian": (2.0, 1.0, 0.7),
    "lorentzian": (2.0, 1.0, 0.7),
    "voigt": (2.0, 1.0, 0.7, 0.3),
    "voigt_area": (2.0, 1.0, 0.7, 0.3),
    "pseudo_voigt": (2.0, 1.0, 0.7, 0.4),
    "skewed_gaussian": (2.0, 1.0, 0.7, 3.0),
    "pearson7": (2.0, 1.0, 0.7, 1.6),
    "doniach_sunjic": (2.0, 1.0, 0.7, 0.3),
}


def test_every_registered_lineshape_is_tested():
    assert set(PARAMETERS) == set(LINESHAPES)


def test_faddeeva_matches_scipy_wofz_to_1e13():
    x = np.concatenate([-np.logspace(-3, 3, 150)[::-1], [0.0], np.logspace(-3, 3, 150)])
    y = np.concatenate([[0.0], np.logspace(-8, 3, 120)])
    z = (x[None, :] + 1j * y[:, None]).ravel()
    reference = special.wofz(z)
    value = np.asarray(jax.jit(faddeeva)(jnp.asarray(z)))
    assert np.max(np.abs(value - reference) / np.abs(reference)) < 1e-13
    # The real part (the Voigt profile) keeps its relative accuracy in the Gaussian tails.
    real = np.abs(reference.real) > 1e-300
    error = np.abs(value.real - reference.real)[real] / np.abs(reference.real)[real]
    assert error.max() < 1e-13


def test_faddeeva_derivative_is_the_analytic_one():
    z = jnp.asarray(1.3 + 0.4j)
    derivative = jax.jit(jax.jacfwd(lambda t: faddeeva(z + t)))(0.0)
    step = 1e-6
    numerical = (special.wofz(complex(z) + step) - special.wofz(complex(z) - step)) / (2 * step)
    assert abs(complex(derivative) - numerical) < 1e-8


def asymptotic_faddeeva_derivative(z: complex, terms: int = 30) -> complex:
    """w'(z) = -(i/sqrt(pi)) sum_k (2k+1)!! / (2^k z^(2k+2)), for |z| >= 50 (the terms
    fall by at least (2k+1)/(2|z|^2) each: 30 of them are machine precision)."""
    total, double_factorial = 0.0, 1.0
    for k in range(terms):
        total += (2 * k + 1) * double_factorial / (2**k * z ** (2 * k + 2))
        double_factorial *= 2 * k + 1
    return -1j / np.sqrt(np.pi) * total


@pytest.mark.parametrize("z", [50 + 30j, 300 + 1000j, 20 + 5000j, -100 + 2j, 1e4 + 1e4j])
def test_faddeeva_derivative_keeps_its_precision_far_from_the_origin(z):
    """-2zw + 2i/sqrt(pi) cancels to 1/z^2 of its terms: at |z| = 5 000 it kept 8 digits,
    and the Voigt FWHM's derivative in sigma at sigma << gamma lost them all. The
    continued fraction's own derivative, -2Rw, keeps them."""
    derivative = complex(jax.jit(jax.jacfwd(lambda t: faddeeva(jnp.asarray(z) + t)))(0.0))
    expected = asymptotic_faddeeva_derivative(z)
    assert abs(derivative - expected) <= 1e-13 * abs(expected)


def scipy_voigt_fwhm(sigma: float, gamma: float) -> float:
    peak = special.voigt_profile(0.0, sigma, gamma)
    half = optimize.brentq(
        lambda u: special.voigt_profile(u, sigma, gamma) - peak / 2,
        0.0, 50.0 * (sigma + gamma), xtol=1e-15, rtol=1e-15,
    )  # fmt: skip
    return 2.0 * half


@pytest.mark.parametrize("ratio", [1.0, 1e-1, 1e-2, 1e-3, 1e-4])
def test_voigt_fwhm_derivative_in_sigma_when_sigma_is_far_below_gamma(ratio):
    """d FWHM / d sigma, about 2.77 sigma / gamma for sigma << gamma (a Voigt fitted to a
    Lorentzian: sigma at its lower bound), against central differences of SciPy's Voigt
    FWHM: it was off by 2e-5 at sigma/gamma = 1.4e-3 and by 30 % at 1.4e-4."""
    gamma = 0.7
    sigma = ratio * gamma
    step = 1e-3 * sigma
    expected = (scipy_voigt_fwhm(sigma + step, gamma) - scipy_voigt_fwhm(sigma - step, gamma)) / (
        2 * step
    )
    fwhm = LINESHAPES["voigt"].fwhm_fn
    derivative = jax.grad(lambda s: fwhm(1.0, 0.0, s, gamma))(jnp.asarray(sigma))
    assert float(derivative) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("sigma", [0.1, 1.0, 3.0])
@pytest.mark.parametrize("gamma", [0.0, 1e-3, 0.1, 1.0, 10.0])
def test_voigt_profile_matches_scipy(sigma, gamma):
    x = np.linspace(-50, 50, 2001)
    reference = special.voigt_profile(x, sigma, gamma)
    value = np.asarray(jax.jit(voigt_profile)(x, sigma, gamma))
    error = np.abs(value - reference) / np.where(reference > 0, reference, 1.0)
    core = reference > 1e-30
    assert error[core].max() < 1e-13
    # Deep in the Gaussian tail exp(-u^2) itself amplifies rounding by |log V|: the bound
    # is that condition number times a few ulps (scipy's value carries the same error).
    tail = reference > 1e-300
    bound = 1e-13 + 8 * np.finfo(float).eps * np.abs(np.log(reference[tail]))
    assert np.all(error[tail] < bound)


def test_voigt_profile_in_float32_is_accurate_to_single_precision():
    x = np.linspace(-10, 10, 201).astype(np.float32)
    value = jax.jit(voigt_profile)(x, np.float32(1.0), np.float32(0.5))
    assert value.dtype == jnp.float32
    reference = special.voigt_profile(x.astype(float), 1.0, 0.5)
    assert np.max(np.abs(np.asarray(value) - reference) / reference) < 1e-5


@functools.cache
def _profile(name):
    """The lineshape with its functions compiled (scipy calls them hundreds of times)."""
    lineshape = LINESHAPES[name]
    compiled = lineshape._replace(
        profile_fn=jax.jit(lineshape.profile_fn),
        area_fn=None if lineshape.area_fn is None else jax.jit(lineshape.area_fn),
        fwhm_fn=jax.jit(lineshape.fwhm_fn),
        height_fn=jax.jit(lineshape.height_fn),
    )
    parameters = PARAMETERS[name]
    return compiled, parameters, lambda x: float(compiled.profile_fn(x, *parameters))


@pytest.mark.parametrize("name", sorted(n for n in LINESHAPES if n != "doniach_sunjic"))
def test_area_matches_quadrature(name):
    lineshape, parameters, f = _profile(name)
    area, _ = integrate.quad(f, -np.inf, np.inf, epsabs=0, epsrel=1e-13, limit=500)
    assert float(lineshape.area_fn(*parameters)) == pytest.approx(area, rel=1e-10)


@pytest.mark.parametrize("name", sorted(LINESHAPES))
def test_height_and_fwhm_match_a_root_finder(name):
    lineshape, parameters, f = _profile(name)
    center = parameters[1]
    mode = optimize.minimize_scalar(
        lambda x: -f(x), bracket=(center - 0.5, center + 0.5), tol=1e-12
    ).x
    maximum = f(mode)
    left = optimize.brentq(lambda x: f(x) - maximum / 2, mode - 50, mode, xtol=1e-14)
    right = optimize.brentq(lambda x: f(x) - maximum / 2, mode, mode + 50, xtol=1e-14)
    assert float(lineshape.height_fn(*parameters)) == pytest.approx(maximum, rel=1e-10)
    assert float(lineshape.fwhm_fn(*parameters)) == pytest.approx(right - left, rel=1e-10)


_integral = jax.jit(integrate_profile, static_argnums=0)


@pytest.mark.parametrize("name", sorted(LINESHAPES))
@pytest.mark.parametrize(("a", "b"), [(0.3, 2.5), (-np.inf, 1.2), (1.5, np.inf)])
def test_integral_matches_quadrature(name, a, b):
    _, parameters, f = _profile(name)
    if name == "doniach_sunjic" and b == np.inf:  # its tail toward +inf is not integrable
        assert float(_integral(LINESHAPES[name], a, b, parameters)) == np.inf
        return
    reference, _ = integrate.quad(f, a, b, epsabs=0, epsrel=1e-13, limit=500)
    value = float(_integral(LINESHAPES[name], a, b, parameters))
    assert value == pytest.approx(reference, rel=1e-10)


@pytest.mark.parametrize("name", ["voigt", "skewed_gaussian", "doniach_sunjic"])
def test_numerical_fwhm_has_implicit_function_derivatives(name):
    lineshape, parameters, _ = _profile(name)
    gradient = jax.jit(jax.grad(lambda p: LINESHAPES[name].fwhm_fn(*p)))(jnp.asarray(parameters))
    step = 1e-6
    for index in range(len(parameters)):
        up = np.array(parameters, float)
        down = up.copy()
        up[index] += step
        down[index] -= step
        numerical = (float(lineshape.fwhm_fn(*up)) - float(lineshape.fwhm_fn(*down))) / (2 * step)
        assert float(gradient[index]) == pytest.approx(numerical, rel=1e-6, abs=1e-8)


def test_integral_over_the_real_line_has_finite_derivatives():
    lineshape = LINESHAPES["gaussian"]
    gradient = jax.grad(lambda p: integrate_profile(lineshape, -jnp.inf, jnp.inf, tuple(p)))(
        jnp.asarray([2.0, 1.0, 0.7])
    )
    np.testing.assert_allclose(gradient, [0.7 * np.sqrt(2 * np.pi), 0.0, 2 * np.sqrt(2 * np.pi)])


def test_lineshapes_broadcast_over_x():
    x = np.linspace(-3, 3, 7)
    for name in PARAMETERS:
        lineshape, parameters, f = _profile(name)
        values = lineshape.profile_fn(x, *parameters)
        assert values.shape == x.shape
        single = [f(v) for v in x]
        np.testing.assert_allclose(values, single, rtol=1e-14)


def test_polynomial_and_exponential_baselines():
    x = np.linspace(-2, 3, 11)
    coefficients = (1.0, -0.5, 0.25, 0.1)
    np.testing.assert_allclose(polynomial(x, coefficients), np.polyval(coefficients[::-1], x))
    np.testing.assert_allclose(exponential(x, 2.0, 0.3), 2.0 * np.exp(-0.3 * x))
    for baseline, arguments in [(3, coefficients), ("exponential", (2.0, 0.3))]:
        model = baseline_model(baseline)
        reference, _ = integrate.quad(
            lambda v, m=model, a=arguments: float(m.profile_fn(v, *a)), -1.0, 2.5
        )
        assert float(model.integral_fn(-1.0, 2.5, *arguments)) == pytest.approx(reference)
    assert baseline_model("constant").parameters == ("c0",)
    assert baseline_model("linear").parameters == ("c0", "c1")
    assert baseline_model(None) is None


def test_exponential_integral_at_zero_rate_is_the_constant_one():
    model = baseline_model("exponential")
    assert float(model.integral_fn(0.0, 2.0, 3.0, 0.0)) == pytest.approx(6.0)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: get_lineshape("gausian"), "Unknown lineshape 'gausian'"),
        (lambda: baseline_model("quadratic"), "Unknown baseline 'quadratic'"),
        (lambda: baseline_model(-1), "Invalid baseline -1"),
        (lambda: baseline_model(True), "Invalid baseline True"),
    ],
)
def test_unknown_names_are_value_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


SQRT_2_LN_2 = np.sqrt(2.0 * np.log(2.0))

#: Each lineshape written from its formula (module docstring) in NumPy/scipy.
FORMULAS = {
    "gaussian": lambda x, h, c, s: h * np.exp(-0.5 * ((x - c) / s) ** 2),
    "lorentzian": lambda x, h, c, g: h / (1.0 + ((x - c) / g) ** 2),
    "voigt": lambda x, h, c, s, g: (
        h * special.voigt_profile(x - c, s, g) / special.voigt_profile(0.0, s, g)
    ),
    "voigt_area": lambda x, a, c, s, g: a * special.voigt_profile(x - c, s, g),
    "pseudo_voigt": lambda x, h, c, s, eta: (
        h
        * (
            (1.0 - eta) * np.exp(-0.5 * ((x - c) / s) ** 2)
            + eta / (1.0 + ((x - c) / (s * SQRT_2_LN_2)) ** 2)
        )
    ),
    "skewed_gaussian": lambda x, h, c, s, a: (
        h * np.exp(-0.5 * ((x - c) / s) ** 2) * (1.0 + special.erf(a * (x - c) / (s * np.sqrt(2))))
    ),
    "pearson7": lambda x, h, c, s, m: h * (1.0 + ((x - c) / s) ** 2) ** -m,
    "doniach_sunjic": lambda x, h, c, g, a: (
        h
        * np.cos(np.pi * a / 2 - (1 - a) * np.arctan((x - c) / g))
        / (1.0 + ((x - c) / g) ** 2) ** ((1 - a) / 2)
        / np.cos(np.pi * a / (2 * (2 - a))) ** (2 - a)
    ),
}


@pytest.mark.parametrize("name", sorted(LINESHAPES))
def test_profile_is_its_formula(name):
    """Each profile against its formula written independently (scipy's voigt_profile and
    erf). Elementary functions round to a few ulps and the Faddeeva function to 1e-13
    relative (test above); measured at most 1.4e-16 relative to the height (Voigt
    6.7e-16): bound 7e-15. A width constant off in its 7th digit moves it by ~1e-7."""
    x = np.linspace(-6.0, 8.0, 57)
    lineshape, parameters, _ = _profile(name)
    value = np.asarray(lineshape.profile_fn(x, *parameters))
    reference = FORMULAS[name](x, *parameters)
    np.testing.assert_allclose(value, reference, rtol=0, atol=7e-15 * np.max(np.abs(reference)))


# -- Pearson VII and Doniach-Sunjic against lmfit, and their integrals ---------------------

XPS_X = np.linspace(-30.0, 32.0, 311)


@pytest.mark.parametrize("exponent", [0.51, 0.8, 1.0, 2.5, 40.0])
def test_pearson7_is_lmfits_with_its_area_as_amplitude(exponent):
    lmfit_lineshapes = pytest.importorskip("lmfit.lineshapes")
    lineshape = get_lineshape("pearson7")
    parameters = (2.3, 1.2, 0.7, exponent)
    area = float(lineshape.area_fn(*parameters))
    reference = lmfit_lineshapes.pearson7(XPS_X, area, 1.2, 0.7, exponent)
    value = np.asarray(lineshape.profile_fn(XPS_X, *parameters))
    np.testing.assert_allclose(value, reference, rtol=1e-12, atol=0)


@pytest.mark.parametrize("alpha", [0.0, 0.05, 0.3, 0.7, 0.95])
def test_doniach_sunjic_is_lmfits_mirrored_about_the_centre(alpha):
    """lmfit's tail lies toward lower x (kinetic energy); ours toward higher x (binding
    energy): ours(x) = lmfit(2c - x) with amplitude h gamma^(1-alpha) / s_max."""
    lmfit_lineshapes = pytest.importorskip("lmfit.lineshapes")
    height, center, gamma = 1.7, 0.5, 0.8
    value = np.asarray(doniach_sunjic(XPS_X, height, center, gamma, alpha))
    # s_max by a root finder, independent of the closed form
    mode = optimize.minimize_scalar(
        lambda x: -lmfit_lineshapes.doniach(x, 1.0, 0.0, 1.0, alpha),
        bounds=(-50, 0.5),
        method="bounded",
        options={"xatol": 1e-12},
    ).x
    s_max = lmfit_lineshapes.doniach(mode, 1.0, 0.0, 1.0, alpha)
    amplitude = height * gamma ** (1 - alpha) / s_max
    reference = lmfit_lineshapes.doniach(2 * center - XPS_X, amplitude, center, gamma, alpha)
    np.testing.assert_allclose(value, reference, rtol=1e-12, atol=0)
    # the tail: more intensity at c + 10 gamma than at c - 10 gamma for alpha > 0
    far = np.asarray(
        doniach_sunjic(np.array([center - 10, center + 10.0]), 1.0, center, 1.0, alpha)
    )
    assert far[1] > far[0] or alpha == 0


@pytest.mark.parametrize("exponent", [0.51, 0.6, 1.0, 1.7, 3.0, 100.0])
def test_pearson7_integral_matches_the_incomplete_beta_closed_form(exponent):
    """:math:`\\int_0^U (1+u^2)^{-m} du = B(1/2, m-1/2) I_{U^2/(1+U^2)}(1/2, m-1/2)/2`."""

    def half(u):
        s = 1.0 if np.isinf(u) else u * u / (1 + u * u)
        full = special.beta(0.5, exponent - 0.5)
        return np.sign(u) * 0.5 * full * special.betainc(0.5, exponent - 0.5, s)

    lineshape = get_lineshape("pearson7")
    height, center, sigma = 1.3, 0.2, 0.9
    area = float(lineshape.area_fn(height, center, sigma, exponent))
    for a, b in [(-np.inf, np.inf), (-np.inf, 0.3), (-2.0, 1.5), (-np.inf, 40.0), (0.5, 0.9)]:
        value = float(_integral(lineshape, a, b, (height, center, sigma, exponent)))
        ua, ub = (a - center) / sigma, (b - center) / sigma
        reference = height * sigma * (half(ub) - half(ua)) if np.isfinite(a) else None
        if reference is None:
            reference = height * sigma * (half(ub) + 0.5 * special.beta(0.5, exponent - 0.5))
        assert value == pytest.approx(reference, rel=1e-9, abs=1e-12 * area)


def test_pearson7_integral_and_doniach_sunjic_integral_derivatives_by_finite_differences():
    for name, parameters in [
        ("pearson7", (1.3, 0.2, 0.9, 0.8)),
        ("doniach_sunjic", (1.3, 0.2, 0.9, 0.3)),
    ]:
        lineshape = get_lineshape(name)
        for a, b in [(-np.inf, 0.7), (-1.0, 3.0), (-np.inf, 25.0)]:
            gradient = jax.grad(
                lambda p, s=lineshape, a=a, b=b: integrate_profile(s, a, b, tuple(p))
            )(jnp.asarray(parameters))
            for index in range(4):
                step = 1e-6
                up, down = np.array(parameters), np.array(parameters)
                up[index] += step
                down[index] -= step
                numerical = (
                    float(integrate_profile(lineshape, a, b, tuple(up)))
                    - float(integrate_profile(lineshape, a, b, tuple(down)))
                ) / (2 * step)
                assert float(gradient[index]) == pytest.approx(numerical, rel=1e-6, abs=1e-8)


def test_doniach_sunjic_area_diverges_and_is_not_derived():
    lineshape = get_lineshape("doniach_sunjic")
    assert lineshape.area_fn is None
    parameters = (1.0, 0.0, 1.0, 0.2)
    ends = [float(_integral(lineshape, -np.inf, b, parameters)) for b in (1e4, 1e6, 1e8)]
    # grows like b^alpha (1 + O(1/b)): 100^0.2 = 2.5 per factor 100, toward +inf
    assert ends[2] - ends[1] == pytest.approx((ends[1] - ends[0]) * 100**0.2, rel=1e-3)
    # alpha = 0: the Lorentzian's pi h gamma
    assert float(_integral(lineshape, -np.inf, np.inf, (1.0, 0.0, 1.0, 0.0))) == pytest.approx(
        np.pi
    )
