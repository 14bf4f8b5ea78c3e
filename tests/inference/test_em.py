"""The EM back end against scikit-learn, numpyro's log density, and its own invariants."""

import functools
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pytest
from numpyro.infer.util import log_density
from sklearn.exceptions import ConvergenceWarning as SklearnConvergenceWarning
from sklearn.mixture import GaussianMixture as SklearnGaussianMixture

from gaussmix.inference import em
from gaussmix.inference.em import features, fit_em, maximization, options
from gaussmix.inference.em import fit as fit_module
from gaussmix.inference.em import parameters as parameters_module
from gaussmix.models.mixture import gaussian_mixture
from gaussmix.models.priors import COVARIANCE_SITES, default_prior_parameters

COVARIANCE_TYPES = ["full", "tied", "diag", "spherical"]
K, D = 3, 3
#: Tests share data shapes and iteration counts so that they share compiled programs.
N_PER_CLUSTER, MAX_ITER = 30, 30


def three_clusters(n_per_cluster=N_PER_CLUSTER, seed=0, n_features=D):
    rng = np.random.default_rng(seed)
    parts = []
    for k in range(K):
        mixing = rng.normal(size=(n_features, n_features)) * 0.6 + np.eye(n_features)
        parts.append(rng.normal(size=(n_per_cluster, n_features)) @ mixing + 4.0 * k)
    return np.concatenate(parts)


def initial_parameters(x, covariance_type, seed=1):
    """A deliberately poor but valid starting point shared with scikit-learn."""
    rng = np.random.default_rng(seed)
    n_features = x.shape[1]
    weights = np.full(K, 1.0 / K)
    means = x[rng.choice(len(x), K, replace=False)]
    precisions = {
        "full": np.stack([np.eye(n_features) * 0.3] * K),
        "tied": np.eye(n_features) * 0.3,
        "diag": np.full((K, n_features), 0.3),
        "spherical": np.full(K, 0.3),
    }[covariance_type]
    return weights, means, precisions


def project_gradients(gradients):
    """Gradient of the log density in the tangent space of each site's support."""
    out = {}
    for name, value in gradients.items():
        value = np.asarray(value)
        if name == "weights":
            value = value - value.mean()  # simplex tangent
        elif name in ("covariances", "covariance"):
            value = 0.5 * (value + np.swapaxes(value, -1, -2))
        out[name] = value
    return out


# -- scikit-learn parity ------------------------------------------------------------------


# block_rows None: these small data are one block, features computed once per fit; 7: padded
# blocks streamed through the scan, features recomputed every iteration.
# A full-covariance fit on a CPU runs its E-step through the compiled kernel where it
# builds (inference/native.py); GAUSSMIX_NATIVE=0 keeps it in XLA: both paths are checked.
@pytest.mark.parametrize("block_rows", [None, 7], ids=["one-block", "blocks"])
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_matches_scikit_learn_at_every_iteration(covariance_type, block_rows):
    assert_matches_scikit_learn(covariance_type, block_rows)


@pytest.mark.parametrize("block_rows", [None, 7], ids=["one-block", "blocks"])
def test_full_covariance_through_xla_matches_scikit_learn(block_rows, monkeypatch):
    monkeypatch.setenv("GAUSSMIX_NATIVE", "0")
    assert_matches_scikit_learn("full", block_rows)


