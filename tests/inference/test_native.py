"""The compiled CPU kernel of the full-covariance E-step (inference/native.py).

Layers: the kernel against a NumPy float64 reference written from the definitions (features,
softmax, weighted sums), over shapes that exercise every tile remainder and the padding of
the last block of rows; extreme log-probability gaps (exponentials that underflow); vmap;
bit-identical repeated calls; a whole EM fit through the kernel against XLA's blocks. The
lane kernel (many small datasets, pool_fit's E-step) the same way: every K it is compiled
for, the three layouts, float32 and float64, rows not a multiple of a vector; each dataset
alone and in a batch shared among threads bit for bit; vmap and leading axes; underflow,
weight-0 components and NaN parameters. The whole
fits (native.pool_fit: E-step, M-step, collapse and convergence tests in C++) against a
NumPy EM written from the textbook, step for step (the same steps and flags, the same
parameters to 1e-9), for every K, the three layouts and float32; each dataset alone and in
a batch bit for bit; masks, max_iter, a collapse; clear errors on bad shapes. The
build: cache reuse, a damaged cached library, folders created 0700; safety: a planted
library (whose constructor leaves a marker) with the right name in a cache folder that is
writable by group or others, owned by another uid, a symbolic link, or reached through a
folder someone else created, or as a symbolic link or unsafe file, is never loaded; no
shared fallback under the temporary directory; silence without a compiler, one warning
when a compiler fails; the switch (GAUSSMIX_NATIVE, set_enabled) and status().
"""

import os
import shutil
import stat
import subprocess
import sys
import tempfile
import warnings
from importlib import resources
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import logsumexp

from gaussmix.inference import cache_folder, em, native


@pytest.fixture(scope="module")
def kernel():
    """Skip where no C++ compiler exists; where one does, the kernel must build."""
    try:
        native._compiler()
    except (native._Unavailable, native._Refused) as error:
        pytest.skip(f"no C++ compiler: {error}")
    if not native.enabled():
        pytest.skip("GAUSSMIX_NATIVE turns the compiled kernel off")
    with warnings.catch_warnings():
        warnings.simplefilter("error", native.NativeBuildWarning)
        assert native.usable(np.float64), native._state.get("reason")


def features(x):
    rows, cols = np.triu_indices(x.shape[1])
    return np.concatenate([x[:, rows] * x[:, cols], x, np.ones((len(x), 1))], axis=1)


def reference(x, weight, natural):
    """(packed (K, F), log-likelihood) from the definitions, in float64."""
    x, weight, natural = (np.asarray(a, np.float64) for a in (x, weight, natural))
    phi = features(x)
    log_prob = phi @ natural
    norm = logsumexp(log_prob, axis=1)
    responsibilities = np.exp(log_prob - norm[:, None])
    return (weight[:, None] * responsibilities).T @ phi, float(weight @ norm)


def problem(n_rows, n_features, n_components, seed=0, spread=1.0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n_rows, n_features))
    weight = rng.uniform(0.0, 2.0, n_rows)
    weight[rng.random(n_rows) < 0.1] = 0.0
    n_columns = n_features * (n_features + 1) // 2 + n_features + 1
    natural = spread * rng.normal(size=(n_columns, n_components)) / np.sqrt(n_columns)
    return x, weight, natural


def run(x, weight, natural, dtype):
    arrays = (jnp.asarray(a, dtype) for a in (x, weight, natural))
    packed, log_likelihood = jax.jit(native.full_statistics)(*arrays)
    return np.asarray(packed, np.float64), float(log_likelihood)


