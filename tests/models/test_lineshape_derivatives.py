"""Closed-form Jacobians of the lineshapes and baselines against JAX's forward mode
(float64, 1e-10 relative), in the body of a peak, its far tails, at huge centres and at
widths near the bottom of their support."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gaussmix.models.lineshape_derivatives import (
    baseline_value_and_jacobian,
    lineshape_value_and_jacobian,
)
from gaussmix.models.lineshapes import LINESHAPES, baseline_model
from gaussmix.models.peaks import peak_model, site_support

RTOL = 1e-10


def autodiff(profile_fn, x, parameters):
    parameters = jnp.asarray(parameters, jnp.float64)
    return jax.jacfwd(lambda p: profile_fn(x, *p))(parameters)


def assert_close(closed, automatic):
    closed, automatic = np.asarray(closed), np.asarray(automatic)
    assert closed.shape == automatic.shape
    assert np.all(np.isfinite(closed) == np.isfinite(automatic))
    finite = np.isfinite(automatic)
    scale = np.max(np.abs(automatic[finite]), initial=0.0)
    np.testing.assert_allclose(closed[finite], automatic[finite], rtol=RTOL, atol=RTOL * scale)


def parameters_of(name, center, width):
    values = {"height": 2.5, "area": 4.0, "center": center, "width": width}
    values.update({"fraction": 0.35, "shape": 1.7, "exponent": 1.6, "asymmetry": 0.3})
    return [values[kind] for kind in LINESHAPES[name].kinds]


#: (x, centre, width), eight points each (one shape: the eager kernels compile once):
#: the body of the peak, far tails, a huge centre, a narrow peak, a width near zero.
CASES = (
    (np.linspace(-3.0, 5.0, 8), 1.0, 0.8),
    (np.array([-1e6, -400.0, -60.0, -38.0, 38.0, 60.0, 400.0, 1e6]), 0.0, 1.0),
    (1e8 + np.linspace(-5.0, 5.0, 8), 1e8, 1.3),
    (np.linspace(-1e-3, 1e-3, 8), 0.0, 1e-4),
    (np.array([-1e-9, -1e-10, 0.0, 1e-11, 3e-10, 1e-9, 1e-3, 1.0]), 0.0, 1e-10),
)


@pytest.mark.parametrize("name", sorted(LINESHAPES))
def test_lineshape_jacobian_matches_forward_mode(name):
    lineshape = LINESHAPES[name]
    for x, center, width in CASES:
        x = jnp.asarray(x, jnp.float64)
        parameters = parameters_of(name, center, width)
        value, closed = lineshape_value_and_jacobian(lineshape, x, parameters)
        np.testing.assert_array_equal(value, lineshape.profile_fn(x, *parameters))
        assert_close(closed, autodiff(lineshape.profile_fn, x, parameters))


@pytest.mark.parametrize(
    "baseline, parameters",
    [
        ("constant", (1.5,)),
        ("linear", (1.5, -0.02)),
        (3, (1.5, -0.02, 3e-4, -1e-6)),
        ("exponential", (2.0, 0.03)),
        ("exponential", (2.0, -0.03)),
    ],
)
def test_baseline_jacobian_matches_forward_mode(baseline, parameters):
    model = baseline_model(baseline)
    for x in (np.linspace(-50.0, 120.0, 8), 1e4 + np.linspace(0.0, 1.0, 8)):
        x = jnp.asarray(x, jnp.float64)
        value, closed = baseline_value_and_jacobian(model, x, parameters)
        np.testing.assert_array_equal(value, model.profile_fn(x, *parameters))
        assert_close(closed, autodiff(model.profile_fn, x, parameters))


def test_zero_width_lies_outside_the_support():
    """A zero width never reaches the derivatives: the site's support refuses it."""
    model = peak_model(("gaussian", "lorentzian", "pseudo_voigt"))
    for name in ("peak0_sigma", "peak1_gamma", "peak2_sigma"):
        assert not bool(site_support(model, name)(0.0))
        assert bool(site_support(model, name)(1e-300))
