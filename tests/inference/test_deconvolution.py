"""Measurement errors in the EM core (extreme deconvolution, issue 19 item 2): astroML's
XDGMM from the same start, scipy's densities under Sigma_k + S_n, a row-by-row reference
of the expected statistics with missing entries, monotone EM for every covariance type,
local optimality against a quasi-Newton polish, S = 0 the ordinary fit, hostile input."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from scipy import optimize
from scipy.stats import multivariate_normal

from gaussmix.inference.em import deconvolution, fit_em
from gaussmix.inference.em.parameters import with_covariances
from gaussmix.models.priors import covariance_layout

XDGMM = pytest.importorskip("astroML.density_estimation").XDGMM

#: Rows and features of most fits here: tests sharing a shape and a configuration share
#: one compiled program (compilation, not EM, is most of this module's time).
N_ROWS, N_FEATURES = 100, 2


def _full(covariances, layout, n_components, n_features):
    """(K, D, D) covariance matrices of any layout (NumPy)."""
    c = np.asarray(covariances, np.float64)
    if layout == "full":
        return c
    if layout == "tied":
        return np.broadcast_to(c, (n_components, n_features, n_features))
    if layout == "diag":
        return np.stack([np.diag(v) for v in c])
    return c[:, None, None] * np.eye(n_features)


def _noisy(rng, n, n_features=2, scale=0.5):
    """Two clusters observed with heteroscedastic correlated errors: (w, S, x)."""
    labels = rng.integers(0, 2, n)
    centres = np.array([[0.0] * n_features, [3.0] + [1.5] * (n_features - 1)])
    x = centres[labels] + rng.normal(size=(n, n_features)) @ np.diag(
        np.linspace(1, 0.6, n_features)
    )
    factor = rng.normal(size=(n, n_features, n_features)) * scale
    noise = factor @ np.swapaxes(factor, -1, -2)
    errors = np.einsum(
        "nij,nj->ni",
        np.linalg.cholesky(noise + 1e-12 * np.eye(n_features)),
        rng.normal(size=(n, n_features)),
    )
    return x + errors, noise, x


def _holes(rng, x, fraction):
    x = x.copy()
    holes = rng.random(x.shape) < fraction
    holes[np.arange(x.shape[0]), rng.integers(0, x.shape[1], x.shape[0])] = False
    x[holes] = np.nan
    return x


def _start(n_features):
    means = np.array([[0.5] * n_features, [2.5] + [1.0] * (n_features - 1)])
    covariances = np.stack([np.eye(n_features), 1.5 * np.eye(n_features)])
    return np.array([0.4, 0.6]), means, covariances


def _start_kwargs(max_iter):
    weights, means, covariances = _start(N_FEATURES)
    return dict(
        n_components=2,
        max_iter=max_iter,
        weights_init=weights,
        means_init=means,
        precisions_init=np.linalg.inv(covariances),
    )


def _likelihood(result, w, noise):
    """The observed-data log-likelihood of a fit's parameters (full layout)."""
    norm, _ = deconvolution.log_responsibilities(
        np.nan_to_num(w),
        (~np.isnan(w)).astype(float),
        deconvolution.as_measurement_covariances(noise, w),
        *(np.asarray(result.params[k]) for k in ("weights", "means", "covariances")),
        "full",
    )
    return float(np.sum(norm))


@pytest.mark.parametrize("diagonal", [False, True])
def test_matches_astroml_xdgmm_step_by_step(diagonal):
    """Five EM steps from one start: astroML's XDGMM (NumPy, Bovy et al.'s equations)
    and fit_em agree to rounding, with full and with diagonal (N, D) errors."""
    rng = np.random.default_rng(2)
    w, noise, _ = _noisy(rng, N_ROWS, N_FEATURES)
    given = noise
    if diagonal:
        given = rng.uniform(0.05, 1.0, w.shape)
        noise = np.stack([np.diag(v) for v in given])
    weights, means, covariances = _start(N_FEATURES)
    reference = XDGMM(2)
    reference.alpha, reference.mu, reference.V = weights.copy(), means.copy(), covariances.copy()
    for _ in range(5):
        reference._EMstep(w, noise)
    result = fit_em(w, tol=0.0, reg_covar=0.0, measurement_covariances=given, **_start_kwargs(5))
    assert int(result.n_iter) == 5
    np.testing.assert_allclose(result.params["weights"], reference.alpha, atol=1e-10)
    np.testing.assert_allclose(result.params["means"], reference.mu, atol=1e-8)
    np.testing.assert_allclose(result.params["covariances"], reference.V, atol=1e-8)
    assert _likelihood(result, w, noise) == pytest.approx(reference.logL(w, noise), rel=1e-12)


