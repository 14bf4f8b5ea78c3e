"""The trial's decrease of the objective in :func:`gaussmix.inference.map.levenberg_marquardt.map_step`:
summed point by point below float64 (the state keeps the (M,) half deviances), the
difference of the objectives in float64 (the state keeps none). Both ways give the same
float64 fits: the same iterations, parameters and RSS to rounding."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gaussmix.inference.map import levenberg_marquardt as lm
from gaussmix.inference.map.families import FAMILIES
from gaussmix.inference.map.problem import MAPProblem, Sites
from gaussmix.models.peaks import peak_model, peaks

MODEL = peak_model(("gaussian",) * 3, "linear")
PROGRAM = functools.partial(
    peaks, lineshapes=("gaussian",) * 3, baseline="linear", likelihood="normal", ties={}
)
SITES = Sites(
    MODEL.site_names, tuple(() for _ in MODEL.site_names), MODEL.site_names.index("sigma")
)


def spectra(n_spectra, n_points=300, seed=0):
    """Three Gaussians on a line with noise, and starts 10 % off (P3's recipe)."""
    rng = np.random.default_rng(seed)
    x = np.linspace(0.0, 100.0, n_points)
    truth = np.column_stack(
        [rng.uniform(5, 15, n_spectra), rng.uniform(15, 30, n_spectra), rng.uniform(2, 5, n_spectra),
         rng.uniform(5, 15, n_spectra), rng.uniform(40, 60, n_spectra), rng.uniform(2, 5, n_spectra),
         rng.uniform(5, 15, n_spectra), rng.uniform(70, 85, n_spectra), rng.uniform(2, 5, n_spectra),
         rng.uniform(0, 3, n_spectra), rng.uniform(-0.02, 0.02, n_spectra)]
    )  # fmt: skip
    curve = truth[:, 9:10] + truth[:, 10:11] * x
    for k in range(3):
        h, c, s = (truth[:, 3 * k + i, None] for i in range(3))
        curve = curve + h * np.exp(-0.5 * ((x - c) / s) ** 2)
    y = curve + 0.5 * rng.normal(size=curve.shape)
    return x, y, truth * (1 + rng.uniform(-0.1, 0.1, truth.shape))


def fit(x, y, start, dtype):
    """Each spectrum's map_step loop to convergence, compiled anew (so that a patched
    keeps_half_deviances is traced): parameters, RSS, trial steps and the state's
    half deviances' length."""
    settings = lm.MAPSettings(jnp.asarray(1e-10), jnp.asarray(1e-10), jnp.asarray(200))

    def one(y_one, theta):
        noise = jnp.asarray(0.5, dtype)
        problem = MAPProblem(PROGRAM, SITES, "y", FAMILIES["normal"], x, y_one, {})
        problem = problem.with_priors(theta, noise)

        def body(carry):
            state, _ = carry
            state, info = lm.map_step(state, problem, settings)
            return state, info.done

        state, _ = jax.lax.while_loop(
            lambda carry: ~carry[1], body, (lm.map_init(theta, noise, problem), False)
        )
        return state.point.params, state.point.rss, state.n_iter, state.point.half_deviances

    params, rss, n_iter, half_deviances = jax.jit(jax.vmap(one))(
        jnp.asarray(y, dtype), jnp.asarray(start, dtype)
    )
    return np.asarray(params), np.asarray(rss), np.asarray(n_iter), half_deviances.shape[1]


def test_float64_keeps_no_half_deviances_and_fits_as_point_by_point(monkeypatch):
    x, y, start = spectra(6)
    x = jnp.asarray(x)
    params, rss, n_iter, kept = fit(x, y, start, jnp.float64)
    assert kept == 0
    monkeypatch.setattr(lm, "keeps_half_deviances", lambda dtype: True)
    pointwise_params, pointwise_rss, pointwise_n_iter, kept = fit(x, y, start, jnp.float64)
    assert kept == x.shape[0]
    np.testing.assert_array_equal(n_iter, pointwise_n_iter)
    # Measured: parameters and RSS 2.4e-16 relative apart at most (the two decreases
    # differ by rounding only); bounds 100x.
    np.testing.assert_allclose(params, pointwise_params, rtol=3e-14)
    np.testing.assert_allclose(rss, pointwise_rss, rtol=3e-14)


@pytest.mark.parametrize(("dtype", "kept"), [(jnp.float32, True), (jnp.float64, False)])
def test_the_state_keeps_half_deviances_below_float64_only(dtype, kept):
    assert lm.keeps_half_deviances(dtype) is kept
    problem = MAPProblem(None, SITES, "y", None, jnp.zeros(7, dtype), jnp.zeros(7, dtype), {})
    state = lm.map_init(jnp.ones(11, dtype), jnp.ones((), dtype), problem)
    assert state.point.half_deviances.shape == ((7,) if kept else (0,))
