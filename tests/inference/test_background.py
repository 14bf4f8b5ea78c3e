"""EM with a uniform background component (issue 19 item 3) against independent references.

The density :math:`\\sum_k \\pi_k N(x | \\mu_k, \\Sigma_k) + \\pi_0 / V` is written out with
scipy; local optimality is a quasi-Newton polish of the fit in an unconstrained
parametrization; the MAP weights are a numerical maximization over the K + 1 simplex.
"""

import warnings

import jax
import numpy as np
import numpyro.distributions as dist
import pytest
from scipy import optimize, stats
from scipy.special import logsumexp

from gaussmix.inference.em import background, fit_em, sufficient_statistics
from gaussmix.inference.em.parameters import MixtureParameters
from gaussmix.models.priors import COVARIANCE_SITES, covariance_layout

jax.config.update("jax_enable_x64", True)

BOX = 8.0  # the noise is uniform on [-BOX, BOX]^2
VOLUME = (2 * BOX) ** 2


def noisy_data(seed=0, n_cluster=120, n_noise=60):
    """Two Gaussian clusters and uniform noise on the square [-BOX, BOX]^2."""
    rng = np.random.default_rng(seed)
    clusters = [
        rng.multivariate_normal([-3.0, -1.0], [[0.6, 0.2], [0.2, 0.4]], n_cluster),
        rng.multivariate_normal([3.0, 2.0], [[0.3, -0.1], [-0.1, 0.5]], n_cluster),
    ]
    noise = rng.uniform(-BOX, BOX, (n_noise, 2))
    return np.concatenate([*clusters, noise])


def full_covariances(covariances, covariance_type, n_components, n_features):
    """(K, D, D) covariances of any layout."""
    layout = covariance_layout(covariance_type)
    c = np.asarray(covariances, np.float64)
    if layout == "full":
        return c
    if layout == "tied":
        return np.broadcast_to(c, (n_components, n_features, n_features))
    if layout == "diag":
        return np.stack([np.diag(v) for v in c])
    return np.stack([np.eye(n_features) * v for v in c])


def scipy_log_density(x, weights, means, covariances, background_weight, volume):
    """(N,) log of sum_k w_k N(x | m_k, C_k) + b / V, each term by scipy."""
    terms = [
        np.log(w) + stats.multivariate_normal(m, c).logpdf(x)
        for w, m, c in zip(weights, means, covariances, strict=True)
    ]
    terms.append(np.full(x.shape[0], np.log(background_weight) - np.log(volume)))
    return logsumexp(np.stack(terms), axis=0)


def fitted(result, covariance_type, x):
    k, d = np.shape(result.params["means"])
    covariances = full_covariances(
        result.params[COVARIANCE_SITES[covariance_type]], covariance_type, k, d
    )
    return (
        np.asarray(result.params["weights"]),
        np.asarray(result.params["means"]),
        covariances,
        float(result.background_weight),
    )


def precisions_of(covariances, covariance_type):
    layout = covariance_layout(covariance_type)
    c = np.asarray(covariances)
    return np.linalg.inv(c) if layout in ("full", "tied") else 1.0 / c


#: every fit here starts from these values with at most MAX_ITER iterations, so that
#: the tests share a few compiled programs (one per covariance type)
MAX_ITER = 400
START = {
    "weights_init": np.array([0.5, 0.5]),
    "means_init": np.array([[-2.0, 0.0], [2.0, 1.0]]),
}


def start_precisions(covariance_type):
    layout = covariance_layout(covariance_type)
    return {
        "full": np.stack([np.eye(2)] * 2),
        "tied": np.eye(2),
        "diag": np.ones((2, 2)),
        "spherical": np.ones(2),
    }[layout]


def fit(x, covariance_type="full", *, start=None, **keywords):
    """fit_em with background from ``start`` (params, background weight) or START."""
    if start is None:
        inits = {**START, "precisions_init": start_precisions(covariance_type)}
    else:
        weights, means, covariances, weight = start
        inits = {
            "weights_init": weights / weights.sum(),
            "means_init": means,
            "precisions_init": precisions_of(covariances, covariance_type),
            "background_weight_init": weight,
        }
    keywords = {"max_iter": MAX_ITER, "background_log_density": -np.log(VOLUME), **keywords}
    return fit_em(x, n_components=2, covariance_type=covariance_type, **inits, **keywords)


