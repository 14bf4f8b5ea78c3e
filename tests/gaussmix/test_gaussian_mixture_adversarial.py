"""GaussianMixture under adversarial input (issue 14): every input either works or raises
ValueError, a fit that says it converged holds finite parameters, and responsibilities
are finite rows summing to 1.

Arrays come from a small fixed set of shapes (JAX compiles once per shape and options,
and hypothesis reuses them); the options include invalid ones.
"""

import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from gaussmix import GaussianMixture
from gaussmix.inference.em import ConvergenceWarning

SHAPES = [(1, 1), (3, 2), (12, 2), (12, 2)]
SPECIAL = [np.nan, np.inf, -np.inf, 1e300, -1e300, 1e30, 1e-300, 0.0]


@st.composite
def arrays(draw):
    """A (N, D) array of a fixed shape: normal values with NaN/inf/huge/tiny entries,
    constant columns or duplicated rows, as float64, float32 or int."""
    shape = draw(st.sampled_from(SHAPES))
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    x = rng.normal(size=shape) * draw(st.sampled_from([1.0, 1e-20, 1e20]))
    kind = draw(st.sampled_from(["plain", "plain", "special", "constant", "duplicated"]))
    if kind == "special":
        x.flat[rng.integers(x.size)] = draw(st.sampled_from(SPECIAL))
    elif kind == "constant":
        x[:, rng.integers(shape[1])] = draw(st.sampled_from([0.0, 7.0, 1e25]))
    elif kind == "duplicated":
        x[:] = x[0]
    dtype = draw(st.sampled_from(["float64", "float32", "int"]))
    with np.errstate(over="ignore", invalid="ignore"):
        if dtype == "int":
            return np.nan_to_num(x, nan=0.0, posinf=1e6, neginf=-1e6).clip(-1e6, 1e6).astype(int)
        return x.astype(dtype)


VALID = {
    "n_components": st.integers(1, 4),
    "covariance_type": st.sampled_from(["full", "tied", "diag", "spherical"]),
    "reg_covar": st.sampled_from([1e-6, 0.0, 1.0]),
    "tol": st.sampled_from([1e-3, 0.0]),
    "max_iter": st.sampled_from([0, 1, 5]),
    "n_init": st.sampled_from([1, 2]),
    "init_params": st.sampled_from(["kmeans", "k-means++", "random", "random_from_data"]),
    "random_state": st.integers(0, 3),
}
INVALID = {
    "n_components": 0,
    "covariance_type": "Full",
    "reg_covar": float("nan"),
    "tol": -1.0,
    "max_iter": -1,
    "n_init": 0,
    "init_params": "",
    "random_state": "seed",
}


@st.composite
def options(draw):
    """Valid options, one of them made invalid one time in four."""
    chosen = draw(st.fixed_dictionaries(VALID))
    if draw(st.booleans()) and draw(st.booleans()):
        broken = draw(st.sampled_from(sorted(INVALID)))
        chosen[broken] = INVALID[broken]
        if broken == "reg_covar":
            chosen[broken] = draw(st.sampled_from([-1.0, float("nan"), float("inf")]))
    return chosen


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(x=arrays(), chosen=options(), points=arrays())
def test_fit_and_predict_work_or_raise_value_error(x, chosen, points):
    model = GaussianMixture(**chosen)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(x)
    except ValueError as error:
        event(f"fit refused: {str(error).split(' ')[0:3]}")
        return
    event("fitted")
    fitted = [model.weights_, model.means_, model.covariances_, model.precisions_cholesky_]
    if model.converged_:
        assert all(np.all(np.isfinite(a)) for a in fitted)
        assert model.weights_.sum() == pytest.approx(1.0, abs=1e-5)
    if points.shape[1] != x.shape[1]:
        with pytest.raises(ValueError):
            model.predict(points)
        return
    for method in ("predict_proba", "score_samples", "predict"):
        try:
            answer = getattr(model, method)(points)
        except ValueError:
            continue
        if method == "predict_proba":
            assert np.all(np.isfinite(answer))
            # K terms each rounded once, in float32 at worst
            np.testing.assert_allclose(answer.sum(axis=1), 1.0, atol=1e-5)
        elif method == "score_samples":
            assert not np.any(np.isnan(answer))
        else:
            assert np.all((answer >= 0) & (answer < model.n_components))
