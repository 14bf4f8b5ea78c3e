"""Missing entries in the EM core (issue 19): the marginal densities against scipy, the
expected statistics against a per-row NumPy reference, monotone EM for every covariance
type, local optimality against a quasi-Newton polish, complete data unchanged."""

import jax
import numpy as np
import pytest
from scipy import optimize
from scipy.stats import multivariate_normal

from gaussmix.inference.em import fit_em, missing
from gaussmix.inference.em.parameters import MixtureParameters, with_covariances
from gaussmix.models.priors import COVARIANCE_ALIASES, EM_COVARIANCE_TYPES, covariance_layout


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


def _reference(x, weight, weights, means, covariances):
    """Per-row NumPy/scipy reference of the observed-data log-likelihood and the expected
    statistics (submatrices solved directly, row by row)."""
    n_components, n_features = means.shape
    counts = np.zeros(n_components)
    first = np.zeros((n_components, n_features))
    second = np.zeros((n_components, n_features, n_features))
    log_likelihood = 0.0
    for row, w in zip(x, weight, strict=True):
        o = ~np.isnan(row)
        m = ~o
        log_prob = np.array(
            [
                np.log(weights[k])
                + multivariate_normal(means[k][o], covariances[k][np.ix_(o, o)]).logpdf(row[o])
                for k in range(n_components)
            ]
        )
        norm = np.logaddexp.reduce(log_prob)
        resp = np.exp(log_prob - norm)
        log_likelihood += w * norm
        for k in range(n_components):
            sigma = covariances[k]
            regression = np.linalg.solve(sigma[np.ix_(o, o)], sigma[np.ix_(o, m)]).T
            filled = row.copy()
            filled[m] = means[k][m] + regression @ (row[o] - means[k][o])
            conditional = np.zeros((n_features, n_features))
            conditional[np.ix_(m, m)] = sigma[np.ix_(m, m)] - regression @ sigma[np.ix_(o, m)]
            counts[k] += w * resp[k]
            first[k] += w * resp[k] * filled
            second[k] += w * resp[k] * (np.outer(filled, filled) + conditional)
    return counts, first, second, log_likelihood


def _random_model(rng, layout, n_components, n_features):
    weights = rng.dirichlet(np.full(n_components, 3.0))
    means = rng.normal(0, 2, (n_components, n_features))
    a = rng.normal(size=(n_components, n_features, n_features))
    full = a @ np.swapaxes(a, 1, 2) + 0.5 * np.eye(n_features)
    covariances = {
        "full": full,
        "tied": full[0],
        "diag": np.stack([np.diag(c) for c in full]),
        "spherical": np.array([np.trace(c) / n_features for c in full]),
    }[layout]
    return weights, means, covariances


def _holes(rng, x, fraction):
    """``x`` with a ``fraction`` of entries NaN at random, every row keeping one."""
    x = x.copy()
    holes = rng.random(x.shape) < fraction
    holes[np.arange(x.shape[0]), rng.integers(0, x.shape[1], x.shape[0])] = False
    x[holes] = np.nan
    return x


@pytest.mark.parametrize("layout", ["full", "tied", "diag", "spherical"])
def test_marginal_log_likelihood_matches_scipy(layout):
    rng = np.random.default_rng(3)
    n_components, n_features = 3, 4
    weights, means, covariances = _random_model(rng, layout, n_components, n_features)
    x = _holes(rng, rng.normal(0, 2, (40, n_features)), 0.4)
    norm, log_resp = missing.marginal_log_responsibilities(
        x, MixtureParameters(weights, means, covariances, None), layout
    )
    full = _full(covariances, layout, n_components, n_features)
    for row, value, resp in zip(x, norm, np.exp(log_resp), strict=True):
        o = ~np.isnan(row)
        log_prob = [
            np.log(weights[k])
            + multivariate_normal(means[k][o], full[k][np.ix_(o, o)]).logpdf(row[o])
            for k in range(n_components)
        ]
        expected = np.logaddexp.reduce(log_prob)
        assert value == pytest.approx(expected, abs=1e-10, rel=1e-12)
        np.testing.assert_allclose(resp, np.exp(np.array(log_prob) - expected), atol=1e-12)