def test_at_convergence_at_least_as_good_as_astroml():
    rng = np.random.default_rng(3)
    w, noise, _ = _noisy(rng, N_ROWS, N_FEATURES)
    weights, means, covariances = _start(N_FEATURES)
    reference = XDGMM(2)
    reference.alpha, reference.mu, reference.V = weights.copy(), means.copy(), covariances.copy()
    previous = reference.logL(w, noise)
    for _ in range(500):  # XDGMM.fit's loop and stopping rule, from this start
        reference._EMstep(w, noise)
        current = reference.logL(w, noise)
        if current < previous + 1e-5:
            break
        previous = current
    result = fit_em(
        w, tol=1e-10, reg_covar=0.0, measurement_covariances=noise, **_start_kwargs(2000)
    )
    assert bool(result.converged)
    assert _likelihood(result, w, noise) >= reference.logL(w, noise) - 1e-9 * N_ROWS


@pytest.mark.parametrize("covariance_type", ["full", "tied", "diag", "spherical"])
def test_log_density_matches_scipy_with_missing_entries(covariance_type):
    """log p(w_O) = logsumexp_k log pi_k + log N(w_O | mu_O, (Sigma_k + S_n)_OO)."""
    rng = np.random.default_rng(5)
    w, noise, _ = _noisy(rng, 40, 3)
    w = _holes(rng, w, 0.3)
    noise[np.isnan(w)[:, :, None] | np.isnan(w)[:, None, :]] = np.nan  # ignored there
    layout = covariance_layout(covariance_type)
    covariances = {
        "full": np.stack([np.eye(3) + 0.3, 2 * np.eye(3) - 0.2]),
        "tied": np.eye(3) + 0.3,
        "diag": np.array([[1.0, 2.0, 0.5], [0.7, 0.3, 1.5]]),
        "spherical": np.array([0.8, 1.7]),
    }[layout]
    weights, means = np.array([0.3, 0.7]), np.array([[0.0, 0.5, -0.5], [2.0, 1.0, 1.0]])
    validated = deconvolution.as_measurement_covariances(noise, w)
    norm, log_resp = deconvolution.log_responsibilities(
        np.nan_to_num(w),
        (~np.isnan(w)).astype(float),
        validated,
        weights,
        means,
        covariances,
        covariance_type,
    )
    sigma = _full(covariances, layout, 2, 3)
    for n, row in enumerate(w):
        o = ~np.isnan(row)
        log_prob = [
            np.log(weights[k])
            + multivariate_normal(means[k][o], (sigma[k] + noise[n])[np.ix_(o, o)]).logpdf(row[o])
            for k in range(2)
        ]
        assert float(norm[n]) == pytest.approx(np.logaddexp.reduce(log_prob), abs=1e-10)
        np.testing.assert_allclose(
            log_resp[n], log_prob - np.logaddexp.reduce(log_prob), atol=1e-10
        )