def fitted_start(result, covariance_type):
    """(weights, means, covariances in the type's layout, background weight)."""
    return (
        np.asarray(result.params["weights"]),
        np.asarray(result.params["means"]),
        np.asarray(result.params[COVARIANCE_SITES[covariance_type]]),
        float(result.background_weight),
    )


@pytest.mark.parametrize("covariance_type", ["full", "tied", "diag", "spherical"])
def test_log_likelihood_of_the_fit_equals_scipy(covariance_type):
    """The observed log-likelihood EM reports for its parameters is scipy's sum of
    log(sum_k pi_k N + pi_0 / V) to 1e-10; the lower bounds never decrease; the weights
    and the background's sum to 1."""
    x = noisy_data()
    result = fit(x, covariance_type, tol=0.0, max_iter=40)
    bounds = np.asarray(result.lower_bounds)
    assert np.all(np.diff(bounds) >= -1e-12 * np.abs(bounds[1:]))
    weights, means, covariances, background_weight = fitted(result, covariance_type, x)
    assert 0 < background_weight < 1
    assert weights.sum() + background_weight == pytest.approx(1.0, abs=1e-12)
    # the first lower bound of a fit started at the fitted parameters is theirs
    again = fit(x, covariance_type, start=fitted_start(result, covariance_type), max_iter=40)
    expected = scipy_log_density(x, weights, means, covariances, background_weight, VOLUME)
    assert float(again.lower_bounds[0]) == pytest.approx(expected.mean(), rel=1e-10, abs=0)


def _unpack(theta, n_components, n_features):
    """Softmax logits over K + 1 weights (the background's last), means, log-Cholesky."""
    logits = np.append(theta[:n_components], 0.0)
    weights = np.exp(logits - logsumexp(logits))
    at = n_components
    means = theta[at : at + n_components * n_features].reshape(n_components, n_features)
    at += n_components * n_features
    rows, cols = np.tril_indices(n_features)
    covariances = []
    for _ in range(n_components):
        lower = np.zeros((n_features, n_features))
        lower[rows, cols] = theta[at : at + rows.size]
        lower[np.diag_indices(n_features)] = np.exp(np.diag(lower))
        covariances.append(lower @ lower.T)
        at += rows.size
    return weights[:-1], means, np.array(covariances), weights[-1]


def _pack(weights, means, covariances, background_weight):
    logits = np.log(np.append(weights, background_weight))
    parts = [logits[:-1] - logits[-1], means.ravel()]
    rows, cols = np.tril_indices(means.shape[1])
    for c in covariances:
        lower = np.linalg.cholesky(c)
        lower[np.diag_indices(means.shape[1])] = np.log(np.diag(lower))
        parts.append(lower[rows, cols])
    return np.concatenate(parts)


def test_fit_is_a_local_optimum_a_quasi_newton_polish_gains_nothing():
    """From the converged fit (full, no reg_covar) BFGS on the exact negative
    log-likelihood in unconstrained coordinates finds no better point."""
    x = noisy_data(seed=1)
    result = fit(x, reg_covar=0.0, tol=1e-13)
    assert bool(result.converged)
    start = _pack(*fitted(result, "full", x))

    def objective(theta):
        return -scipy_log_density(x, *_unpack(theta, 2, 2), VOLUME).sum()

    polished = optimize.minimize(objective, start, method="BFGS", options={"gtol": 1e-9})
    gain = objective(start) - polished.fun
    assert gain < 1e-6, gain
    gradient = optimize.approx_fprime(start, objective, 1e-7)
    assert np.max(np.abs(gradient)) < 1e-3