# (N, D, K): one row; component counts around the tile of 6 (1, 5, 6, 7, 13, 16) and a
# feature count that is odd (the M-step's last column alone); rows not a multiple of any
# block; D = 32 (blocks of 64 rows in float64, 128 in float32) with several blocks
SHAPES = [(1, 1, 1), (37, 2, 5), (1000, 5, 7), (513, 8, 13), (700, 32, 16), (200, 3, 6)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_kernel_matches_the_definitions(kernel, shape, dtype):
    x, weight, natural = problem(*shape, spread=8.0)
    expected_packed, expected_log_likelihood = reference(x, weight, natural)
    packed, log_likelihood = run(x, weight, natural, dtype)
    tolerance = 1e-12 if dtype == np.float64 else 2e-5
    scale = np.abs(expected_packed).max()
    np.testing.assert_allclose(packed, expected_packed, rtol=0, atol=tolerance * scale)
    assert log_likelihood == pytest.approx(expected_log_likelihood, rel=tolerance)


def test_underflowing_exponentials_give_zero_responsibilities(kernel):
    """Gaps of 10 to 2000 between the components' log probabilities, around the point
    (708 in float64) below which the kernel's exponential is flushed to 0."""
    x, weight, natural = problem(400, 4, 3, seed=1)
    natural[-1] = [0.0, -700.0, -2000.0]  # the constant column: fixed gaps per component
    x[:100] *= 30.0  # rows where the quadratic terms move the gaps by hundreds
    expected_packed, expected_log_likelihood = reference(x, weight, natural)
    packed, log_likelihood = run(x, weight, natural, np.float64)
    assert np.isfinite(packed).all() and np.isfinite(log_likelihood)
    np.testing.assert_allclose(packed, expected_packed, rtol=1e-12, atol=1e-300)
    assert log_likelihood == pytest.approx(expected_log_likelihood, rel=1e-12)


def test_vmap_equals_each_member(kernel):
    members = [problem(150, 3, 4, seed=seed) for seed in range(3)]
    stacked = [jnp.asarray(np.stack(parts)) for parts in zip(*members, strict=True)]
    packed, log_likelihood = jax.jit(jax.vmap(native.full_statistics))(*stacked)
    for index, member in enumerate(members):
        expected_packed, expected_log_likelihood = reference(*member)
        np.testing.assert_allclose(packed[index], expected_packed, rtol=1e-12, atol=1e-12)
        assert float(log_likelihood[index]) == pytest.approx(expected_log_likelihood, rel=1e-12)


def test_repeated_calls_are_bit_identical(kernel):
    """Rows are cut into a fixed number of chunks summed in order, whatever threads run."""
    x, weight, natural = problem(5000, 6, 5, seed=2)
    first = run(x, weight, natural, np.float64)
    for _ in range(3):
        again = run(x, weight, natural, np.float64)
        assert np.array_equal(first[0], again[0]) and first[1] == again[1]


def test_fit_em_through_the_kernel_equals_xla(kernel, monkeypatch):
    """A streamed full-covariance fit (several blocks), with the kernel and with XLA's blocks:
    the same lower bound at every iteration and the same parameters, to rounding."""
    rng = np.random.default_rng(3)
    x = np.concatenate([rng.normal(3 * k, 1.0 + k, (1500, 3)) for k in range(3)])
    options = dict(n_components=3, covariance_type="full", max_iter=30, tol=0.0, seed=0)
    with_kernel = em.fit_em(x, block_rows=576, **options)
    monkeypatch.setenv("GAUSSMIX_NATIVE", "0")
    assert not native.usable(x.dtype)
    with_xla = em.fit_em(x, block_rows=576, **options)
    np.testing.assert_allclose(with_kernel.lower_bounds, with_xla.lower_bounds, rtol=1e-10)
    for name in ("weights", "means", "covariances"):
        np.testing.assert_allclose(
            with_kernel.params[name], with_xla.params[name], rtol=1e-8, atol=1e-10
        )


# -- the lane kernel: many small datasets side by side (gaussmix.inference.em.pool) ---------


def lane_features(x_rows, layout):
    """(n, F) features [q(x), x, 1] of one (D, n) dataset for a layout."""
    x = x_rows.T
    if layout == "full":
        quadratic = features(x)[:, : -x.shape[1] - 1]
    elif layout == "diag":
        quadratic = x * x
    else:
        quadratic = np.sum(x * x, axis=1, keepdims=True)
    return np.concatenate([quadratic, x, np.ones((len(x), 1))], axis=1)


def lane_reference(x_rows, natural, layout):
    """(packed (B, K, F), log-likelihoods (B,)) from the definitions, in float64."""
    packed, log_likelihood = [], []
    arrays = (np.asarray(x_rows, np.float64), np.asarray(natural, np.float64))
    for rows, eta in zip(*arrays, strict=True):
        phi = lane_features(rows, layout)
        with np.errstate(invalid="ignore"):  # a weight-0 component: -inf log-probabilities
            log_prob = phi @ eta
        norm = logsumexp(log_prob, axis=1)
        packed.append(np.exp(log_prob - norm[:, None]).T @ phi)
        log_likelihood.append(norm.sum())
    return np.array(packed), np.array(log_likelihood)


def lane_problem(n_datasets, n_features, n_rows, n_components, layout, seed=0, spread=3.0):
    rng = np.random.default_rng(seed)
    x_rows = rng.normal(size=(n_datasets, n_features, n_rows))
    n_quadratic = {
        "full": n_features * (n_features + 1) // 2,
        "diag": n_features,
        "spherical": 1,
    }[layout]
    n_columns = n_quadratic + n_features + 1
    natural = spread * rng.normal(size=(n_datasets, n_columns, n_components))
    natural[:, :n_quadratic] = -np.abs(natural[:, :n_quadratic])  # bounded log-probabilities
    return x_rows, natural


def lane_run(x_rows, natural, layout, dtype):
    arrays = (jnp.asarray(a, dtype) for a in (x_rows, natural))
    packed, log_likelihood = jax.jit(native.lane_statistics, static_argnums=2)(*arrays, layout)
    assert packed.dtype == dtype and log_likelihood.dtype == dtype
    return np.asarray(packed, np.float64), np.asarray(log_likelihood, np.float64)


# (B, D, n, K): one dataset of one row; rows not a multiple of a vector (4 or 8 rows);
# the bootstrap's 272 x 2; every K from 1 to LANE_COMPONENTS appears
LANE_SHAPES = [
    (1, 1, 1, 1),
    (3, 2, 7, 2),
    (13, 2, 272, 3),
    (5, 3, 37, 4),
    (2, 5, 61, 5),
    (4, 2, 9, 6),
    (2, 4, 50, 7),
    (3, 1, 16, 8),
    (2, 3, 33, 9),
    (6, 2, 100, 10),
]


@pytest.mark.parametrize("shape", LANE_SHAPES)
@pytest.mark.parametrize("layout", ["full", "diag", "spherical"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_lane_kernel_matches_the_definitions(kernel, shape, layout, dtype):
    x_rows, natural = lane_problem(*shape, layout)
    expected_packed, expected_log_likelihood = lane_reference(x_rows, natural, layout)
    packed, log_likelihood = lane_run(x_rows, natural, layout, dtype)
    tolerance = 1e-12 if dtype == np.float64 else 2e-5
    scale = np.abs(expected_packed).max()
    np.testing.assert_allclose(packed, expected_packed, rtol=0, atol=tolerance * scale)
    np.testing.assert_allclose(log_likelihood, expected_log_likelihood, rtol=tolerance)


def test_lane_kernel_each_dataset_alone_is_bit_identical(kernel):
    """Each dataset is summed whole by one thread in a fixed order: the same bits alone, in
    a batch of 64 (shared among XLA's threads), and on every repeated call."""
    x_rows, natural = lane_problem(64, 2, 272, 4, "full", seed=1)
    packed, log_likelihood = lane_run(x_rows, natural, "full", np.float64)
    for _ in range(3):
        again = lane_run(x_rows, natural, "full", np.float64)
        assert np.array_equal(packed, again[0]) and np.array_equal(log_likelihood, again[1])
    for index in (0, 17, 63):
        alone = lane_run(x_rows[index : index + 1], natural[index : index + 1], "full", np.float64)
        assert np.array_equal(alone[0][0], packed[index])
        assert alone[1][0] == log_likelihood[index]


def test_lane_kernel_vmap_and_leading_axes(kernel):
    x_rows, natural = lane_problem(6, 3, 40, 3, "diag", seed=2)
    expected = lane_run(x_rows, natural, "diag", np.float64)
    shaped = jax.jit(native.lane_statistics, static_argnums=2)(
        jnp.asarray(x_rows.reshape(2, 3, 3, 40)), jnp.asarray(natural.reshape(2, 3, 7, 3)), "diag"
    )
    mapped = jax.jit(jax.vmap(native.lane_statistics, in_axes=(0, 0, None)), static_argnums=2)(
        jnp.asarray(x_rows), jnp.asarray(natural), "diag"
    )
    shared = jax.jit(jax.vmap(native.lane_statistics, in_axes=(None, 0, None)), static_argnums=2)(
        jnp.asarray(x_rows[:1]), jnp.asarray(natural[:, None]), "diag"
    )
    for got in (shaped, mapped):
        assert np.array_equal(np.asarray(got[0]).reshape(expected[0].shape), expected[0])
        assert np.array_equal(np.asarray(got[1]).reshape(-1), expected[1])
    # one dataset under six parameter sets (the dataset broadcast to the batch)
    reference_shared = lane_reference(np.repeat(x_rows[:1], 6, axis=0), natural, "diag")
    np.testing.assert_allclose(np.asarray(shared[0])[:, 0], reference_shared[0], rtol=1e-12)


def test_lane_kernel_underflow_nan_and_empty_components(kernel):
    """A component far below the others gets zero responsibilities (its exponentials
    flushed to 0); a component of weight 0 (log-probability -inf) too; NaN parameters give
    NaN statistics and log-likelihood (the fit is flagged as failed), never a finite
    number."""
    x_rows, natural = lane_problem(3, 2, 30, 3, "full", seed=3)
    natural[0, -1] = [0.0, -800.0, -2000.0]
    natural[1, -1, 2] = -np.inf
    natural[2, 0, 1] = np.nan
    packed, log_likelihood = lane_run(x_rows, natural, "full", np.float64)
    expected_packed, expected_log_likelihood = lane_reference(x_rows[:2], natural[:2], "full")
    np.testing.assert_allclose(packed[:2], expected_packed, rtol=1e-12, atol=1e-300)
    np.testing.assert_allclose(log_likelihood[:2], expected_log_likelihood, rtol=1e-12)
    assert np.all(packed[0, 1:] == 0) and np.all(packed[1, 2] == 0)
    assert np.isnan(log_likelihood[2]) and np.isnan(packed[2]).any()


def test_lane_kernel_refuses_too_many_components(kernel):
    x_rows, natural = lane_problem(1, 2, 10, native.LANE_COMPONENTS + 1, "full")
    with pytest.raises(ValueError, match="components"):
        native.lane_statistics(jnp.asarray(x_rows), jnp.asarray(natural), "full")


# -- whole EM fits of many small datasets (native.pool_fit) ---------------------------------


def reference_em(x, weights, means, covariances, layout, rtol, reg_covar, max_iter):
    """A maximum-likelihood EM fit of one (n, D) dataset in float64 from the textbook
    (densities by scipy's logsumexp, covariances about the new means), with mclust's
    stopping rule: |L_t - L_{t-1}| < rtol (1/n + |L_{t-1}|) on the mean log-likelihood
    L_t of the parameters entering step t, a collapse (a covariance not positive
    definite), or max_iter steps. (weights, means, covariances, log-likelihood,
    converged, collapsed, n_iter)."""
    n, d = x.shape
    previous, n_iter = -np.inf, 0
    while n_iter < max_iter:
        n_iter += 1
        if layout == "full":
            dense = covariances
        elif layout == "diag":
            dense = np.stack([np.diag(c) for c in covariances])
        else:
            dense = covariances[:, None, None] * np.eye(d)
        log_prob = np.stack(
            [
                np.log(w) + gaussian_log_density(x, m, c)
                for w, m, c in zip(weights, means, dense, strict=True)
            ],
            axis=1,
        )
        norm = logsumexp(log_prob, axis=1)
        bound = norm.sum() / n
        r = np.exp(log_prob - norm[:, None])
        counts = r.sum(0) + 10 * np.finfo(np.float64).eps
        weights = counts / counts.sum()
        means = r.T @ x / counts[:, None]
        centred = x[None] - means[:, None]
        scatter = np.einsum("nk,kni,knj->kij", r, centred, centred) / counts[:, None, None]
        if layout == "full":
            covariances = scatter + reg_covar * np.eye(d)
            collapsed = any(np.linalg.eigvalsh(c)[0] <= 0 for c in covariances)
        elif layout == "diag":
            covariances = np.diagonal(scatter, axis1=1, axis2=2) + reg_covar
            collapsed = bool(np.any(covariances <= 0))
        else:
            covariances = np.trace(scatter, axis1=1, axis2=2) / d + reg_covar
            collapsed = bool(np.any(covariances <= 0))
        tolerance = rtol * (1 / n + (abs(previous) if np.isfinite(previous) else 0))
        converged = abs(bound - previous) < tolerance
        if converged or collapsed:
            break
        previous = bound
    return weights, means, covariances, bound * n, converged, collapsed, n_iter


def gaussian_log_density(x, mean, covariance):
    """(n,) log N(x | mean, covariance) through the Cholesky factor."""
    lower = np.linalg.cholesky(covariance)
    z = np.linalg.solve(lower, (x - mean).T)
    return (
        -0.5 * (z * z).sum(0) - np.log(np.diag(lower)).sum() - 0.5 * len(mean) * np.log(2 * np.pi)
    )


def fit_problem(n_datasets, n_features, n_rows, n_components, layout, seed=0):
    """Datasets of K clusters each and a start near (not at) their centres, in a layout."""
    rng = np.random.default_rng(seed)
    centres = 4 * rng.normal(size=(n_components, n_features))
    labels = rng.integers(0, n_components, size=(n_datasets, n_rows))
    x = centres[labels] + rng.normal(size=(n_datasets, n_rows, n_features))
    weights = np.full(n_components, 1 / n_components)
    means = centres + 0.5 * rng.normal(size=centres.shape)
    covariances = {
        "full": np.stack([np.eye(n_features)] * n_components),
        "diag": np.ones((n_components, n_features)),
        "spherical": np.ones(n_components),
    }[layout]
    return x, weights, means, covariances


def fit_run(
    x,
    weights,
    means,
    covariances,
    layout,
    dtype,
    rtol=1e-8,
    reg_covar=1e-6,
    max_iter=500,
    mask=None,
):
    """native.pool_fit of the (B, n, D) datasets from one start (jitted), as NumPy."""
    n_datasets = len(x)
    centre = x.mean(axis=1)
    x_rows = np.swapaxes(x - centre[:, None], 1, 2)
    factor = np.asarray(em.precisions_cholesky_from_covariances(jnp.asarray(covariances), layout))
    starts = tuple(np.stack([leaf] * n_datasets) for leaf in (weights, means, factor))
    mask = np.ones(n_datasets, bool) if mask is None else mask

    def call(x_rows, centre, starts, mask, rtol, reg_covar):
        return native.pool_fit(x_rows, centre, starts, mask, rtol, reg_covar, layout, max_iter)

    arrays = [jnp.asarray(a, dtype) for a in (x_rows, centre)]
    starts = tuple(jnp.asarray(a, dtype) for a in starts)
    fits = jax.jit(call)(
        *arrays, starts, jnp.asarray(mask), *(jnp.asarray(v, dtype) for v in (rtol, reg_covar))
    )
    return [np.asarray(a) for a in fits]


# (B, D, n, K): the bootstrap's 272 x 2; every K from 1 to LANE_COMPONENTS
FIT_SHAPES = [
    (3, 2, 272, 1),
    (4, 2, 272, 2),
    (3, 3, 150, 3),
    (2, 1, 90, 4),
    (2, 4, 300, 5),
    (2, 2, 400, 7),
    (2, 3, 500, 10),
]


@pytest.mark.parametrize("shape", FIT_SHAPES)
@pytest.mark.parametrize("layout", ["full", "diag", "spherical"])
def test_pool_fit_kernel_matches_a_textbook_em(kernel, shape, layout):
    """Each dataset's fit equals a NumPy EM written from the definitions: the same number
    of steps, flags, and parameters and log-likelihood to 1e-9 (float64)."""
    n_datasets, n_components = shape[0], shape[3]
    x, weights, means, covariances = fit_problem(*shape, layout, seed=n_components)
    got = fit_run(x, weights, means, covariances, layout, np.float64)
    for b in range(n_datasets):
        expected = reference_em(x[b], weights, means, covariances, layout, 1e-8, 1e-6, 500)
        assert (got[5][b], got[6][b], got[7][b]) == expected[4:], b  # converged, collapsed, n_iter
        for have, want, name in zip(
            got[:3], expected[:3], ("weights", "means", "covariances"), strict=True
        ):
            np.testing.assert_allclose(have[b], want, rtol=1e-9, atol=1e-9, err_msg=name)
        np.testing.assert_allclose(got[4][b], expected[3], rtol=1e-12)
        precisions = np.asarray(
            em.precisions_cholesky_from_covariances(jnp.asarray(got[2][b]), layout)
        )
        np.testing.assert_allclose(got[3][b], precisions, rtol=1e-9)


def test_pool_fit_kernel_float32(kernel):
    x, weights, means, covariances = fit_problem(3, 2, 272, 3, "full", seed=4)
    wide = fit_run(x, weights, means, covariances, "full", np.float64, rtol=1e-5)
    narrow = fit_run(x, weights, means, covariances, "full", np.float32, rtol=1e-5)
    assert narrow[0].dtype == np.float32 and narrow[7].dtype == np.int32
    assert np.all(narrow[5])
    np.testing.assert_allclose(narrow[1], wide[1], atol=1e-3)
    np.testing.assert_allclose(narrow[4], wide[4], rtol=1e-5)


def test_pool_fit_kernel_each_dataset_alone_is_bit_identical(kernel):
    """Each fit runs whole in one thread: the same bits alone, in a batch of 64 (shared
    among XLA's threads), and on repeated calls."""
    problem = fit_problem(64, 2, 272, 3, "full", seed=5)
    batch = fit_run(*problem, "full", np.float64)
    again = fit_run(*problem, "full", np.float64)
    assert all(np.array_equal(a, b) for a, b in zip(batch, again, strict=True))
    x, *start = problem
    for index in (0, 31, 63):
        alone = fit_run(x[index : index + 1], *start, "full", np.float64)
        assert all(np.array_equal(a[0], b[index]) for a, b in zip(alone, batch, strict=True))


def test_pool_fit_kernel_mask_collapse_and_max_iter(kernel):
    x, weights, means, covariances = fit_problem(3, 2, 60, 2, "diag", seed=6)
    masked = fit_run(
        x, weights, means, covariances, "diag", np.float64, mask=np.array([True, False, True])
    )
    assert np.isneginf(masked[4][1]) and masked[7][1] == 0 and not masked[5][1]
    assert np.all(masked[0][1] == 0) and np.all(masked[3][1] == 0)
    assert np.isfinite(masked[4][[0, 2]]).all()
    # max_iter: the fit stops there, not converged
    short = fit_run(x, weights, means, covariances, "diag", np.float64, rtol=0.0, max_iter=3)
    assert np.all(short[7] == 3) and not short[5].any()
    # a component far from every row gets none: its variance is 0 (reg_covar 0), it collapses
    far = means.copy()
    far[1] = 1e4
    collapsed = fit_run(x, weights, far, covariances, "diag", np.float64, reg_covar=0.0)
    assert np.all(collapsed[6]) and np.all(collapsed[7] == 1) and not collapsed[5].any()


def test_pool_fit_kernel_refuses_bad_shapes(kernel):
    x = jnp.zeros((2, 2, 10))
    centre = jnp.zeros((2, 2))
    scalars = (jnp.asarray(1e-5), jnp.asarray(0.0))

    def starts(k, d=2):
        return (jnp.ones((2, k)) / k, jnp.zeros((2, k, d)), jnp.ones((2, k, d, d)))

    with pytest.raises(ValueError, match="components"):
        native.pool_fit(
            x, centre, starts(native.LANE_COMPONENTS + 1), jnp.ones(2, bool), *scalars, "full", 10
        )
    wide = jnp.zeros((2, native.FIT_FEATURES + 1, 10))
    with pytest.raises(ValueError, match="features"):
        native.pool_fit(
            wide, jnp.zeros((2, 9)), starts(2, 9), jnp.ones(2, bool), *scalars, "full", 10
        )
    with pytest.raises(Exception, match="em_pool_fit: inconsistent shapes"):  # a mask of 3
        native.pool_fit(x, centre, starts(2), jnp.ones(3, bool), *scalars, "full", 10)
    with pytest.raises(Exception, match="em_pool_fit: inconsistent shapes"):  # diag factors
        native.pool_fit(x, centre, starts(2), jnp.ones(2, bool), *scalars, "diag", 10)


def test_status_names_the_library_in_use(kernel):
    answer = native.status()
    assert answer.startswith("in use: ")
    library = Path(answer.removeprefix("in use: "))
    assert library.name.startswith("em_full_kernel-") and library.suffix == ".so"


# -- the build and its cache ---------------------------------------------------------------


@pytest.fixture
def fresh(monkeypatch):
    """No kernel loaded yet in this process as far as _load knows, and no switch set; both
    restored afterwards (the library XLA already calls stays registered)."""
    monkeypatch.setattr(native, "_state", {})
    monkeypatch.setattr(native, "_switch", None)
    monkeypatch.delenv("GAUSSMIX_NATIVE", raising=False)


def private(path):
    """Mode bits of ``path``."""
    return stat.S_IMODE(path.lstat().st_mode)


def test_build_is_cached_private_and_atomic(kernel, tmp_path, monkeypatch):
    """Missing folders are created 0700 (and the library is not writable by others); the
    library is built once, into place; a damaged cached library is rebuilt."""
    cache = tmp_path / "new" / "cache"
    monkeypatch.setenv("GAUSSMIX_CACHE_DIR", str(cache))
    library = native._build()
    assert library.parent == cache and library.suffix == ".so"
    assert private(tmp_path / "new") == 0o700 and private(cache) == 0o700
    assert private(library) & 0o022 == 0 and library.lstat().st_uid == os.geteuid()
    assert [path.name for path in cache.iterdir()] == [library.name]  # no leftovers
    modified = library.stat().st_mtime_ns
    assert native._build() == library and library.stat().st_mtime_ns == modified
    # a damaged cache file is rebuilt when it fails to load
    library.write_bytes(b"not a shared library")
    loaded = native._open(library)
    assert hasattr(loaded, "GaussmixEmFullStatisticsF64")
    assert library.read_bytes()[:4] == b"\x7fELF"


def test_default_cache_folder_is_created_private(tmp_path, monkeypatch):
    monkeypatch.delenv("GAUSSMIX_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    folder = cache_folder.cache_root()
    assert folder == tmp_path / "xdg" / "gaussmix"
    cache_folder.private_folder(folder)
    assert private(tmp_path / "xdg") == 0o700 and private(folder) == 0o700
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/cache")  # ignored, as XDG says
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_folder.cache_root() == tmp_path / "home" / ".cache" / "gaussmix"


PLANTED_SOURCE = r"""
#include <stdio.h>
#include <stdlib.h>
/* runs when the library is loaded: proof that it was */
__attribute__((constructor)) static void planted(void) {
    const char *marker = getenv("GAUSSMIX_TEST_MARKER");
    FILE *file = marker ? fopen(marker, "w") : NULL;
    if (file) { fputs("the planted library ran\n", file); fclose(file); }
}
"""


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """(a small shared library whose constructor writes the file named by
    $GAUSSMIX_TEST_MARKER, the file name gaussmix would load from its cache); the plant is
    shown to write its marker when loaded (in a child process)."""
    try:
        compiler = native._compiler()
    except (native._Unavailable, native._Refused) as error:
        pytest.skip(f"no C++ compiler to build the planted library: {error}")
    folder = tmp_path_factory.mktemp("planted")
    (folder / "planted.c").write_text(PLANTED_SOURCE)
    library = folder / "planted.so"
    subprocess.run(
        [*compiler, "-shared", "-fPIC", "-o", str(library), str(folder / "planted.c")],
        check=True,
        capture_output=True,
    )
    marker = folder / "marker"
    environment = {**os.environ, "GAUSSMIX_TEST_MARKER": str(marker)}
    load = f"import ctypes; ctypes.CDLL({str(library)!r})"
    subprocess.run([sys.executable, "-c", load], check=True, env=environment)
    assert marker.read_text() == "the planted library ran\n"
    source = resources.files("gaussmix.inference").joinpath(native.SOURCE).read_bytes()
    name = native._library_name(compiler, native._flags(), source)
    return library, name


def plant(library, folder, name):
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(library, folder / name)
    (folder / name).chmod(0o700)
    folder.chmod(0o700)
    return folder / name


def only_root(owner_change):
    if os.geteuid() != 0:
        pytest.skip("only root can give a folder or file to another uid (chown)")
    os.chown(owner_change, 12345, 12345)


# How the cache is made unsafe, in (cache folder, library file) -> the reason refused.
# raced-parent: a missing folder on the way is created by someone else first, open to all.
UNSAFE = {
    "group-writable": "cache folder {folder} is writable by group: run `chmod 700 {folder}`",
    "others-writable": "cache folder {folder} is writable by others: run `chmod 700 {folder}`",
    "foreign-folder": "cache folder {folder} is owned by uid 12345",
    "symlinked-folder": "cache folder {folder} is a symbolic link",
    "symlinked-library": "cached library {library} is a symbolic link",
    "writable-library": "cached library {library} is writable by group and others",
    "foreign-library": "cached library {library} is owned by uid 12345",
    "raced-parent": "cache folder {parent} is writable by group and others",
}


@pytest.mark.parametrize("unsafe", list(UNSAFE))
def test_unsafe_cache_is_refused_and_nothing_is_loaded(
    unsafe, planted, fresh, tmp_path, monkeypatch
):
    """A planted library with the very name gaussmix would load, in a cache that someone
    else could have written: refused with one warning, its constructor never runs, nothing
    is compiled there."""
    library, name = planted
    marker = tmp_path / "marker"
    monkeypatch.setenv("GAUSSMIX_TEST_MARKER", str(marker))
    folder = tmp_path / "parent" / "cache"
    monkeypatch.setenv("GAUSSMIX_CACHE_DIR", str(folder))
    if unsafe == "raced-parent":
        real_mkdir = os.mkdir

        def someone_else_first(path, mode=0o777):
            if Path(path) == folder.parent:  # the other user's folder, with their plant
                real_mkdir(path, 0o777)
                real_mkdir(folder, 0o700)
                shutil.copy(library, folder / name)
                folder.parent.chmod(0o777)
                raise FileExistsError(path)
            real_mkdir(path, mode)

        monkeypatch.setattr(native.os, "mkdir", someone_else_first)
    elif unsafe == "symlinked-folder":
        plant(library, tmp_path / "real", name)
        folder.parent.mkdir()
        folder.symlink_to(tmp_path / "real")
    elif unsafe == "symlinked-library":
        folder.mkdir(parents=True, mode=0o700)
        (folder / name).symlink_to(plant(library, tmp_path / "elsewhere", name))
    else:
        planted_file = plant(library, folder, name)
        changes = {
            "group-writable": lambda: folder.chmod(0o770),
            "others-writable": lambda: folder.chmod(0o703),
            "foreign-folder": lambda: only_root(folder),
            "writable-library": lambda: planted_file.chmod(0o777),
            "foreign-library": lambda: only_root(planted_file),
        }
        changes[unsafe]()
    # the folder holds the plant alone (raced-parent: once the other user made it)
    before = sorted(path.name for path in folder.iterdir()) if folder.exists() else [name]
    expected = UNSAFE[unsafe].format(folder=folder, library=folder / name, parent=folder.parent)
    with pytest.warns(native.NativeBuildWarning, match="uses XLA's") as caught:
        answer = native.status()
    assert len(caught) == 1 and expected in str(caught[0].message)
    assert answer.startswith("unavailable: ") and expected in answer
    assert not marker.exists(), "the planted library was loaded"
    after = sorted(path.name for path in folder.iterdir())
    assert after == before  # nothing compiled or left there
    assert not native.usable(np.float64)


def test_a_safe_cache_loads_the_planted_library(planted, fresh, tmp_path, monkeypatch):
    """The control for the test above: the same plant in a cache folder of this user, mode
    0700, is loaded (its constructor runs; it lacks the kernel, so EM stays in XLA)."""
    library, name = planted
    marker = tmp_path / "marker"
    monkeypatch.setenv("GAUSSMIX_TEST_MARKER", str(marker))
    monkeypatch.setenv("GAUSSMIX_CACHE_DIR", str(tmp_path / "cache"))
    plant(library, tmp_path / "cache", name)
    with pytest.warns(native.NativeBuildWarning, match="GaussmixEmFullStatistics"):
        assert not native.usable(np.float64)
    assert marker.exists()


def test_without_a_compiler_nothing_warns(fresh, tmp_path, monkeypatch):
    monkeypatch.delenv("CXX", raising=False)
    (tmp_path / "bin").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    monkeypatch.setenv("GAUSSMIX_CACHE_DIR", str(tmp_path / "cache"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        answer = native.status()
        assert not native.usable(np.float64)
    assert answer == "unavailable: no C++ compiler found (set CXX, or install g++ or clang++)"
    assert not (tmp_path / "cache").exists()


@pytest.mark.parametrize("home", ["unknown", "empty", "under-a-file"])
def test_no_home_folder_means_no_kernel_and_no_temporary_fallback(
    home, planted, fresh, tmp_path, monkeypatch
):
    """Without GAUSSMIX_CACHE_DIR and a usable home folder nothing is written anywhere, in
    particular not under the temporary directory, and nothing warns."""
    monkeypatch.delenv("GAUSSMIX_CACHE_DIR", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temporary))
    monkeypatch.chdir(temporary)  # an empty HOME must not mean the working folder
    if home == "unknown":

        def no_home(cls=None):
            raise RuntimeError("Could not determine home directory.")

        monkeypatch.setattr(Path, "home", classmethod(no_home))
        reason = "no cache folder: no home folder is known (set GAUSSMIX_CACHE_DIR)"
    elif home == "empty":
        monkeypatch.setenv("HOME", "")
        reason = "no cache folder: no home folder is known (set GAUSSMIX_CACHE_DIR)"
    else:
        (tmp_path / "a-file").write_text("")
        monkeypatch.setenv("HOME", str(tmp_path / "a-file" / "home"))
        reason = f"cache folder {tmp_path / 'a-file' / 'home' / '.cache' / 'gaussmix'} cannot"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        answer = native.status()
    assert answer.startswith(f"unavailable: {reason}")
    assert list(temporary.iterdir()) == []


def fake_compiler(tmp_path, message):
    """A 'compiler' that answers --version and fails on anything else."""
    script = tmp_path / "broken-c++"
    script.write_text(
        f'#!/bin/sh\nif [ "$1" = --version ]; then echo broken 1.0; exit 0; fi\n'
        f'echo "{message}" >&2\nexit 1\n'
    )
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return script


@pytest.mark.parametrize("failure", ["missing", "failing"])
def test_failed_build_warns_and_uses_xla(fresh, tmp_path, monkeypatch, failure):
    """A compiler that CXX names but that does not exist, or one that fails: one warning
    that says why, and the statistics come from XLA's blocks."""
    if failure == "missing":
        compiler = tmp_path / "no-such-c++"
        expected = f"CXX={compiler} is not a program that can be run"
    else:
        compiler = fake_compiler(tmp_path, "error: this compiler cannot build anything")
        expected = "this compiler cannot build anything"
    monkeypatch.setenv("CXX", str(compiler))
    monkeypatch.setenv("GAUSSMIX_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.warns(native.NativeBuildWarning, match="uses XLA's") as caught:
        assert not native.usable(np.float64)
    assert len(caught) == 1 and expected in str(caught[0].message)
    assert native.status().startswith("unavailable: ") and expected in native.status()
    assert not (tmp_path / "cache").exists() or list((tmp_path / "cache").iterdir()) == []
    with warnings.catch_warnings():
        warnings.simplefilter("error", native.NativeBuildWarning)  # warned once
        assert not native.usable(np.float64)
    # the statistics still come out, from XLA's blocks
    x, weight, _ = problem(300, 2, 2, seed=4)
    identity = jnp.stack([jnp.eye(2)] * 2)
    parameters = em.MixtureParameters(
        jnp.array([0.5, 0.5]), jnp.array([[-1.0, 0.0], [1.0, 0.0]]), identity, identity
    )
    statistics = em.sufficient_statistics(
        x, parameters, covariance_type="full", centre=np.zeros(2), sample_weight=weight
    )
    assert np.isfinite(np.asarray(statistics.second)).all()
    assert float(jnp.sum(statistics.counts)) == pytest.approx(weight.sum(), rel=1e-12)


# -- switching the kernel off and on -------------------------------------------------------


def test_switched_off_by_the_environment(fresh, monkeypatch):
    monkeypatch.setenv("GAUSSMIX_NATIVE", "off")
    assert not native.enabled() and not native.usable(np.float64)
    assert native.status() == "off: GAUSSMIX_NATIVE=off"
    assert native._state == {}  # nothing was built or loaded


@pytest.fixture
def spy(monkeypatch):
    """Records each trace of native.full_statistics (em calls it as it builds a fit)."""
    calls = []
    original = native.full_statistics

    def recorded(*arguments):
        calls.append([argument.shape for argument in arguments])
        return original(*arguments)

    monkeypatch.setattr(native, "full_statistics", recorded)
    return calls


def clusters(n_rows, seed):
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.normal(4 * k, 1.0, (n_rows, 2)) for k in range(2)])


def test_switched_off_from_python_on_the_next_fit(fresh, spy):
    """set_enabled(False): the next full-covariance fit builds and loads nothing and runs
    through XLA; set_enabled(None) follows GAUSSMIX_NATIVE again."""
    native.set_enabled(False)
    assert not native.enabled()
    assert native.status() == "off: gaussmix.inference.native.set_enabled(False)"
    result = em.fit_em(clusters(211, seed=5), n_components=2, covariance_type="full", seed=0)
    assert np.isfinite(np.asarray(result.lower_bound))
    assert spy == [] and native._state == {}  # XLA's blocks; nothing built or loaded
    native.set_enabled(None)
    assert native.enabled()


def test_switched_on_from_python_over_the_environment(kernel, spy, monkeypatch):
    monkeypatch.setattr(native, "_switch", None)
    monkeypatch.setenv("GAUSSMIX_NATIVE", "0")
    assert not native.enabled()
    native.set_enabled(True)
    assert native.enabled() and native.usable(np.float64)
    # a shape no other test fits, so that this fit is traced here and its path seen
    em.fit_em(clusters(223, seed=6), n_components=2, covariance_type="full", seed=0)
    assert spy, "the fit did not go through the compiled kernel"


@pytest.mark.parametrize("value", ["no", 0, 1, np.bool_(True)])
def test_set_enabled_takes_a_boolean_or_none(value, fresh):
    with pytest.raises(ValueError, match=r"set_enabled takes True, False or None"):
        native.set_enabled(value)
    assert native._switch is None