def assert_matches_scikit_learn(covariance_type, block_rows):
    x = three_clusters()
    weights, means, precisions = initial_parameters(x, covariance_type)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SklearnConvergenceWarning)
        reference = SklearnGaussianMixture(
            K,
            covariance_type=covariance_type,
            weights_init=weights,
            means_init=means,
            precisions_init=precisions,
            max_iter=MAX_ITER,
            tol=0.0,
        ).fit(x)
    result = fit_em(
        x,
        n_components=K,
        covariance_type=covariance_type,
        weights_init=weights,
        means_init=means,
        precisions_init=precisions,
        max_iter=MAX_ITER,
        tol=0.0,
        block_rows=block_rows,
    )
    assert result.method == "maximum_likelihood"
    assert int(result.n_iter) == reference.n_iter_ == MAX_ITER
    assert not bool(result.converged)
    np.testing.assert_allclose(result.lower_bounds, reference.lower_bounds_, rtol=1e-10)
    np.testing.assert_allclose(float(result.lower_bound), reference.lower_bound_, rtol=1e-10)
    site = COVARIANCE_SITES[covariance_type]
    np.testing.assert_allclose(result.params["weights"], reference.weights_, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(result.params["means"], reference.means_, rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(result.params[site], reference.covariances_, rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(
        result.precisions_cholesky, reference.precisions_cholesky_, rtol=1e-8, atol=1e-8
    )
    # The trace never decreases (EM's monotonicity), up to rounding.
    assert np.all(np.diff(np.asarray(result.lower_bounds)) >= -1e-12)


def test_convergence_rule_is_scikit_learns():
    x = three_clusters()
    weights, means, precisions = initial_parameters(x, "diag")
    kwargs = dict(weights_init=weights, means_init=means, precisions_init=precisions, tol=1e-3)
    reference = SklearnGaussianMixture(K, covariance_type="diag", max_iter=MAX_ITER, **kwargs).fit(
        x
    )
    result = fit_em(x, n_components=K, covariance_type="diag", max_iter=MAX_ITER, **kwargs)
    assert bool(result.converged) and reference.converged_
    assert int(result.n_iter) == reference.n_iter_ < MAX_ITER
    # entries past n_iter repeat the final value
    tail = np.asarray(result.lower_bounds)[int(result.n_iter) :]
    assert tail.shape == (MAX_ITER - reference.n_iter_,)
    np.testing.assert_array_equal(tail, float(result.lower_bound))


# -- MAP: a stationary point of the program's log posterior --------------------------------


def assert_stationary(x, result, covariance_type, priors, tolerance):
    """The gradient of numpyro's log density (no Jacobian) vanishes at the EM answer."""
    params = dict(result.params)
    if priors and "scales" in priors:
        params.pop(COVARIANCE_SITES[covariance_type])
    kwargs = {"n_components": K, "covariance_type": covariance_type, "priors": priors}

    def log_posterior(values):
        return log_density(gaussian_mixture, (x,), kwargs, values)[0]

    gradients = project_gradients(jax.jit(jax.grad(log_posterior))(params))
    for name, gradient in gradients.items():
        assert np.max(np.abs(gradient)) < tolerance * len(x), (name, gradient)


def map_fit(x, covariance_type, priors, **kwargs):
    weights, means, precisions = initial_parameters(x, covariance_type)
    return fit_em(
        x,
        n_components=K,
        covariance_type=covariance_type,
        priors=priors,
        reg_covar=0.0,
        weights_init=weights,
        means_init=means,
        precisions_init=precisions,
        **kwargs,
    )


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_default_map_is_a_stationary_point_of_the_program(covariance_type):
    x = three_clusters()
    result = map_fit(x, covariance_type, "default", tol=0.0, max_iter=300)
    assert result.method == "conjugate_map"
    lower_bounds = np.asarray(result.lower_bounds)
    assert np.all(np.diff(lower_bounds) >= -1e-12)  # MAP-EM never decreases either
    assert_stationary(x, result, covariance_type, None, tolerance=1e-9)


def test_user_conjugate_priors_keep_the_closed_form():
    x = three_clusters()
    priors = {
        "weights": dist.Dirichlet(jnp.full(K, 3.0)),
        "variances": dist.InverseGamma(3.0, 2.0),
    }
    result = map_fit(x, "spherical", priors, tol=0.0, max_iter=300)
    assert result.method == "conjugate_map"
    assert_stationary(x, result, "spherical", priors, tolerance=1e-9)


@functools.partial(jax.jit, static_argnames=("covariance_type",))
def closed_form_and_program_log_prior(weights, means, covariances, x, priors, covariance_type):
    """Both log priors of these parameters, with the default hyperparameters of ``x``
    (one compiled program: the preparation is no longer run op by op)."""
    parameters = parameters_module.with_covariances(weights, means, covariances, covariance_type)
    hyper = default_prior_parameters(x, covariance_type)
    prior = maximization.make_conjugate_prior(priors, hyper, K, covariance_type, jnp.float64)
    closed_form = em.conjugate_log_prior(parameters, prior, covariance_type)
    program = em.program_log_prior(
        em.site_values(parameters, covariance_type),
        n_components=K,
        covariance_type=covariance_type,
        priors=priors,
        prior_parameters=hyper,
    )
    return closed_form, program


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_closed_form_log_prior_is_the_programs(covariance_type):
    x = three_clusters()
    rng = np.random.default_rng(2)
    site = COVARIANCE_SITES[covariance_type]
    user = {
        "full": dist.InverseWishart(D + 3.0, 1.5 * jnp.eye(D)),
        "tied": dist.InverseWishart(D + 1.0, 0.5 * jnp.eye(D)),
        "diag": dist.InverseGamma(2.0, 1.5),
        "spherical": dist.InverseGamma(jnp.array([1.0, 2.0, 3.0]), 0.5),
    }[covariance_type]
    covariances = {
        "full": np.stack([np.eye(D) * 2 + 0.3] * K),
        "tied": np.eye(D) * 2 + 0.3,
        "diag": rng.uniform(1, 2, (K, D)),
        "spherical": rng.uniform(1, 2, K),
    }[covariance_type]
    weights = rng.dirichlet(np.ones(K))
    means = rng.normal(size=(K, D))
    for priors in ({}, {"weights": dist.Dirichlet(jnp.array([2.0, 3.0, 4.0])), site: user}):
        closed_form, program = closed_form_and_program_log_prior(
            weights, means, covariances, x, priors, covariance_type=covariance_type
        )
        np.testing.assert_allclose(closed_form, program, rtol=1e-12)


@pytest.mark.slow
def test_generalized_em_reaches_a_stationary_point():
    x = three_clusters()
    priors = {"scales": dist.HalfNormal(3.0), "means": dist.Normal(0.0, 10.0)}
    result = map_fit(x, "diag", priors, tol=1e-12, max_iter=MAX_ITER)
    assert result.method == "generalized_em"
    assert bool(result.converged)
    lower_bounds = np.asarray(result.lower_bounds)
    assert np.all(np.diff(lower_bounds) >= -1e-12)
    np.testing.assert_allclose(result.params["scales"] ** 2, result.params["variances"])
    assert_stationary(x, result, "diag", priors, tolerance=1e-7)


@pytest.mark.parametrize(
    ("covariance_type", "priors", "method"),
    [
        ("full", {"covariances": dist.InverseWishart(5.0, jnp.eye(D))}, "conjugate_map"),
        ("tied", {"weights": dist.Dirichlet(jnp.ones(K))}, "conjugate_map"),
        ("diag", {"variances": dist.InverseGamma(2.0, 1.0).expand([D])}, "conjugate_map"),
        ("full", {"means": dist.Normal(0.0, 3.0)}, "generalized_em"),
        ("full", {"covariances": dist.LKJ(D, 2.0)}, "generalized_em"),
        ("spherical", {"scales": dist.HalfNormal(1.0)}, "generalized_em"),
        ("diag", {"variances": dist.LogNormal(0.0, 1.0)}, "generalized_em"),
    ],
)
def test_priors_choose_the_m_step(covariance_type, priors, method):
    assert options.check_priors(priors, covariance_type)[0] == method


def test_dirichlet_below_one_has_no_map():
    x = three_clusters()
    with pytest.raises(ValueError, match="concentration >= 1"):
        fit_em(x, n_components=K, priors={"weights": dist.Dirichlet(jnp.full(K, 0.5))})


# -- sufficient statistics: exact EM over chunks ------------------------------------------


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_chunk_statistics_sum_to_the_whole(covariance_type):
    x = jnp.asarray(three_clusters())
    weights, means, precisions = initial_parameters(np.asarray(x), covariance_type)
    factor = em.precisions_cholesky_from_precisions(precisions, covariance_type)
    covariances = em.covariances_from_precisions_cholesky(factor, covariance_type)
    parameters = em.MixtureParameters(jnp.asarray(weights), jnp.asarray(means), covariances, factor)
    weight = jnp.asarray(np.random.default_rng(0).uniform(0.5, 2.0, len(x)))
    centre = weight @ x / weight.sum()
    kwargs = dict(covariance_type=covariance_type, centre=centre)
    statistics = jax.jit(
        em.sufficient_statistics, static_argnames=("covariance_type", "block_rows")
    )
    whole = statistics(x, parameters, sample_weight=weight, **kwargs)
    parts = [
        statistics(x[a:b], parameters, sample_weight=weight[a:b], block_rows=7, **kwargs)
        for a, b in ((0, 41), (41, 90))
    ]
    summed = jax.tree.map(jnp.add, *parts)
    for got, expected in zip(summed, whole, strict=True):
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-10)
    # One M-step from the statistics is scikit-learn's M-step.
    unit = statistics(x, parameters, **kwargs)
    step = jax.jit(em.maximization_step, static_argnames=("covariance_type",))(
        unit, reg_covar=1e-6, **kwargs
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SklearnConvergenceWarning)
        reference = SklearnGaussianMixture(
            K,
            covariance_type=covariance_type,
            weights_init=weights,
            means_init=means,
            precisions_init=precisions,
            max_iter=1,
        ).fit(np.asarray(x))
    np.testing.assert_allclose(step.weights, reference.weights_, rtol=1e-12)
    np.testing.assert_allclose(step.means, reference.means_, rtol=1e-12)
    np.testing.assert_allclose(step.covariances, reference.covariances_, rtol=1e-11)
    np.testing.assert_allclose(step.precisions_cholesky, reference.precisions_cholesky_, rtol=1e-10)
    np.testing.assert_allclose(
        float(unit.log_likelihood / unit.total_weight), reference.lower_bound_, rtol=1e-12
    )


def test_e_step_matches_scipy_densities():
    from scipy import stats

    x = three_clusters()
    weights, means, precisions = initial_parameters(x, "full")
    precisions = precisions + np.stack([np.diag([0.1, 0.2, 0.3])] * K)
    factor = em.precisions_cholesky_from_precisions(precisions, "full")
    got = em.estimate_weighted_log_prob(x, weights, means, factor, "full", block_rows=16)
    expected = np.stack(
        [
            np.log(weights[k])
            + stats.multivariate_normal(means[k], np.linalg.inv(precisions[k])).logpdf(x)
            for k in range(K)
        ],
        axis=1,
    )
    np.testing.assert_allclose(got, expected, rtol=1e-11)


@pytest.mark.parametrize("n_features", [3, features.SLICED_PRODUCTS_MAX_FEATURES + 1])
def test_full_design_matrix_is_the_upper_triangle_of_the_outer_product(n_features):
    """Both ways of building the features (slice products, one gather for wide data)."""
    x = np.random.default_rng(2).normal(size=(5, n_features))
    rows, cols = np.triu_indices(n_features)
    expected = np.concatenate([x[:, rows] * x[:, cols], x, np.ones((5, 1))], axis=1)
    got = em.design_matrix(jnp.asarray(x), "full")
    np.testing.assert_array_equal(np.asarray(got), expected)


def test_default_blocks_are_aligned_within_budget_with_little_padding(monkeypatch):
    monkeypatch.setattr(features.jax, "default_backend", lambda: "cpu")
    width = features.feature_count(32, "full") + 2 * 16
    budget = features.CPU_BLOCK_BYTES
    rows = features.block_size(100_000, 32, 16, "full", 8, None)
    assert rows == 512  # E1: the largest power of two within the budget
    assert rows * width * 8 <= budget < 2 * rows * width * 8
    rows = features.block_size(100_000, 8, 4, "diag", 8, None)  # 16384 -> 7 blocks, evened
    width = features.feature_count(8, "diag") + 2 * 4
    assert rows % features.BLOCK_ALIGNMENT == 0 and rows * width * 8 <= budget
    assert 0 <= 7 * rows - 100_000 < 7 * features.BLOCK_ALIGNMENT
    # a batch: one block per dataset up to _BATCH_DESIGN_CACHE_BYTES in all, then each
    # dataset's budget until the whole reaches the accelerator budget, then shared down to
    # _MIN_BLOCK_ROWS; small data is one block; an explicit size is kept
    assert features.block_size(20_000, 8, 4, "full", 8, None, n_datasets=16) == 20_000
    assert features.block_size(100_000, 32, 16, "full", 8, None, n_datasets=3) == 512
    assert features.block_size(100_000, 32, 16, "full", 8, None, n_datasets=1000) == 256
    assert features.block_size(500, 32, 16, "full", 8, None, n_datasets=1000) == 500
    assert features.block_size(1_000, 32, 16, "full", 8, None) == 1_000
    assert features.block_size(1_000, 32, 16, "full", 8, 7) == 7


# -- weights, batches, restarts, retracing ------------------------------------------------


def test_integer_sample_weights_equal_repeated_rows():
    x = three_clusters()
    repeats = np.random.default_rng(5).integers(0, 4, len(x))
    weights, means, precisions = initial_parameters(x, "full")
    kwargs = dict(
        n_components=K, weights_init=weights, means_init=means, precisions_init=precisions
    )
    kwargs.update(max_iter=MAX_ITER, tol=0.0)
    weighted = fit_em(x, sample_weight=repeats, **kwargs)
    repeated = fit_em(np.repeat(x, repeats, axis=0), **kwargs)
    np.testing.assert_allclose(weighted.lower_bounds, repeated.lower_bounds, rtol=1e-10)
    for name in weighted.params:
        np.testing.assert_allclose(
            weighted.params[name], repeated.params[name], rtol=1e-8, atol=1e-10
        )


def test_batched_datasets_equal_one_by_one():
    data = np.stack([three_clusters(seed=s) for s in range(3)])
    kwargs = dict(n_components=K, covariance_type="diag", max_iter=MAX_ITER)
    batched = fit_em(data, init_params="random_from_data", **kwargs)
    assert batched.params["means"].shape == (3, K, D)
    assert batched.lower_bounds.shape == (3, MAX_ITER)
    assert batched.n_iter.shape == (3,) and batched.converged.shape == (3,)
    # dataset 0 of a batch uses the same key as an unbatched fit
    alone = fit_em(data[0], init_params="random_from_data", **kwargs)
    np.testing.assert_allclose(batched.params["means"][0], alone.params["means"], rtol=1e-10)
    # with explicit initial parameters every dataset equals its own fit: see
    # tests/gaussmix/test_gaussian_mixture.py::test_batched_fits_equal_one_by_one


#: Initialization of each covariance type's restart check: "random" for full (the
#: responsibilities drawn per restart key), the default k-means for the others.
RESTART_INIT = {"full": "random", "tied": "kmeans", "diag": "kmeans", "spherical": "kmeans"}


@pytest.mark.parametrize("covariance_type", ["full", "tied", "diag", "spherical"])
def test_restart_zero_is_the_single_fit_to_the_last_bit(covariance_type):
    """Restart 0 is computed as the n_init=1 fit is, not as a lane of the vmap over the
    other restarts (whose rounding differs in the last bits), so more restarts never end
    below one restart with the same seed: exactly, as scikit-learn's test_init asks.
    (This also holds the former test that n_init=3 never lowered a random start's bound
    by more than 1e-12 relative: the same property, exactly, with n_init=4.)"""
    x = three_clusters(seed=5)
    for seed in range(3):
        kwargs = dict(
            n_components=K,
            covariance_type=covariance_type,
            init_params=RESTART_INIT[covariance_type],
            max_iter=1,
            seed=seed,
        )
        one = fit_em(x, n_init=1, **kwargs)
        many = fit_em(x, n_init=4, **kwargs)
        assert float(many.lower_bound) >= float(one.lower_bound)


def test_every_hc_model_start_is_one_compiled_fit():
    """The hc models differ only in the start's labels, an array argument: after the
    first, the other three starts neither compile nor load a fit program (one program
    each before; tests/gaussmix/test_hc_start.py checks each starts from its labels)."""
    from gaussmix.inference import compilation

    x = three_clusters()
    fit_em(x, n_components=K, init_params="hc-EII", max_iter=3)
    before = compilation.statistics()
    for model in ("VII", "EEE", "VVV"):
        fit_em(x, n_components=K, init_params=f"hc-{model}", max_iter=3)
    after = compilation.statistics()
    assert after["compiled"] - before["compiled"] == 0
    assert after["disk"] - before["disk"] == 0
    assert after["memory"] - before["memory"] >= 3


@pytest.fixture(scope="module")
def maximum_likelihood_of_three_clusters():
    """scikit-learn's EM started from the true partition and run to its fixed point: the
    maximum of the likelihood every initialization should reach (3 iterations)."""
    x = three_clusters()
    parts = np.split(x, K)
    reference = SklearnGaussianMixture(
        K,
        weights_init=np.full(K, 1.0 / K),
        means_init=np.stack([part.mean(axis=0) for part in parts]),
        precisions_init=np.stack([np.linalg.inv(np.cov(part.T)) for part in parts]),
        tol=1e-12,
        max_iter=1000,
    ).fit(x)
    assert reference.converged_
    return x, reference


@pytest.mark.parametrize("init_params", em.INIT_PARAMS)
def test_every_initialization_finds_the_maximum_likelihood(
    init_params, maximum_likelihood_of_three_clusters
):
    """Each initialization (best of 3 restarts) reaches the maximum of the likelihood,
    scikit-learn's fixed point from the true partition. Both stop when the lower bound
    changes by less than 1e-12: EM here contracts by a factor far below 1 per iteration
    (clusters ~7 sd apart; 3 to 17 iterations), so the distance left to the fixed point is
    float64 rounding of 90-row sums, ~eps |x| cond ~ 1e-14, plus the last step's residual
    (measured: means 1.3e-13, covariances 5.3e-13, lower bound 7e-14, for "random"; the
    others 1e-13 or less). Tolerances: 10x those. (The sample means of the generating
    clusters differ from the maximum-likelihood means by 1.7e-5, the soft assignments'
    share; the former test allowed 0.5.)"""
    x, reference = maximum_likelihood_of_three_clusters
    result = fit_em(x, n_components=K, init_params=init_params, n_init=3, max_iter=100, tol=1e-12)
    assert bool(result.converged)
    found = np.asarray(result.params["means"])
    order = np.argmin(((found[:, None] - reference.means_[None]) ** 2).sum(-1), axis=1)
    assert sorted(order.tolist()) == [0, 1, 2]
    np.testing.assert_allclose(found, reference.means_[order], rtol=0, atol=1.3e-12)
    np.testing.assert_allclose(
        result.params["covariances"], reference.covariances_[order], rtol=0, atol=5.3e-12
    )
    np.testing.assert_allclose(
        result.params["weights"], reference.weights_[order], rtol=0, atol=1e-12
    )
    assert abs(float(result.lower_bound) - reference.lower_bound_) < 7e-13


def test_initialize_starts_where_fit_em_starts():
    """The public initialization API gives a fit's start (restart 0's key; random
    responsibilities are drawn per block of rows, so the blocks must agree too)."""
    x = three_clusters()
    options = em.check_options(n_components=K, covariance_type="diag", init_params="random")
    start = em.initialize(em.restart_key(5), x, None, options)
    fit = fit_em(
        x, n_components=K, covariance_type="diag", init_params="random", max_iter=0, seed=5
    )
    # the same operations compiled in two programs: equal up to rounding (float64)
    np.testing.assert_allclose(start.weights, fit.params["weights"], rtol=1e-12)
    np.testing.assert_allclose(start.means, fit.params["means"], rtol=1e-12)
    np.testing.assert_allclose(start.covariances, fit.params["variances"], rtol=1e-12)
    other = em.initialize(em.restart_key(5, restart=1), x, None, options)
    assert not np.allclose(other.means, start.means)  # another restart, another start


def test_second_call_with_same_shapes_does_not_retrace(monkeypatch):
    traces = []
    original = fit_module._fit_dataset

    def counting(*args, **kwargs):
        traces.append(1)  # runs only while tracing
        return original(*args, **kwargs)

    monkeypatch.setattr(fit_module, "_fit_dataset", counting)
    x = np.random.default_rng(0).normal(size=(37, 2))  # a shape no other test uses
    kwargs = dict(n_components=2, covariance_type="spherical", init_params="random_from_data")
    fit_em(x, max_iter=5, seed=0, **kwargs)
    assert len(traces) == 1
    fit_em(x + 1.0, max_iter=5, seed=1, tol=1e-5, reg_covar=1e-4, **kwargs)
    assert len(traces) == 1


def test_float32_stays_finite_and_close():
    x = three_clusters()
    weights, means, precisions = initial_parameters(x, "full")
    kwargs = dict(
        n_components=K,
        weights_init=weights,
        means_init=means,
        precisions_init=precisions,
        max_iter=MAX_ITER,
        tol=0.0,
    )
    double = fit_em(x, **kwargs)
    single = fit_em(
        x.astype(np.float32),
        **{
            k: (v.astype(np.float32) if isinstance(v, np.ndarray) else v) for k, v in kwargs.items()
        },
    )
    assert single.params["means"].dtype == jnp.float32
    assert np.all(np.isfinite(single.lower_bounds))
    np.testing.assert_allclose(single.params["means"], double.params["means"], rtol=1e-3, atol=1e-3)


def test_max_iter_zero_returns_the_initialization():
    x = three_clusters()
    weights, means, precisions = initial_parameters(x, "tied")
    result = fit_em(
        x,
        n_components=K,
        covariance_type="tied",
        weights_init=weights,
        means_init=means,
        precisions_init=precisions,
        max_iter=0,
    )
    assert int(result.n_iter) == 0 and result.lower_bounds.shape == (0,)
    np.testing.assert_allclose(result.params["means"], means)
    np.testing.assert_allclose(result.params["covariance"], np.linalg.inv(precisions), rtol=1e-12)


# -- failures ------------------------------------------------------------------------------


def test_collapsed_component_raises_naming_it():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(size=(50, 2)), np.full((4, 2), 10.0)])
    kwargs = dict(
        n_components=2,
        weights_init=np.array([0.9, 0.1]),
        means_init=np.array([[0.0, 0.0], [10.0, 10.0]]),
        precisions_init=np.stack([np.eye(2), np.eye(2)]),
    )
    with pytest.raises(ValueError, match=r"component 1 .*increase reg_covar"):
        fit_em(x, reg_covar=0.0, **kwargs)
    result = fit_em(x, reg_covar=1e-3, **kwargs)  # the remedy works
    assert np.all(np.isfinite(result.params["covariances"]))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"x": np.array([[0.0, np.nan]] * 10)}, "NaN"),
        ({"x": np.zeros(10)}, "shape"),
        ({"x": np.array([["a", "b"]] * 10)}, "numeric"),
        (
            {"n_components": 12},
            "Expected n_samples >= n_components but got n_components = 12, n_samples = 10",
        ),
        ({"n_components": 0}, "n_components"),
        ({"covariance_type": "banana"}, "covariance_type"),
        ({"init_params": "banana"}, "init_params"),
        ({"means_init": np.zeros((3, 2))}, "'means' should have the shape"),
        ({"weights_init": np.array([0.2, 0.2])}, "normalized"),
        ({"precisions_init": -np.stack([np.eye(2)] * 2)}, "positive-definite"),
        ({"sample_weight": -np.ones(10)}, "non-negative"),
        ({"sample_weight": np.ones(3)}, "one weight per point"),
        ({"priors": "flat"}, "priors"),
        ({"priors": {"sigma": dist.Normal()}}, "Unknown prior site"),
        ({"tol": -1.0}, "tol"),
    ],
)
def test_bad_input_is_refused(change, message):
    kwargs = {"x": np.random.default_rng(0).normal(size=(10, 2)), "n_components": 2}
    kwargs.update(change)
    with pytest.raises(ValueError, match=message):
        fit_em(kwargs.pop("x"), **kwargs)