@pytest.mark.parametrize("layout", ["full", "tied", "diag", "spherical"])
def test_expected_statistics_match_row_by_row_reference(layout):
    rng = np.random.default_rng(4)
    n_components, n_features = 3, 4
    weights, means, covariances = _random_model(rng, layout, n_components, n_features)
    x = _holes(rng, rng.normal(0, 2, (37, n_features)), 0.35)
    weight = rng.uniform(0.2, 2.0, x.shape[0])
    centre = np.array([0.3, -0.2, 0.1, 0.5])
    pattern, observed = missing.find_patterns(x)
    filled = np.where(np.isnan(x), 7.0, x)  # any value: the statistics must ignore it
    # blocks of 4 rows, 3 blocks per scan step: several steps, padded blocks
    n_blocks = -(-x.shape[0] // 4) + observed.shape[0]
    blocks = missing.pattern_blocks(filled, weight, pattern, observed, (4, 3, -(-n_blocks // 3)))
    assert blocks.x.shape[0] > 1
    parameters = with_covariances(weights, means, covariances, layout)
    statistics = jax.jit(missing.block_statistics, static_argnums=3)(
        parameters, blocks, centre, layout
    )
    full = _full(covariances, layout, n_components, n_features)
    counts, first, second, log_likelihood = _reference(
        x - centre, weight, weights, means - centre, full
    )
    expected_second = {
        "full": second,
        "tied": second.sum(axis=0),
        "diag": np.diagonal(second, axis1=1, axis2=2),
        "spherical": np.trace(second, axis1=1, axis2=2),
    }[layout]
    np.testing.assert_allclose(statistics.counts, counts, rtol=1e-11)
    np.testing.assert_allclose(statistics.first, first, rtol=1e-10, atol=1e-11)
    np.testing.assert_allclose(statistics.second, expected_second, rtol=1e-10, atol=1e-11)
    assert float(statistics.log_likelihood) == pytest.approx(log_likelihood, rel=1e-12)
    assert float(statistics.total_weight) == pytest.approx(weight.sum(), rel=1e-14)


@pytest.fixture(scope="module")
def two_clusters():
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 2, 240)
    centres = np.array([[0.0, 0.0, 0.0], [4.0, 3.0, -2.0]])
    scale = np.array([[1.0, 0.4, 0.0], [0.0, 0.8, 0.3], [0.0, 0.0, 0.6]])
    x = centres[labels] + rng.normal(size=(240, 3)) @ scale
    return _holes(rng, x, 0.25)


@pytest.mark.parametrize("covariance_type", EM_COVARIANCE_TYPES + tuple(COVARIANCE_ALIASES))
def test_observed_likelihood_never_decreases(two_clusters, covariance_type):
    """EM on the observed-data likelihood: every iteration raises it (the lower bounds
    are the exact mean log-likelihood of the entering parameters), and the reported bound
    is scipy's log-likelihood of the observed entries."""
    result = fit_em(
        two_clusters,
        n_components=2,
        covariance_type=covariance_type,
        nan_policy="marginalize",
        max_iter=40,
        tol=0.0,
    )
    bounds = np.asarray(result.lower_bounds)[: int(result.n_iter)]
    assert np.all(np.isfinite(bounds)) and bounds.size == 40
    assert np.all(np.diff(bounds) >= -1e-10 * np.abs(bounds[1:])), np.diff(bounds).min()
    assert bounds[-1] > bounds[0]
    # the last bound is the log-likelihood of the parameters entering the last step;
    # the returned parameters are at least as good
    layout = covariance_layout(covariance_type)
    params = result.params
    covariances = next(
        params[name] for name in ("covariances", "covariance", "variances") if name in params
    )
    norm, _ = missing.marginal_log_responsibilities(
        two_clusters,
        MixtureParameters(params["weights"], params["means"], covariances, None),
        layout,
    )
    assert np.mean(norm) >= bounds[-1] - 1e-10


def _negative_log_likelihood(theta, x, layout, n_components, n_features):
    """Observed-data negative log-likelihood (NumPy/scipy), unconstrained parameters:
    weight logits, means, log variances (diag) or Cholesky factors with log diagonals."""
    logits = np.concatenate([[0.0], theta[: n_components - 1]])
    weights = np.exp(logits - np.logaddexp.reduce(logits))
    rest = theta[n_components - 1 :]
    means = rest[: n_components * n_features].reshape(n_components, n_features)
    rest = rest[n_components * n_features :]
    if layout == "diag":
        covariances = np.stack([np.diag(np.exp(v)) for v in rest.reshape(n_components, -1)])
    else:
        rows, cols = np.tril_indices(n_features)
        covariances = []
        for values in rest.reshape(n_components, -1):
            lower = np.zeros((n_features, n_features))
            lower[rows, cols] = values
            lower[np.diag_indices(n_features)] = np.exp(np.diag(lower))
            covariances.append(lower @ lower.T)
    total = 0.0
    for row in x:
        o = ~np.isnan(row)
        total += np.logaddexp.reduce(
            [
                np.log(weights[k])
                + multivariate_normal(means[k][o], covariances[k][np.ix_(o, o)]).logpdf(row[o])
                for k in range(n_components)
            ]
        )
    return -total


def _unconstrained(result, layout, n_components, n_features):
    weights = np.asarray(result.params["weights"])
    means = np.asarray(result.params["means"])
    parts = [np.log(weights[1:]) - np.log(weights[0]), means.ravel()]
    if layout == "diag":
        parts.append(np.log(np.asarray(result.params["variances"])).ravel())
    else:
        rows, cols = np.tril_indices(n_features)
        for sigma in np.asarray(result.params["covariances"]):
            lower = np.linalg.cholesky(sigma)
            lower[np.diag_indices(n_features)] = np.log(np.diag(lower))
            parts.append(lower[rows, cols])
    return np.concatenate(parts)


@pytest.mark.parametrize("layout", ["full", "diag"])
def test_quasi_newton_polish_gains_nothing(layout):
    """At the EM fit the observed-data likelihood is at a local maximum: L-BFGS from
    there, on scipy's likelihood in unconstrained coordinates, gains nothing."""
    rng = np.random.default_rng(6)
    labels = rng.integers(0, 2, 120)
    x = np.array([[0.0, 0.0, 0.0], [3.0, 2.0, -1.0]])[labels] + rng.normal(size=(120, 3))
    x = _holes(rng, x, 0.25)
    result = fit_em(
        x,
        n_components=2,
        covariance_type=layout,
        nan_policy="marginalize",
        reg_covar=0.0,
        tol=1e-13,
        max_iter=5000,
    )
    assert bool(result.converged)
    theta = _unconstrained(result, layout, 2, 3)
    start = _negative_log_likelihood(theta, x, layout, 2, 3)
    # EM's own number: the mean observed log-likelihood of its parameters
    assert -start / x.shape[0] == pytest.approx(float(result.lower_bound), abs=1e-9)
    polished = optimize.minimize(
        _negative_log_likelihood, theta, args=(x, layout, 2, 3), method="L-BFGS-B"
    )
    assert polished.fun >= start - 1e-6, start - polished.fun
    # and the optimizer moves the parameters nowhere: the gradient there is ~0
    assert np.max(np.abs(polished.x - theta)) < 1e-3


def test_complete_data_runs_the_same_program_bit_for_bit(two_clusters):
    complete = np.nan_to_num(two_clusters, nan=0.5)
    for covariance_type in ("full", "diag"):
        results = [
            fit_em(complete, n_components=2, covariance_type=covariance_type, nan_policy=policy)
            for policy in ("raise", "marginalize", "omit")
        ]
        for other in results[1:]:
            for a, b in zip(jax.tree.leaves(results[0]), jax.tree.leaves(other), strict=True):
                np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_omit_is_the_fit_without_those_rows(two_clusters):
    rng = np.random.default_rng(7)
    weight = rng.uniform(0.5, 2.0, two_clusters.shape[0])
    keep = ~np.isnan(two_clusters).any(axis=1)
    omitted = fit_em(two_clusters, n_components=2, sample_weight=weight, nan_policy="omit")
    direct = fit_em(two_clusters[keep], n_components=2, sample_weight=weight[keep])
    for a, b in zip(jax.tree.leaves(omitted), jax.tree.leaves(direct), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_integer_weights_equal_repeated_rows(two_clusters):
    """sample_weight with NaN: weight 2 is the row twice (starting from the same point)."""
    rng = np.random.default_rng(8)
    weight = rng.integers(1, 3, two_clusters.shape[0]).astype(float)
    repeated = np.repeat(two_clusters, weight.astype(int), axis=0)
    start = {
        "weights_init": np.array([0.5, 0.5]),
        "means_init": np.array([[0.0, 0.0, 0.0], [4.0, 3.0, -2.0]]),
        "precisions_init": np.stack([np.eye(3)] * 2),
        "tol": 0.0,
        "max_iter": 80,
    }
    weighted = fit_em(
        two_clusters,
        n_components=2,
        sample_weight=weight,
        nan_policy="marginalize",
        **start,
    )
    direct = fit_em(repeated, n_components=2, nan_policy="marginalize", **start)
    # the same number of iterations for both (tol 0): a tol reached one iteration apart
    # (the lower bounds differ in the last bits) would differ by one slow EM step
    assert int(weighted.n_iter) == int(direct.n_iter) == 80
    for name in ("weights", "means", "covariances"):
        np.testing.assert_allclose(
            weighted.params[name], direct.params[name], rtol=1e-8, atol=1e-10
        )
    assert float(weighted.lower_bound) == pytest.approx(float(direct.lower_bound), rel=1e-10)


def test_batch_with_missing_entries(two_clusters):
    """Dataset 0 of a batch is the unbatched fit (datasets share one pattern table)."""
    rng = np.random.default_rng(9)
    other = _holes(rng, np.nan_to_num(two_clusters, nan=1.0)[::-1].copy(), 0.1)
    batch = fit_em(np.stack([two_clusters, other]), n_components=2, nan_policy="marginalize")
    alone = fit_em(two_clusters, n_components=2, nan_policy="marginalize")
    np.testing.assert_allclose(batch.params["means"][0], alone.params["means"], rtol=1e-9)
    assert float(batch.lower_bound[0]) == pytest.approx(float(alone.lower_bound), rel=1e-10)
    assert np.isfinite(float(batch.lower_bound[1]))


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda x: np.where(np.arange(3) == 1, np.nan, x), "column 1 of x holds no observed entry"),
        (lambda x: np.vstack([x, np.full((1, 3), np.nan)]), "have no observed entry"),
        (lambda x: np.vstack([x, [[np.inf, np.nan, 0.0]]]), "x contains infinity"),
    ],
)
def test_what_no_policy_fits_is_refused(two_clusters, make, message):
    with pytest.raises(ValueError, match=message):
        fit_em(make(two_clusters), n_components=2, nan_policy="marginalize")


def test_raise_names_the_other_policies(two_clusters):
    with pytest.raises(ValueError, match=r"nan_policy=.marginalize.*nan_policy=.omit."):
        fit_em(two_clusters, n_components=2)
    with pytest.raises(ValueError, match="Invalid value for 'nan_policy'"):
        fit_em(two_clusters, n_components=2, nan_policy="ignore")
    with pytest.raises(ValueError, match="batch"):
        fit_em(np.stack([two_clusters] * 2), n_components=2, nan_policy="omit")


def test_pattern_table_is_bucketed():
    x = np.array([[1.0, np.nan, 2.0], [np.nan, 1.0, 2.0], [1.0, 2.0, 3.0]])
    pattern, observed = missing.find_patterns(x)
    assert observed.shape == (missing.MIN_PATTERN_BUCKET, 3)
    np.testing.assert_array_equal(observed[pattern], ~np.isnan(x))
    assert np.all(observed[3:] == 1)
    assert missing.pattern_bucket(17) == 32


def test_pattern_blocks_hold_each_row_once_in_blocks_of_one_pattern():
    rng = np.random.default_rng(10)
    x = _holes(rng, rng.normal(size=(101, 5)), 0.3)
    weight = rng.uniform(0.5, 2.0, 101)
    pattern, observed = missing.find_patterns(x)
    shape = missing.block_shape(101, observed.shape[0], 5, 3, "full", 8)
    blocks = missing.pattern_blocks(np.nan_to_num(x), weight, pattern, observed, shape)
    rows, group, n_groups = shape
    assert blocks.x.shape == (n_groups, group, rows, 5)
    held = blocks.weight.reshape(-1) > 0
    np.testing.assert_array_equal(np.sort(blocks.weight.reshape(-1)[held]), np.sort(weight))
    block_of_row = np.repeat(blocks.pattern.reshape(-1), rows)[held]
    x_rows = blocks.x.reshape(-1, 5)[held]
    for row, p in zip(x_rows, block_of_row, strict=True):
        source = np.flatnonzero(np.all(np.nan_to_num(x) == row, axis=1))
        assert source.size == 1 and pattern[source[0]] == p


def test_new_data_with_as_many_patterns_does_not_retrace(monkeypatch):
    traces = []
    original = missing.block_statistics

    def counting(*args, **kwargs):
        traces.append(1)  # runs only while tracing
        return original(*args, **kwargs)

    monkeypatch.setattr(missing, "block_statistics", counting)
    rng = np.random.default_rng(11)
    kwargs = dict(n_components=2, covariance_type="tied", nan_policy="marginalize", max_iter=3)
    first = _holes(rng, rng.normal(size=(53, 3)), 0.3)  # a shape no other test uses
    fit_em(first, **kwargs)
    traced = len(traces)
    assert traced <= 1
    second = _holes(rng, rng.normal(size=(53, 3)) + 2.0, 0.1)  # other rows, other patterns
    assert not np.array_equal(np.isnan(first), np.isnan(second))
    fit_em(second, seed=3, **kwargs)
    assert len(traces) == traced