def test_map_weights_maximize_the_posterior_over_the_k_plus_1_simplex():
    """Under a Dirichlet(3, 3) prior on the Gaussian weights the MAP's K + 1 weights are
    the maximizer of the log-likelihood plus the Dirichlet(3, 3, 1) log density over the
    simplex (the Gaussian parameters held at the fit): scipy's optimizer agrees."""
    x = noisy_data(seed=2)
    priors = {"weights": dist.Dirichlet(np.full(2, 3.0))}
    result = fit(x, priors=priors, tol=1e-14)
    assert result.method == "conjugate_map"
    assert bool(result.converged)
    weights, means, covariances, background_weight = fitted(result, "full", x)

    def negative_posterior(logits):
        w = np.exp(np.append(logits, 0.0) - logsumexp(np.append(logits, 0.0)))
        log_likelihood = scipy_log_density(x, w[:-1], means, covariances, w[-1], VOLUME).sum()
        return -(log_likelihood + stats.dirichlet.logpdf(w, [3.0, 3.0, 1.0]))

    start = np.log(np.append(weights, background_weight))
    best = optimize.minimize(negative_posterior, start[:-1] - start[-1], method="BFGS")
    optimum = np.exp(np.append(best.x, 0.0) - logsumexp(np.append(best.x, 0.0)))
    np.testing.assert_allclose(np.append(weights, background_weight), optimum, atol=1e-5)


def test_zero_background_weight_is_the_fit_without_background():
    """A start with background weight 0 keeps it at 0: the fit equals the fit without
    background (same start, same iterations) to rounding."""
    x = noisy_data(seed=3, n_cluster=150, n_noise=0)
    inits = {**START, "precisions_init": start_precisions("diag")}
    plain = fit_em(x, n_components=2, covariance_type="diag", max_iter=MAX_ITER, tol=0.0, **inits)
    zero = fit(
        x,
        "diag",
        tol=0.0,
        start=(START["weights_init"], START["means_init"], 1.0 / start_precisions("diag"), 0.0),
    )
    assert float(zero.background_weight) == pytest.approx(0.0, abs=1e-12)
    for name in ("weights", "means", "variances"):
        np.testing.assert_allclose(zero.params[name], plain.params[name], rtol=1e-9, atol=1e-12)
    assert float(zero.lower_bound) == pytest.approx(float(plain.lower_bound), rel=1e-12)


def test_statistics_of_parts_add_up_with_background():
    """The background's statistics are sums over rows: two halves add up to the whole;
    the background's share W - sum N_k is the sum of its responsibilities by hand."""
    x = noisy_data(seed=4)
    rng = np.random.default_rng(0)
    parameters = MixtureParameters(
        np.array([0.4, 0.35]), rng.normal(size=(2, 2)), np.ones((2, 2)), np.ones((2, 2))
    )
    log_density = -np.log(VOLUME)
    centre = x.mean(0)

    def statistics(part):
        return sufficient_statistics(
            part,
            parameters,
            covariance_type="diag",
            centre=centre,
            background_log_density=log_density,
        )

    whole = statistics(x)
    summed = jax.tree.map(lambda a, b: a + b, statistics(x[:100]), statistics(x[100:]))
    for a, b in zip(whole, summed, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12)
    gaussian = np.stack(
        [
            np.log(w) + stats.multivariate_normal(m, np.eye(2)).logpdf(x)
            for w, m in zip(parameters.weights, parameters.means, strict=True)
        ],
        axis=1,
    )
    column = np.log(0.25) + log_density
    log_total = np.logaddexp(logsumexp(gaussian, axis=1), column)
    background_share = np.exp(column - log_total).sum()
    assert float(whole.total_weight - whole.counts.sum()) == pytest.approx(
        background_share, rel=1e-10
    )
    assert float(whole.log_likelihood) == pytest.approx(log_total.sum(), rel=1e-12)