def test_expected_statistics_match_row_by_row_reference():
    """b, B and the statistics against submatrices solved directly, row by row (NaN and
    measurement errors together)."""
    rng = np.random.default_rng(7)
    w, noise, _ = _noisy(rng, 30, 3)
    w = _holes(rng, w, 0.3)
    weight = rng.uniform(0.5, 2.0, 30)
    weights = np.array([0.45, 0.55])
    means = np.array([[0.0, 0.0, 0.0], [3.0, 1.5, 1.5]])
    sigma = np.stack([np.eye(3) + 0.4, 1.5 * np.eye(3) - 0.3])
    parameters = with_covariances(weights, means, sigma, "full")
    centre = np.array([1.0, 0.5, -0.5])
    measurements = deconvolution.Measurements(
        (~np.isnan(w)).astype(float), deconvolution.as_measurement_covariances(noise, w)
    )
    statistics = deconvolution.block_statistics(
        parameters, np.nan_to_num(w), weight, measurements, centre, "full", 8
    )
    counts, first, second, total = np.zeros(2), np.zeros((2, 3)), np.zeros((2, 3, 3)), 0.0
    for n, row in enumerate(w):
        o = ~np.isnan(row)
        t = [(sigma[k] + noise[n])[np.ix_(o, o)] for k in range(2)]
        log_prob = np.array(
            [
                np.log(weights[k]) + multivariate_normal(means[k][o], t[k]).logpdf(row[o])
                for k in range(2)
            ]
        )
        norm = np.logaddexp.reduce(log_prob)
        total += weight[n] * norm
        for k in range(2):
            r = weight[n] * np.exp(log_prob[k] - norm)
            gain = sigma[k][:, o] @ np.linalg.inv(t[k])
            b = means[k] + gain @ (row[o] - means[k][o]) - centre
            big_b = sigma[k] - gain @ sigma[k][o, :]
            counts[k] += r
            first[k] += r * b
            second[k] += r * (np.outer(b, b) + big_b)
    np.testing.assert_allclose(statistics.counts, counts, rtol=1e-10)
    np.testing.assert_allclose(statistics.first, first, rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(statistics.second, second, rtol=1e-9, atol=1e-10)
    assert float(statistics.log_likelihood) == pytest.approx(total, rel=1e-12)
    assert float(statistics.total_weight) == pytest.approx(weight.sum())


#: The configuration of the monotone-EM fits, shared by the S = 0 comparison.
MONOTONE = dict(n_components=2, nan_policy="marginalize", max_iter=20, tol=0.0)


@pytest.mark.parametrize(
    ("covariance_type", "priors"),
    [("tied", None), ("diag", None), ("VEV", None), ("full", "default")],
)
def test_observed_likelihood_never_decreases(covariance_type, priors):
    """Every covariance model (a classic one, one of mclust's, MAP) gets a proper EM: the
    observed-data objective never decreases (missing entries too)."""
    rng = np.random.default_rng(9)
    w, noise, _ = _noisy(rng, N_ROWS, N_FEATURES)
    w = _holes(rng, w, 0.15)
    result = fit_em(
        w,
        covariance_type=covariance_type,
        priors=priors,
        measurement_covariances=noise,
        **MONOTONE,
    )
    bounds = np.asarray(result.lower_bounds)[: int(result.n_iter)]
    assert int(result.n_iter) == 20
    assert np.all(np.diff(bounds) >= -1e-12), np.diff(bounds).min()


@pytest.mark.parametrize("holes", [0.0, 0.3])
def test_zero_errors_give_the_ordinary_fit(holes):
    """S = 0: the complete-data fit, or with NaN the missing-data one (missing.py's
    pattern E-step, a different computation), to rounding."""
    rng = np.random.default_rng(12)
    w, _, _ = _noisy(rng, N_ROWS, N_FEATURES)
    w = _holes(rng, w, holes) if holes else w
    plain = fit_em(w, covariance_type="tied", **MONOTONE)
    zero = fit_em(
        w,
        covariance_type="tied",
        measurement_covariances=np.zeros((N_ROWS, N_FEATURES, N_FEATURES)),
        **MONOTONE,
    )
    for a, b in zip(jax.tree.leaves(plain.params), jax.tree.leaves(zero.params), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(plain.lower_bounds, zero.lower_bounds, rtol=1e-10)


@pytest.mark.parametrize("covariance_type", ["diag", "spherical"])
def test_diagonal_errors_with_a_diagonal_model_take_the_diagonal_path(covariance_type):
    """(N, D) variances with a diag or spherical model run the O(N K D) E-step: the fit
    equals the one with the same errors as (N, D, D) matrices (the general E-step)."""
    rng = np.random.default_rng(19)
    w, _, _ = _noisy(rng, N_ROWS, N_FEATURES)
    w = _holes(rng, w, 0.15)
    variances = rng.uniform(0.05, 1.5, w.shape)
    variances[np.isnan(w)] = np.nan  # ignored where the entry is missing
    matrices = np.stack([np.diag(v) for v in np.nan_to_num(variances)])
    fits = [
        fit_em(w, covariance_type=covariance_type, measurement_covariances=s, **MONOTONE)
        for s in (variances, matrices)
    ]
    for a, b in zip(jax.tree.leaves(fits[0].params), jax.tree.leaves(fits[1].params), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(fits[0].lower_bounds, fits[1].lower_bounds, rtol=1e-12)


def _negative_log_likelihood(theta, w, noise, n_features):
    weights = np.exp(np.concatenate([[0.0], theta[:1]]))
    weights /= weights.sum()
    means = theta[1 : 1 + 2 * n_features].reshape(2, n_features)
    rows, cols = np.tril_indices(n_features)
    covariances = []
    for values in theta[1 + 2 * n_features :].reshape(2, -1):
        lower = np.zeros((n_features, n_features))
        lower[rows, cols] = values
        lower[np.diag_indices(n_features)] = np.exp(np.diag(lower))
        covariances.append(lower @ lower.T)
    total = 0.0
    for row, s in zip(w, noise, strict=True):
        o = ~np.isnan(row)
        total += np.logaddexp.reduce(
            [
                np.log(weights[k])
                + multivariate_normal(means[k][o], (covariances[k] + s)[np.ix_(o, o)]).logpdf(
                    row[o]
                )
                for k in range(2)
            ]
        )
    return -total


def test_quasi_newton_polish_gains_nothing():
    """At the fit the observed-data likelihood (errors and missing entries) is at a local
    maximum: L-BFGS on scipy's likelihood from there gains nothing."""
    rng = np.random.default_rng(4)
    w, noise, _ = _noisy(rng, N_ROWS, N_FEATURES, scale=0.25)
    w = _holes(rng, w, 0.1)
    result = fit_em(
        w,
        nan_policy="marginalize",
        reg_covar=0.0,
        tol=1e-13,
        measurement_covariances=noise,
        **_start_kwargs(2000),
    )
    assert bool(result.converged)
    weights = np.asarray(result.params["weights"])
    rows, cols = np.tril_indices(N_FEATURES)
    parts = [np.log(weights[1:]) - np.log(weights[0]), np.asarray(result.params["means"]).ravel()]
    for sigma in np.asarray(result.params["covariances"]):
        lower = np.linalg.cholesky(sigma)
        lower[np.diag_indices(N_FEATURES)] = np.log(np.diag(lower))
        parts.append(lower[rows, cols])
    theta = np.concatenate(parts)
    start = _negative_log_likelihood(theta, w, noise, N_FEATURES)
    assert -start / N_ROWS == pytest.approx(float(result.lower_bound), abs=1e-9)
    polished = optimize.minimize(
        _negative_log_likelihood, theta, args=(w, noise, N_FEATURES), method="L-BFGS-B"
    )
    assert polished.fun >= start - 1e-6, start - polished.fun
    assert np.max(np.abs(polished.x - theta)) < 1e-3


def test_integer_weights_equal_repeated_rows():
    rng = np.random.default_rng(14)
    w, noise, _ = _noisy(rng, N_ROWS, N_FEATURES)
    repeats = rng.integers(1, 4, N_ROWS)
    kwargs = dict(tol=0.0, **_start_kwargs(5))
    weighted = fit_em(
        w, sample_weight=repeats.astype(float), measurement_covariances=noise, **kwargs
    )
    repeated = fit_em(
        np.repeat(w, repeats, 0), measurement_covariances=np.repeat(noise, repeats, 0), **kwargs
    )
    for a, b in zip(
        jax.tree.leaves(weighted.params), jax.tree.leaves(repeated.params), strict=True
    ):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-9, atol=1e-12)


def test_batch_equals_one_by_one():
    rng = np.random.default_rng(15)
    datasets = [_noisy(rng, N_ROWS, N_FEATURES) for _ in range(2)]
    w = np.stack([d[0] for d in datasets])
    noise = np.stack([d[1] for d in datasets])
    kwargs = dict(tol=0.0, **_start_kwargs(5))
    batch = fit_em(w, measurement_covariances=noise, **kwargs)
    for b in range(2):
        single = fit_em(w[b], measurement_covariances=noise[b], **kwargs)
        for name in ("weights", "means", "covariances"):
            np.testing.assert_allclose(
                batch.params[name][b], single.params[name], rtol=1e-9, atol=1e-12
            )


def test_float32_follows_float64():
    rng = np.random.default_rng(16)
    w, noise, _ = _noisy(rng, N_ROWS, N_FEATURES)
    kwargs = dict(tol=0.0, **_start_kwargs(5))
    single = fit_em(w.astype(np.float32), measurement_covariances=noise, **kwargs)
    double = fit_em(w, measurement_covariances=noise, **kwargs)
    assert np.asarray(single.params["means"]).dtype == np.float32
    np.testing.assert_allclose(single.params["means"], double.params["means"], atol=5e-4)
    np.testing.assert_allclose(
        single.params["covariances"], double.params["covariances"], atol=5e-4
    )


SHARDED = r"""
import json, os, sys
import jax
jax.config.update("jax_enable_x64", True)
import numpy as np
from gaussmix.inference.em import fit_em
from gaussmix.inference.shard import fit_em_sharded
rng = np.random.default_rng(0)
w = np.concatenate([rng.normal(0, 1, (50, 2)), rng.normal(4, 1, (51, 2))])  # 101: padding
factor = rng.normal(size=(101, 2, 2)) * 0.5
noise = factor @ np.swapaxes(factor, 1, 2)
w = w + rng.normal(size=w.shape)
w[::7, 1] = np.nan
kwargs = dict(n_components=2, weights_init=[0.5, 0.5], means_init=[[0, 0], [4, 4]],
              precisions_init=np.stack([np.eye(2)] * 2), max_iter=10, tol=0.0,
              nan_policy="marginalize", measurement_covariances=noise)
one, two = fit_em(w, **kwargs), fit_em_sharded(w, devices=2, **kwargs)
print(json.dumps({"devices": len(jax.devices()), "difference": max(
    float(np.max(np.abs(np.asarray(one.params[k]) - np.asarray(two.params[k]))))
    for k in ("weights", "means", "covariances"))}))
"""


@pytest.mark.slow
def test_rows_and_their_errors_split_over_two_devices():
    """fit_em_sharded on 2 forced CPU devices (a fresh interpreter; 101 rows, so one
    device holds a padding row) equals fit_em, NaN and errors together."""
    env = dict(
        os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu"
    )
    run = subprocess.run(
        [sys.executable, "-c", SHARDED], capture_output=True, text=True, env=env, check=True
    )
    answer = json.loads(run.stdout.strip().splitlines()[-1])
    assert answer["devices"] == 2
    assert answer["difference"] < 1e-10


def _square(n=5, d=2):
    return np.zeros((n, d)), np.stack([np.eye(d)] * n)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda x, s: s[:-1], r"has shape \(4, 2, 2\); expected \(5, 2, 2\)"),
        (lambda x, s: s[:, :1], r"expected \(5, 2, 2\) .* or \(5, 2\)"),
        (lambda x, s: s.astype(str), "must be numeric"),
        (
            lambda x, s: np.where(np.arange(5)[:, None, None] == 2, np.nan, s),
            r"non-finite .* index \(2, 0, 0\)",
        ),
        (lambda x, s: s + np.array([[0, 1.0], [0, 0]]), r"\[0\] is not symmetric"),
        (
            lambda x, s: np.where(np.arange(5)[:, None, None] == 3, [[1.0, 2.0], [2.0, 1.0]], s),
            r"\[3\] is not positive semi-definite \(smallest eigenvalue -1",
        ),
        (lambda x, s: -np.ones((5, 2)), "negative variances"),
        (lambda x, s: np.full((5, 2), np.inf), "non-finite"),
    ],
)
def test_bad_measurement_covariances_are_refused(make, message):
    x, s = _square()
    x = x + np.arange(10.0).reshape(5, 2)
    with pytest.raises(ValueError, match=message):
        fit_em(x, n_components=1, measurement_covariances=make(x, s))