def test_tied_em_steps_by_hand():
    """Tied covariances with background: two EM steps (tol huge stops after the second)
    equal the steps written out in NumPy, whose covariance is the responsibility-weighted
    scatter of the Gaussian components alone."""
    x = noisy_data(seed=5)
    result = fit(x, "tied", tol=1e30, reg_covar=0.0)
    assert int(result.n_iter) == 2
    weights, means = START["weights_init"] * 0.9, START["means_init"]
    covariance, background_weight = np.eye(2), 0.1
    for _ in range(2):
        gaussian = np.stack(
            [
                np.log(w) + stats.multivariate_normal(m, covariance).logpdf(x)
                for w, m in zip(weights, means, strict=True)
            ],
            axis=1,
        )
        column = np.log(background_weight) - np.log(VOLUME)
        total = np.logaddexp(logsumexp(gaussian, axis=1), column)
        resp = np.exp(gaussian - total[:, None])
        counts = resp.sum(0)
        means = resp.T @ x / counts[:, None]
        covariance = (
            sum((resp[:, k, None] * (x - means[k])).T @ (x - means[k]) for k in range(2))
            / counts.sum()
        )
        weights = counts / x.shape[0]
        background_weight = 1.0 - weights.sum()
    np.testing.assert_allclose(result.params["covariance"], covariance, rtol=1e-9)
    np.testing.assert_allclose(result.params["means"], means, rtol=1e-9)
    np.testing.assert_allclose(result.params["weights"], weights, rtol=1e-9)


def test_float32_fit_is_finite_and_near_float64():
    x = noisy_data(seed=6)
    single = fit(x.astype(np.float32), tol=1e-6)
    double = fit(x, tol=1e-6)
    assert single.params["means"].dtype == np.float32
    assert np.isfinite(float(single.lower_bound))
    assert float(single.background_weight) == pytest.approx(
        float(double.background_weight), abs=1e-3
    )


@pytest.mark.parametrize(
    ("keywords", "match"),
    [
        ({"background_log_density": np.nan}, "background_log_density must be finite"),
        ({"background_log_density": np.inf}, "background_log_density must be finite"),
        ({"background_log_density": 1e6}, "beyond the range"),
        ({"background_log_density": -1.0, "background_weight_init": 1.0}, r"in \[0, 1\)"),
        ({"background_log_density": -1.0, "background_weight_init": -0.1}, r"in \[0, 1\)"),
    ],
)
def test_bad_background_arguments_are_refused(keywords, match):
    with pytest.raises(ValueError, match=match):
        fit_em(noisy_data()[:50], n_components=2, covariance_type="diag", **keywords)


def test_combinations_not_implemented_say_what_to_do():
    x = noisy_data()[:60].copy()
    x_nan = x.copy()
    x_nan[0, 0] = np.nan
    with pytest.raises(NotImplementedError, match="nan_policy='omit'"):
        fit_em(
            x_nan,
            n_components=2,
            covariance_type="diag",
            nan_policy="marginalize",
            background_log_density=-1.0,
        )
    with pytest.raises(NotImplementedError, match="generalized EM"):
        fit_em(
            x,
            n_components=2,
            covariance_type="diag",
            priors={"means": dist.Normal(0.0, 10.0).expand([2]).to_event(1)},
            background_log_density=-1.0,
        )


def test_no_warnings_when_the_background_is_not_needed():
    """Clean Gaussian data: the background weight falls towards 0, without NaN or
    warnings."""
    x = noisy_data(seed=7, n_cluster=150, n_noise=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = fit(x)
    assert float(result.background_weight) < 0.02
    assert np.all(np.isfinite(np.asarray(result.params["means"])))
    assert background.background_weight(result.params["weights"]) == pytest.approx(
        float(result.background_weight)
    )


# -- chunked and sharded exact EM with a background: the in-memory fit ------------------


def _assert_same_fit(result, reference, atol=1e-10):
    assert int(result.n_iter) == int(reference.n_iter)
    assert float(result.background_weight) == pytest.approx(
        float(reference.background_weight), abs=atol
    )
    for name in reference.params:
        np.testing.assert_allclose(
            np.asarray(result.params[name]), np.asarray(reference.params[name]), atol=atol
        )
    np.testing.assert_allclose(
        np.asarray(result.lower_bounds), np.asarray(reference.lower_bounds), atol=atol
    )


@pytest.mark.parametrize(
    ("covariance_type", "priors"), [("full", None), ("tied", None), ("diag", "default")]
)
def test_chunked_and_sharded_fits_with_background_equal_the_in_memory_fit(covariance_type, priors):
    """Exact EM over uneven chunks and over a device mesh sums the same statistics as the
    in-memory fit: the same iterates to 1e-10 (float64), the background weight included;
    and the weight is a real fitted one (neither the start's nor zero)."""
    from gaussmix.inference.shard import fit_em_sharded
    from gaussmix.inference.streaming import fit_em_chunked

    x = noisy_data(seed=3)
    keywords = dict(
        n_components=2,
        covariance_type=covariance_type,
        priors=priors,
        max_iter=40,
        tol=1e-8,
        background_log_density=-np.log(VOLUME),
        background_weight_init=0.4,
    )
    reference = fit_em(x, **keywords)
    assert 0.05 < float(reference.background_weight) < 0.4
    assert abs(float(reference.background_weight) - 0.4) > 0.05
    chunks = [x[:70], x[70:71], x[71:250], x[250:]]
    _assert_same_fit(fit_em_chunked(chunks, chunk_rows=64, **keywords), reference)
    _assert_same_fit(fit_em_sharded(x, devices=1, **keywords), reference)


def test_chunked_and_sharded_background_refusals_say_what_to_do():
    from gaussmix.inference.shard import fit_em_sharded
    from gaussmix.inference.streaming import fit_em_chunked

    x = noisy_data()[:60].copy()
    x[0, 0] = np.nan
    keywords = dict(n_components=2, covariance_type="diag", background_log_density=-1.0)
    with pytest.raises(NotImplementedError, match="nan_policy='omit'"):
        fit_em_chunked([x[:30], x[30:]], nan_policy="marginalize", **keywords)
    with pytest.raises(NotImplementedError, match="background_log_sides"):
        fit_em_sharded(x, devices=1, nan_policy="marginalize", **keywords)
    with pytest.raises(ValueError, match=r"in \[0, 1\)"):
        fit_em_chunked([x[1:]], background_weight_init=1.0, **keywords)
    with pytest.raises(ValueError, match="finite"):
        fit_em_sharded(x[1:], devices=1, **{**keywords, "background_log_density": np.inf})


# -- missing entries (NaN) with a background: the uniform's marginal over observed axes --


def _with_holes(x, seed=11, fraction=0.15):
    """``x`` with a fraction of its entries NaN (every row keeps one observed entry)."""
    rng = np.random.default_rng(seed)
    x = x.copy()
    holes = rng.random(x.shape) < fraction
    holes[holes.all(axis=1), 0] = False
    x[holes] = np.nan
    return x


def brute_force_observed_log_density(x, weights, means, covariances, background_weight, sides):
    """(N,) log of sum_k w_k N(x_O | m_O, C_OO) + b prod_{d in O} 1/side_d, row by row."""
    out = np.empty(x.shape[0])
    for n, row in enumerate(x):
        o = ~np.isnan(row)
        terms = [
            np.log(w) + stats.multivariate_normal(m[o], c[np.ix_(o, o)]).logpdf(row[o])
            for w, m, c in zip(weights, means, covariances, strict=True)
        ]
        terms.append(np.log(background_weight) - np.sum(np.log(sides[o])))
        out[n] = logsumexp(terms)
    return out


@pytest.mark.parametrize("covariance_type", ["full", "tied", "diag", "spherical"])
def test_nan_rows_with_background_have_the_marginal_density_of_their_observed_entries(
    covariance_type,
):
    """From a given start, the first lower bound is the mean observed-data log-density,
    which scipy computes row by row (the uniform's marginal over the observed coordinates
    is prod 1/side_d over them); to 1e-10."""
    x = _with_holes(noisy_data(seed=2, n_cluster=40, n_noise=20), fraction=0.25)
    sides = np.array([2 * BOX, 1.5 * BOX])  # a box that is not a cube
    means = np.array([[-3.0, -1.0], [3.0, 2.0]])
    covariances = {
        "full": np.array([[[0.8, 0.3], [0.3, 0.6]], [[0.5, -0.2], [-0.2, 0.7]]]),
        "tied": np.array([[0.8, 0.3], [0.3, 0.6]]),
        "diag": np.array([[0.8, 0.6], [0.5, 0.7]]),
        "spherical": np.array([0.8, 0.5]),
    }[covariance_type]
    weights, start_background = np.array([0.3, 0.7]), 0.25
    result = fit_em(
        x,
        n_components=2,
        covariance_type=covariance_type,
        nan_policy="marginalize",
        max_iter=1,
        weights_init=weights,
        means_init=means,
        precisions_init=np.linalg.inv(covariances)
        if covariance_type in ("full", "tied")
        else 1.0 / covariances,
        background_log_density=-np.sum(np.log(sides)),
        background_log_sides=np.log(sides),
        background_weight_init=start_background,
    )
    full = full_covariances(covariances, covariance_type, 2, 2)
    expected = brute_force_observed_log_density(
        x, weights * (1 - start_background), means, full, start_background, sides
    )
    assert np.isnan(x).any(axis=1).sum() > 10
    assert float(result.lower_bounds[0]) == pytest.approx(np.mean(expected), abs=1e-10)


@pytest.mark.parametrize("covariance_type", ["full", "tied", "diag"])
def test_nan_fit_with_background_is_monotone_and_a_fixed_point(covariance_type):
    """EM on rows with NaN and a background never lowers the observed-data likelihood, and
    at convergence the background weight is the mean of its responsibilities computed
    by scipy (the ML fixed point pi_0 = mean_n r_n0), the Gaussian weights likewise."""
    x = _with_holes(noisy_data(seed=4, n_cluster=60, n_noise=30))
    lower, upper = np.nanmin(x, axis=0), np.nanmax(x, axis=0)
    sides = upper - lower
    result = fit_em(
        x,
        n_components=2,
        covariance_type=covariance_type,
        nan_policy="marginalize",
        max_iter=300,
        tol=1e-12,
        background_log_density=-np.sum(np.log(sides)),
        background_log_sides=np.log(sides),
    )
    bounds = np.asarray(result.lower_bounds)[: int(result.n_iter)]
    assert np.all(np.diff(bounds) >= -1e-12)
    assert bool(result.converged)
    weights = np.asarray(result.params["weights"])
    means = np.asarray(result.params["means"])
    full = full_covariances(result.params[COVARIANCE_SITES[covariance_type]], covariance_type, 2, 2)
    b = float(result.background_weight)
    total = brute_force_observed_log_density(x, weights, means, full, b, sides)
    background_resp = np.exp(
        np.log(b) - np.log(sides)[None, :] @ (~np.isnan(x)).T.astype(float) - total
    ).ravel()
    assert 0.05 < b < 0.5
    assert np.mean(background_resp) == pytest.approx(b, abs=1e-6)


def test_nan_with_background_needs_the_box_sides():
    x = _with_holes(noisy_data()[:60])
    keywords = dict(n_components=2, covariance_type="diag", nan_policy="marginalize")
    with pytest.raises(NotImplementedError, match="background_log_sides"):
        fit_em(x, background_log_density=-1.0, **keywords)
    with pytest.raises(ValueError, match=r"\(2,\) finite"):
        fit_em(x, background_log_density=-1.0, background_log_sides=[0.5], **keywords)
    with pytest.raises(ValueError, match="not minus the sum"):
        fit_em(x, background_log_density=-1.0, background_log_sides=[0.5, 0.6], **keywords)


# -- measurement errors with a background: the same uniform column -----------------------


def brute_force_noisy_log_density(x, noise, weights, means, covariances, background, sides):
    """(N,) log of sum_k w_k N(x_O | m_O, (C_k + S_n)_OO) + b prod_{d in O} 1/side_d."""
    out = np.empty(x.shape[0])
    for n, row in enumerate(x):
        o = ~np.isnan(row)
        terms = [
            np.log(w) + stats.multivariate_normal(m[o], (c + noise[n])[np.ix_(o, o)]).logpdf(row[o])
            for w, m, c in zip(weights, means, covariances, strict=True)
        ]
        terms.append(np.log(background) - np.sum(np.log(sides[o])))
        out[n] = logsumexp(terms)
    return out


def _noise(n, seed=12):
    """(n, 2, 2) measurement error covariances of different sizes and orientations."""
    rng = np.random.default_rng(seed)
    a = rng.normal(scale=0.4, size=(n, 2, 2))
    return a @ np.swapaxes(a, 1, 2) + 0.05 * np.eye(2)


@pytest.mark.parametrize(("covariance_type", "holes"), [("full", False), ("diag", True)])
def test_measurement_errors_with_background_have_scipys_density(covariance_type, holes):
    """From a given start the first lower bound is the mean of scipy's density of the
    noisy rows under Sigma_k + S_n plus the background's b / V (b / prod of the observed
    sides with NaN), to 1e-10."""
    x = noisy_data(seed=6, n_cluster=40, n_noise=20)
    if holes:
        x = _with_holes(x, fraction=0.2)
    noise = _noise(len(x))
    sides = np.array([2 * BOX, 1.5 * BOX])
    means = np.array([[-3.0, -1.0], [3.0, 2.0]])
    covariances = np.array([[[0.8, 0.3], [0.3, 0.6]], [[0.5, -0.2], [-0.2, 0.7]]])
    if covariance_type == "diag":
        covariances = np.stack([np.diag(np.diag(c)) for c in covariances])
    precisions = np.linalg.inv(covariances)
    if covariance_type == "diag":
        precisions = np.stack([np.diag(p) for p in precisions])
    weights, start_background = np.array([0.4, 0.6]), 0.3
    result = fit_em(
        x,
        n_components=2,
        covariance_type=covariance_type,
        nan_policy="marginalize",
        measurement_covariances=noise,
        max_iter=1,
        weights_init=weights,
        means_init=means,
        precisions_init=precisions,
        background_log_density=-np.sum(np.log(sides)),
        background_log_sides=np.log(sides) if holes else None,
        background_weight_init=start_background,
    )
    expected = brute_force_noisy_log_density(
        x, noise, weights * (1 - start_background), means, covariances, start_background, sides
    )
    assert float(result.lower_bounds[0]) == pytest.approx(np.mean(expected), abs=1e-10)


def test_measurement_errors_with_background_monotone_fixed_point_and_zero_noise():
    """EM with errors and a background never lowers the likelihood; at convergence
    pi_0 is the mean of scipy's background responsibilities; with S = 0 the fit is the
    fit without errors (to 1e-10)."""
    x = noisy_data(seed=9, n_cluster=60, n_noise=30)
    noise = _noise(len(x), seed=13)
    keywords = dict(
        n_components=2,
        covariance_type="full",
        max_iter=3000,
        tol=1e-11,
        background_log_density=-np.log(VOLUME),
    )
    result = fit_em(x, measurement_covariances=noise, **keywords)
    bounds = np.asarray(result.lower_bounds)[: int(result.n_iter)]
    assert np.all(np.diff(bounds) >= -1e-12)
    assert bool(result.converged)
    b = float(result.background_weight)
    sides = np.full(2, 2 * BOX)
    total = brute_force_noisy_log_density(
        x,
        noise,
        np.asarray(result.params["weights"]),
        np.asarray(result.params["means"]),
        np.asarray(result.params["covariances"]),
        b,
        sides,
    )
    assert 0.05 < b < 0.5
    assert np.mean(np.exp(np.log(b) - np.log(VOLUME) - total)) == pytest.approx(b, abs=1e-6)
    keywords["max_iter"] = 20
    zero = fit_em(x, measurement_covariances=np.zeros_like(noise), **keywords)
    plain = fit_em(x, **keywords)
    assert float(zero.background_weight) == pytest.approx(float(plain.background_weight), abs=1e-10)
    for name in plain.params:
        np.testing.assert_allclose(
            np.asarray(zero.params[name]), np.asarray(plain.params[name]), atol=1e-10
        )


def test_sharded_fits_with_background_on_nan_rows_and_measurement_errors_equal_fit_em():
    """Over a device mesh, rows with NaN (the box's sides) and rows with measurement
    errors (and NaN) sum the in-memory fit's statistics: the same fit to 1e-10."""
    from gaussmix.inference.shard import fit_em_sharded

    x = _with_holes(noisy_data(seed=14, n_cluster=50, n_noise=25))
    sides = np.nanmax(x, axis=0) - np.nanmin(x, axis=0)
    keywords = dict(
        n_components=2,
        covariance_type="full",
        max_iter=15,
        tol=1e-10,
        nan_policy="marginalize",
        background_log_density=-np.sum(np.log(sides)),
        background_log_sides=np.log(sides),
    )
    _assert_same_fit(fit_em_sharded(x, devices=1, **keywords), fit_em(x, **keywords))
    noise = _noise(len(x), seed=15)
    reference = fit_em(x, measurement_covariances=noise, **keywords)
    _assert_same_fit(
        fit_em_sharded(x, devices=1, measurement_covariances=noise, **keywords), reference
    )


def test_chunked_fit_with_background_on_nan_rows_equals_fit_em():
    """Exact EM over chunks with NaN rows and the box's sides: fit_em's fit to 1e-10."""
    from gaussmix.inference.streaming import fit_em_chunked

    x = _with_holes(noisy_data(seed=16, n_cluster=50, n_noise=25))
    sides = np.nanmax(x, axis=0) - np.nanmin(x, axis=0)
    keywords = dict(
        n_components=2,
        covariance_type="tied",
        max_iter=15,
        tol=1e-10,
        nan_policy="marginalize",
        background_log_density=-np.sum(np.log(sides)),
        background_log_sides=np.log(sides),
    )
    chunks = [x[:40], x[40:41], x[41:]]
    _assert_same_fit(fit_em_chunked(chunks, chunk_rows=32, **keywords), fit_em(x, **keywords))


_FOUR_DEVICES = """
import json, os
os.environ["JAX_PLATFORMS"] = "cpu"
import jax
jax.config.update("jax_enable_x64", True)
import numpy as np
from gaussmix.inference.em import fit_em
from gaussmix.inference.shard import fit_em_sharded

rng = np.random.default_rng(21)
x = np.concatenate([
    rng.multivariate_normal([-3.0, -1.0], [[0.6, 0.2], [0.2, 0.4]], 50),
    rng.multivariate_normal([3.0, 2.0], [[0.3, -0.1], [-0.1, 0.5]], 50),
    rng.uniform(-8.0, 8.0, (31, 2)),
])
holes = x.copy()
holes[rng.random(x.shape) < 0.15] = np.nan
holes[np.isnan(holes).all(axis=1), 0] = 0.0
out = {"devices": jax.device_count()}
for name, data in (("complete", x), ("nan", holes)):
    sides = np.nanmax(data, axis=0) - np.nanmin(data, axis=0)
    keywords = dict(n_components=2, covariance_type="full", max_iter=12, tol=1e-10,
                    nan_policy="marginalize", background_log_density=-np.sum(np.log(sides)),
                    background_log_sides=np.log(sides), background_weight_init=0.3)
    a, b = fit_em_sharded(data, devices=4, **keywords), fit_em(data, **keywords)
    out[name] = max(
        [abs(float(a.background_weight) - float(b.background_weight))]
        + [float(np.max(np.abs(np.asarray(a.params[k]) - np.asarray(b.params[k]))))
           for k in b.params]
        + [float(np.max(np.abs(np.asarray(a.lower_bounds) - np.asarray(b.lower_bounds))))]
    )
    out[name + "_weight"] = float(b.background_weight)
print(json.dumps(out))
"""


@pytest.mark.slow
def test_four_devices_with_background_equal_fit_em():
    """The rows split unevenly over four CPU devices (a fresh interpreter: devices are
    set before JAX starts), complete and with NaN: the psum of the statistics with the
    background's column gives fit_em's fit to 1e-10."""
    import json
    import os
    import subprocess
    import sys

    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4")
    completed = subprocess.run(
        [sys.executable, "-c", _FOUR_DEVICES], env=env, capture_output=True, text=True
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    out = json.loads(completed.stdout.strip().splitlines()[-1])
    assert out["devices"] == 4
    assert out["complete"] < 1e-10 and out["nan"] < 1e-10
    assert 0.05 < out["complete_weight"] < 0.5 and 0.05 < out["nan_weight"] < 0.5