def test_nan_in_errors_of_missing_entries_is_ignored():
    rng = np.random.default_rng(17)
    w, noise, _ = _noisy(rng, N_ROWS, N_FEATURES)
    w[::4, 1] = np.nan
    poisoned = noise.copy()
    poisoned[::4, 1, :] = np.nan
    poisoned[::4, :, 1] = np.nan
    kwargs = dict(nan_policy="marginalize", tol=0.0, **_start_kwargs(5))
    a = fit_em(w, measurement_covariances=noise, **kwargs)
    b = fit_em(w, measurement_covariances=poisoned, **kwargs)
    np.testing.assert_array_equal(np.asarray(a.params["means"]), np.asarray(b.params["means"]))


def test_new_data_of_the_same_shape_does_not_retrace(monkeypatch):
    traces = []
    original = deconvolution.block_statistics

    def counting(*args, **kwargs):
        traces.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(deconvolution, "block_statistics", counting)
    rng = np.random.default_rng(18)
    kwargs = dict(n_components=2, covariance_type="diag", max_iter=3)
    w, noise, _ = _noisy(rng, 57, 2)  # a shape no other test uses
    fit_em(w, measurement_covariances=noise, **kwargs)
    traced = len(traces)
    assert traced <= 1
    w2, noise2, _ = _noisy(rng, 57, 2)
    fit_em(w2 + 1.0, measurement_covariances=noise2, seed=3, **kwargs)
    assert len(traces) == traced
