"""gaussmix.GaussianMixture against scikit-learn's GaussianMixture and its own invariants."""

import importlib
import pickle
import sys
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpyro.infer.util import log_density
from scipy import stats
from sklearn.exceptions import ConvergenceWarning as SklearnConvergenceWarning
from sklearn.mixture import GaussianMixture as SklearnGaussianMixture
from sklearn.utils.estimator_checks import parametrize_with_checks

from gaussmix import GaussianMixture
from gaussmix.inference.em import ConvergenceWarning, fit_em
from gaussmix.models.mixture import gaussian_mixture

COVARIANCE_TYPES = ["full", "tied", "diag", "spherical"]
K, D, N_PER_CLUSTER = 3, 2, 40
#: Shared by tests so that they share compiled programs.
MAX_ITER = 100


def three_clusters(seed=0, n_per_cluster=N_PER_CLUSTER, n_features=D):
    rng = np.random.default_rng(seed)
    centres = np.array([[0.0, 0.0], [5.0, 5.0], [0.0, 6.0]])[:, :n_features]
    return np.concatenate([rng.normal(size=(n_per_cluster, n_features)) + c for c in centres])


def shared_start(x, covariance_type):
    rng = np.random.default_rng(1)
    precisions = {
        "full": np.stack([np.eye(D) * 0.5] * K),
        "tied": np.eye(D) * 0.5,
        "diag": np.full((K, D), 0.5),
        "spherical": np.full(K, 0.5),
    }[covariance_type]
    return {
        "weights_init": np.full(K, 1.0 / K),
        "means_init": x[rng.choice(len(x), K, replace=False)],
        "precisions_init": precisions,
    }


# -- scikit-learn's estimator checks ------------------------------------------------------

#: Checks of scikit-learn's suite that gaussmix.GaussianMixture does not pass, and why.
EXPECTED_FAILED_CHECKS = {}


@parametrize_with_checks(
    [GaussianMixture(random_state=0)],
    expected_failed_checks=lambda estimator: EXPECTED_FAILED_CHECKS,
)
def test_scikit_learn_estimator_checks(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        check(estimator)


# -- same answers as scikit-learn -----------------------------------------------------------


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_estimator_matches_scikit_learn(covariance_type):
    x = three_clusters()
    start = shared_start(x, covariance_type)
    ours = GaussianMixture(K, covariance_type=covariance_type, tol=1e-4, **start).fit(x)
    reference = SklearnGaussianMixture(K, covariance_type=covariance_type, tol=1e-4, **start)
    reference.fit(x)
    assert ours.converged_ and reference.converged_
    assert ours.n_iter_ == reference.n_iter_ and ours.converged_ == reference.converged_
    np.testing.assert_allclose(ours.lower_bounds_, reference.lower_bounds_, rtol=1e-10)
    np.testing.assert_allclose(ours.lower_bound_, reference.lower_bound_, rtol=1e-10)
    for attribute in (
        "weights_",
        "means_",
        "covariances_",
        "precisions_",
        "precisions_cholesky_",
    ):
        np.testing.assert_allclose(
            getattr(ours, attribute), getattr(reference, attribute), rtol=1e-8, atol=1e-10
        )
    new = three_clusters(seed=7)
    np.testing.assert_allclose(ours.score_samples(new), reference.score_samples(new), rtol=1e-10)
    np.testing.assert_allclose(ours.predict_proba(new), reference.predict_proba(new), atol=1e-10)
    np.testing.assert_array_equal(ours.predict(new), reference.predict(new))
    np.testing.assert_allclose(ours.score(new), reference.score(new), rtol=1e-10)
    np.testing.assert_allclose(ours.bic(new), reference.bic(new), rtol=1e-10)
    np.testing.assert_allclose(ours.aic(new), reference.aic(new), rtol=1e-10)
    assert ours.method_ == "maximum_likelihood"


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_sample_draws_scikit_learns_stream(covariance_type):
    x = three_clusters()
    start = shared_start(x, covariance_type)
    kwargs = dict(covariance_type=covariance_type, max_iter=MAX_ITER, random_state=3, **start)
    ours = GaussianMixture(K, **kwargs).fit(x)
    reference = SklearnGaussianMixture(K, **kwargs).fit(x)
    ours_x, ours_labels = ours.sample(50)
    reference_x, reference_labels = reference.sample(50)
    np.testing.assert_array_equal(ours_labels, reference_labels)
    np.testing.assert_allclose(ours_x, reference_x, rtol=1e-10)


@pytest.mark.parametrize(
    ("covariance_type", "expected"), [("spherical", 13), ("diag", 21), ("tied", 26), ("full", 41)]
)
def test_parameter_counts_for_bic_and_aic(covariance_type, expected):
    model = GaussianMixture(2, covariance_type=covariance_type)
    model.means_ = np.zeros((2, 5))  # D = 5, K = 2
    assert model._n_parameters() == expected


def test_bic_and_aic_formulas():
    x = three_clusters()
    model = GaussianMixture(K, random_state=0).fit(x)
    log_likelihood = model.score(x) * len(x)
    p = model._n_parameters()
    assert p == K * D * (D + 1) // 2 + K * D + K - 1
    np.testing.assert_allclose(model.bic(x), -2 * log_likelihood + p * np.log(len(x)))
    np.testing.assert_allclose(model.aic(x), -2 * log_likelihood + 2 * p)
    # ICL: the BIC plus -2 sum log of each point's largest responsibility, from scipy's
    # densities (an independent E-step); K = 1 assigns with certainty: ICL = BIC.
    densities = np.stack(
        [
            weight * stats.multivariate_normal(mean, covariance).pdf(x)
            for weight, mean, covariance in zip(
                model.weights_, model.means_, model.covariances_, strict=True
            )
        ],
        axis=1,
    )
    largest = np.max(densities / densities.sum(axis=1, keepdims=True), axis=1)
    np.testing.assert_allclose(model.icl(x), model.bic(x) - 2 * np.sum(np.log(largest)), rtol=1e-9)
    assert model.icl(x) > model.bic(x)
    single = GaussianMixture(1).fit(x)
    np.testing.assert_allclose(single.icl(x), single.bic(x), rtol=1e-12)


# -- fitting behaviour -----------------------------------------------------------------------


def test_fit_predict_equals_fit_then_predict():
    x = three_clusters()
    for max_iter in (1, 100):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model = GaussianMixture(K, max_iter=max_iter, random_state=0)
            labels = model.fit_predict(x)
        np.testing.assert_array_equal(labels, model.predict(x))


def test_stopping_at_max_iter_warns():
    x = three_clusters()
    with pytest.warns(ConvergenceWarning, match="did not converge"):
        GaussianMixture(K, max_iter=1, random_state=0).fit(x)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        GaussianMixture(K, max_iter=0, random_state=0).fit(x)  # initialization only


def test_convergence_warning_is_also_scikit_learns_when_scikit_learn_is_loaded(monkeypatch):
    """With scikit-learn loaded the warning is an instance of gaussmix's and of
    scikit-learn's ConvergenceWarning (filters and ``pytest.warns`` written for either
    catch it); without it, gaussmix's own class (scikit-learn is never imported)."""
    x = three_clusters()
    with pytest.warns(SklearnConvergenceWarning, match="did not converge") as caught:
        GaussianMixture(K, max_iter=1, random_state=0).fit(x)
    convergence = [w.message for w in caught if isinstance(w.message, SklearnConvergenceWarning)]
    assert all(isinstance(message, ConvergenceWarning) for message in convergence)
    monkeypatch.delitem(sys.modules, "sklearn.exceptions")
    with pytest.warns(ConvergenceWarning, match="did not converge") as caught:
        GaussianMixture(K, max_iter=1, random_state=0).fit(x)
    assert {type(w.message) for w in caught if isinstance(w.message, ConvergenceWarning)} == {
        ConvergenceWarning
    }


def test_convergence_warning_crosses_processes():
    """The combined class is found by its module and name, as pickle and pytest-xdist
    look a warning's class up in another process (a class made on the fly and found
    nowhere crashed xdist's controller)."""
    x = three_clusters()
    with pytest.warns(SklearnConvergenceWarning) as caught:
        GaussianMixture(K, max_iter=1, random_state=0).fit(x)
    message = next(w.message for w in caught if isinstance(w.message, ConvergenceWarning))
    category = type(message)
    module = importlib.import_module(category.__module__)
    assert getattr(module, category.__name__) is category
    copy = pickle.loads(pickle.dumps(message))
    assert type(copy) is category and str(copy) == str(message)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_precisions_init_of_the_initialization_changes_nothing(covariance_type):
    """scikit-learn's non-regression test for its #16944 on gaussmix's own initialization:
    ``precisions_init`` equal to the precisions the initialization computes gives the same
    fit in the same number of iterations (a wrongly converted ``precisions_init`` would
    start elsewhere and take more). The two starts differ by the rounding of precision
    -> Cholesky factor (a few eps relative), which EM's contraction does not amplify over
    a handful of iterations: 1e-10 relative."""
    x = three_clusters()
    options = {"covariance_type": covariance_type, "random_state": 0}
    start = GaussianMixture(K, max_iter=0, **options).fit(x)
    given = GaussianMixture(K, precisions_init=start.precisions_, **options).fit(x)
    drawn = GaussianMixture(K, **options).fit(x)
    assert given.n_iter_ == drawn.n_iter_
    np.testing.assert_allclose(given.precisions_cholesky_, drawn.precisions_cholesky_, rtol=1e-10)
    np.testing.assert_allclose(given.means_, drawn.means_, rtol=1e-10)


def test_warm_start_continues_where_it_stopped():
    x = three_clusters()
    start = shared_start(x, "full")
    stepwise = GaussianMixture(K, max_iter=1, warm_start=True, **start)
    bounds = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.simplefilter("ignore", SklearnConvergenceWarning)
        for _ in range(5):
            stepwise.fit(x)
            bounds.append(stepwise.lower_bound_)
        reference = SklearnGaussianMixture(K, max_iter=5, tol=0.0, **start).fit(x)
    np.testing.assert_allclose(bounds, reference.lower_bounds_, rtol=1e-10)
    np.testing.assert_allclose(stepwise.means_, reference.means_, rtol=1e-8)


def test_recovers_known_parameters():
    rng = np.random.default_rng(11)
    weights = np.array([0.2, 0.3, 0.5])
    means = np.array([[-4.0, 0.0], [0.0, 4.0], [4.0, 0.0]])
    covariances = np.array([[[1.0, 0.3], [0.3, 0.5]], np.eye(2), [[0.5, -0.2], [-0.2, 1.5]]])
    n = 3000
    labels = rng.choice(3, size=n, p=weights)
    x = np.stack([rng.multivariate_normal(means[k], covariances[k]) for k in labels])
    model = GaussianMixture(3, random_state=0, n_init=2, tol=1e-6).fit(x)
    order = np.argsort(model.means_[:, 0])
    counts = weights * n
    # tolerances: 5 standard errors of each estimate
    weight_error = 5 * np.sqrt(weights * (1 - weights) / n)
    assert np.all(np.abs(model.weights_[order] - weights) < weight_error)
    mean_error = 5 * np.sqrt(np.diagonal(covariances, axis1=1, axis2=2) / counts[:, None])
    assert np.all(np.abs(model.means_[order] - means) < mean_error)
    variances = np.diagonal(covariances, axis1=1, axis2=2)
    covariance_error = 5 * variances * np.sqrt(2 / counts[:, None])
    assert np.all(
        np.abs(np.diagonal(model.covariances_[order], axis1=1, axis2=2) - variances)
        < covariance_error
    )


def test_sample_weights_scale_the_likelihood():
    x = three_clusters()
    start = shared_start(x, "diag")
    repeats = np.random.default_rng(2).integers(0, 3, len(x))
    weighted = GaussianMixture(K, covariance_type="diag", **start).fit(x, sample_weight=repeats)
    repeated = GaussianMixture(K, covariance_type="diag", **start).fit(np.repeat(x, repeats, 0))
    np.testing.assert_allclose(weighted.means_, repeated.means_, rtol=1e-8)
    np.testing.assert_allclose(weighted.lower_bound_, repeated.lower_bound_, rtol=1e-10)


def test_default_priors_give_the_map_as_the_program_site_dict():
    x = three_clusters()
    model = GaussianMixture(
        K, priors="default", init_params="random_from_data", n_init=3, random_state=0, tol=1e-8
    ).fit(x)
    assert model.method_ == "conjugate_map"
    params = model.params_
    assert set(params) == {"weights", "means", "covariances"}
    value = jax.jit(
        lambda values: log_density(gaussian_mixture, (x,), {"n_components": K}, values)[0]
    )({k: jnp.asarray(v) for k, v in params.items()})
    assert np.isfinite(float(value))
    assert np.all(np.diff(model.lower_bounds_) >= -1e-12)


def test_dtypes_follow_the_input():
    x = three_clusters()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        double = GaussianMixture(K, random_state=0, max_iter=1).fit(x)
        single = GaussianMixture(K, random_state=0, max_iter=1).fit(x.astype(np.float32))
    assert double.means_.dtype == np.float64 and single.means_.dtype == np.float32
    assert double.predict_proba(x).dtype == np.float64
    single_x = x.astype(np.float32)
    assert np.all(np.isfinite(single.score_samples(single_x)))
    # under x64 an integer count of tied components once promoted them to float64
    assert single.score_samples(single_x).dtype == np.float32
    assert single.predict_proba(single_x).dtype == np.float32


def test_pickles_and_repr():
    x = three_clusters()
    model = GaussianMixture(K, covariance_type="diag", random_state=0).fit(x)
    restored = pickle.loads(pickle.dumps(model))
    np.testing.assert_array_equal(restored.predict(x), model.predict(x))
    assert repr(model) == "GaussianMixture(covariance_type='diag', n_components=3, random_state=0)"


# -- failures --------------------------------------------------------------------------------


def test_collapsed_component_raises_not_nan():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(size=(50, 2)), np.full((4, 2), 10.0)])
    kwargs = dict(
        weights_init=np.array([0.9, 0.1]),
        means_init=np.array([[0.0, 0.0], [10.0, 10.0]]),
        precisions_init=np.stack([np.eye(2), np.eye(2)]),
    )
    with pytest.raises(ValueError, match=r"component 1 .*increase reg_covar"):
        GaussianMixture(2, reg_covar=0.0, **kwargs).fit(x)


@pytest.mark.parametrize(
    ("X", "kwargs", "error", "message"),
    [
        (np.array([[0.0, np.nan]] * 10), {}, ValueError, "Input X contains NaN"),
        (np.array([[0.0, np.inf]] * 10), {}, ValueError, "infinity"),
        (np.zeros(10), {}, ValueError, "Expected 2D array, got 1D array instead"),
        (np.array([["a", "b"]] * 10), {}, ValueError, "numbers"),
        (
            np.zeros((10, 2)),
            {"n_components": 12},
            ValueError,
            "Expected n_samples >= n_components but got n_components = 12, n_samples = 10",
        ),
        (np.zeros((10, 2)), {"n_components": 0}, ValueError, "'n_components' parameter"),
        (np.zeros((10, 2)), {"covariance_type": "banana"}, ValueError, "'covariance_type'"),
        (np.zeros((10, 2)), {"means_init": np.zeros((3, 2))}, ValueError, "'means' should have"),
        (
            np.zeros((10, 2)),
            {"precisions_init": -np.stack([np.eye(2)] * 1)},
            ValueError,
            "positive-definite",
        ),
        (np.zeros((10, 2)), {"priors": "flat"}, ValueError, "priors"),
    ],
)
def test_bad_input_messages(X, kwargs, error, message):
    with pytest.raises(error, match=message):
        GaussianMixture(**kwargs).fit(X)


def test_negative_sample_weight_is_refused():
    with pytest.raises(ValueError, match="Negative values in data passed to `sample_weight`"):
        GaussianMixture(2).fit(three_clusters(), sample_weight=-np.ones(3 * N_PER_CLUSTER))


# -- properties (hypothesis) -----------------------------------------------------------------


def random_precisions(covariance_type, n_components, rng):
    if covariance_type == "full":
        a = rng.normal(size=(n_components, D, D))
        return a @ a.transpose(0, 2, 1) + 0.5 * np.eye(D)
    if covariance_type == "tied":
        a = rng.normal(size=(D, D))
        return a @ a.T + 0.5 * np.eye(D)
    if covariance_type == "diag":
        return rng.uniform(0.2, 3.0, size=(n_components, D))
    return rng.uniform(0.2, 3.0, size=n_components)


@st.composite
def models(draw):
    """A covariance type, K = 3 random components and 25 points (fixed shapes: one compile
    per covariance type)."""
    covariance_type = draw(st.sampled_from(COVARIANCE_TYPES))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    weights = rng.dirichlet(np.ones(K) * draw(st.floats(0.2, 5.0)))
    means = rng.normal(scale=draw(st.floats(0.1, 10.0)), size=(K, D))
    precisions = random_precisions(covariance_type, K, rng)
    x = rng.normal(scale=4.0, size=(25, D))
    return covariance_type, weights, means, precisions, x


def fitted_at(weights, means, precisions, covariance_type, x):
    """An estimator holding exactly these parameters (max_iter=0 keeps them)."""
    return GaussianMixture(
        len(weights),
        covariance_type=covariance_type,
        max_iter=0,
        weights_init=weights / weights.sum(),
        means_init=means,
        precisions_init=precisions,
    ).fit(x)


@settings(max_examples=30, deadline=None)
@given(models())
def test_responsibilities_sum_to_one(model):
    covariance_type, weights, means, precisions, x = model
    estimator = fitted_at(weights, means, precisions, covariance_type, x)
    responsibilities = estimator.predict_proba(x)
    assert np.all(responsibilities >= 0)
    np.testing.assert_allclose(responsibilities.sum(axis=1), 1.0, rtol=1e-12)


@settings(max_examples=30, deadline=None)
@given(models(), st.permutations(list(range(K))))
def test_permuting_components_leaves_the_score_unchanged(model, order):
    covariance_type, weights, means, precisions, x = model
    permuted_precisions = precisions if covariance_type == "tied" else precisions[order]
    original = fitted_at(weights, means, precisions, covariance_type, x)
    permuted = fitted_at(weights[order], means[order], permuted_precisions, covariance_type, x)
    np.testing.assert_allclose(permuted.score(x), original.score(x), rtol=1e-12)
    np.testing.assert_allclose(
        permuted.predict_proba(x), original.predict_proba(x)[:, order], atol=1e-12
    )


@settings(max_examples=10, deadline=None)
@given(st.sampled_from(COVARIANCE_TYPES), st.integers(0, 2**32 - 1))
def test_batched_fits_equal_one_by_one(covariance_type, seed):
    rng = np.random.default_rng(seed)
    n_datasets = 3
    data = rng.normal(scale=3.0, size=(n_datasets, 20, D))
    weights = rng.dirichlet(np.ones(K), size=n_datasets)
    means = rng.normal(scale=3.0, size=(n_datasets, K, D))
    precisions = np.stack([random_precisions(covariance_type, K, rng) for _ in range(n_datasets)])
    kwargs = dict(n_components=K, covariance_type=covariance_type, max_iter=5, tol=0.0)
    batched = fit_em(
        data, weights_init=weights, means_init=means, precisions_init=precisions, **kwargs
    )
    for b in range(n_datasets):
        alone = fit_em(
            data[b],
            weights_init=weights[b],
            means_init=means[b],
            precisions_init=precisions[b],
            **kwargs,
        )
        # The batched and the single fit are different compiled programs (vmapped or not):
        # equal up to float64 round-off, which five EM steps on 20 points may amplify.
        np.testing.assert_allclose(batched.lower_bounds[b], alone.lower_bounds, rtol=1e-9)
        np.testing.assert_allclose(batched.params["means"][b], alone.params["means"], rtol=1e-8)
        # A component shrunk onto one point has covariance ~ reg_covar, whose factor carries
        # round-off of order eps * var(x) / reg_covar: compare relative to the largest entry.
        scale = np.abs(alone.precisions_cholesky).max()
        np.testing.assert_allclose(
            batched.precisions_cholesky[b], alone.precisions_cholesky, rtol=1e-8, atol=1e-8 * scale
        )


def test_user_priors_reach_the_estimator():
    x = three_clusters()
    priors = {"variances": dist.InverseGamma(3.0, 2.0)}
    model = GaussianMixture(K, covariance_type="spherical", priors=priors, random_state=0)
    model.fit(x)
    assert model.method_ == "conjugate_map"
    assert set(model.params_) == {"weights", "means", "variances"}
    with pytest.raises(ValueError, match="Unknown prior site"):
        GaussianMixture(K, priors={"sigma": dist.HalfNormal(1.0)}).fit(x)


# ---------------------------------------------------------------------------------------
# Extreme points and overflow (issue 14): log space all the way, messages that name the cause


def two_unequal_clusters(dtype):
    """Two clusters with standard deviations 1 and 3, so that far out the broad one is the
    nearest in Mahalanobis distance (by a factor 9 in squared distance: no near ties)."""
    rng = np.random.default_rng(3)
    x = np.concatenate([rng.normal(-4.0, 1.0, (200, 2)), rng.normal(4.0, 3.0, (200, 2))])
    return x.astype(dtype)


def reference_weighted_log_prob(model, x):
    """float64 scipy densities of the model's own (possibly float32) parameters."""
    from scipy import stats

    factor = model.precisions_cholesky_.astype(np.float64)
    columns = []
    for k in range(model.n_components):
        if model.covariance_type == "full":
            covariance = np.linalg.inv(factor[k] @ factor[k].T)
        else:  # diag
            covariance = np.diag(1.0 / factor[k] ** 2)
        density = stats.multivariate_normal(model.means_[k].astype(np.float64), covariance)
        columns.append(np.log(model.weights_[k].astype(np.float64)) + density.logpdf(x))
    return np.stack(columns, axis=-1).reshape(len(x), -1)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("covariance_type", ["full", "diag"])
def test_extreme_points_keep_finite_responsibilities_and_scores(dtype, covariance_type):
    from scipy.special import logsumexp

    with jax.enable_x64(dtype == np.float64):
        model = GaussianMixture(2, covariance_type=covariance_type, random_state=0).fit(
            two_unequal_clusters(dtype)
        )
        # 1e3, 1e6 and 1e18 standard deviations out, in two directions
        x = np.concatenate([t * np.array([[1.0, 0.5], [-0.3, 1.0]]) for t in (1e3, 1e6, 1e18)])
        x = x.astype(dtype)
        proba = model.predict_proba(x)
        labels = model.predict(x)
        scores = model.score_samples(x)
    reference = reference_weighted_log_prob(model, x.astype(np.float64))
    eps = np.finfo(dtype).eps
    assert np.all(np.isfinite(proba))
    # a row sums K terms, each rounded once: K eps
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=2 * eps)
    np.testing.assert_array_equal(labels, np.argmax(reference, axis=1))
    assert np.all(np.isfinite(scores)) and np.all(scores < 0)
    # The score is dominated by -||U^T (x - mu)||^2 / 2: x - mu is rounded once (eps/2 per
    # entry), each of the D products and the sums of D terms add D eps relative, squaring
    # doubles it: 2 (D + 2) eps, and a factor 4 covers the conditioning of U (at most 3 here).
    rtol = 8 * (D + 2) * eps
    np.testing.assert_allclose(scores, logsumexp(reference, axis=1), rtol=rtol)


def test_a_score_beyond_float32_is_an_overflow_error_but_predictions_answer():
    with jax.enable_x64(False):
        model = GaussianMixture(2, random_state=0).fit(two_unequal_clusters(np.float32))
        x = np.array([[1e38, 5e37], [-1e38, 2e37]], np.float32)
        proba = model.predict_proba(x)
        labels = model.predict(x)
        with pytest.raises(ValueError) as error:
            model.score_samples(x)
    message = str(error.value)
    assert message.startswith("overflow in float32")
    assert "jax.config.update('jax_enable_x64', True)" in message and "rescale" in message
    assert "NaN or infinity" not in message
    # the limit: all the mass on the broad component, nearest in Mahalanobis distance
    broad = int(np.argmax(model.covariances_[:, 0, 0]))
    np.testing.assert_array_equal(proba, np.eye(2)[[broad, broad]])
    np.testing.assert_array_equal(labels, [broad, broad])


def test_float64_input_beyond_float32_is_an_overflow_not_bad_data():
    x = three_clusters()
    with jax.enable_x64(False), pytest.raises(ValueError) as error:
        GaussianMixture(2).fit(x * 1e300)
    message = str(error.value)
    assert message.startswith("overflow in float32")
    assert "even for float64 input" in message and "jax_enable_x64" in message
    assert "NaN" not in message and "infinity" not in message
    assert "float64 data instead" not in message


@pytest.mark.parametrize(
    "x64, dtype, advice",
    [
        (False, np.float64, "jax.config.update('jax_enable_x64', True)"),
        (True, np.float32, "pass float64 data"),
        (True, np.float64, "rescale the data"),
    ],
)
def test_sums_of_squares_beyond_the_dtype_are_an_overflow(x64, dtype, advice):
    scale = 1e20 if dtype == np.float32 or not x64 else 1e200
    with jax.enable_x64(x64), pytest.raises(ValueError) as error:
        GaussianMixture(2).fit((three_clusters() * scale).astype(dtype))
    message = str(error.value)
    assert message.startswith("overflow in float")
    assert advice in message
    assert "collapsed" not in message and "NaN" not in message


def test_nan_and_infinity_are_named_as_the_data():
    x = three_clusters()
    with pytest.raises(ValueError, match="contains NaN"):
        GaussianMixture(2).fit(np.where(x > 5, np.nan, x))
    with pytest.raises(ValueError, match="contains infinity"):
        GaussianMixture(2).fit(np.where(x > 5, np.inf, x))
    with pytest.raises(ValueError, match="sample_weight contains NaN"):
        GaussianMixture(2).fit(x, sample_weight=np.where(x[:, 0] > 5, np.nan, 1.0))
    with pytest.raises(ValueError, match="sample_weight contains infinity"):
        GaussianMixture(2).fit(x, sample_weight=np.where(x[:, 0] > 5, np.inf, 1.0))


# ---------------------------------------------------------------------------------------
# partial_fit after fit (issue 14): incremental EM from the fitted data's statistics


@pytest.fixture(scope="module")
def ten_thousand_rows():
    rng = np.random.default_rng(5)

    def draw(n):
        labels = rng.integers(2, size=n)
        return rng.normal(size=(n, 2)) + np.where(labels[:, None] == 1, 8.0, -8.0)

    return draw(10_000), draw(2_000)


@pytest.mark.parametrize("priors", [None, "default"])
def test_two_rows_after_fitting_ten_thousand_barely_move_the_model(ten_thousand_rows, priors):
    train, held_out = ten_thousand_rows
    model = GaussianMixture(2, random_state=0, priors=priors).fit(train)
    before = model.score(held_out)
    model.partial_fit(held_out[:1]).partial_fit(held_out[1:2])
    after = model.score(held_out)
    # two rows are 2e-4 of the data: their share moves the score by far less than 1 %
    assert abs(after - before) < 0.01 * abs(before)
    assert np.all(model.weights_ > 0.4) and model.weights_.sum() == pytest.approx(1.0)
    assert model.n_iter_ == 2


def test_partial_fit_after_fit_is_the_m_step_of_the_pooled_statistics(ten_thousand_rows):
    """One partial_fit after fit: the M-step of (N s_fit + n s_chunk) / (N + n), s_fit the
    fitted data's statistics under the fitted parameters, by hand in NumPy (float64)."""
    from scipy import stats
    from scipy.special import logsumexp

    train, held_out = ten_thousand_rows
    reg_covar = 1e-6
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        # tol=0 runs all iterations: EM of two clusters 16 sd apart is at its fixed point
        model = GaussianMixture(2, tol=0.0, max_iter=200, random_state=0).fit(train)

    def statistics(x, weights, means, covariances):
        log_prob = np.stack(
            [np.log(w) + stats.multivariate_normal(m, c).logpdf(x)
             for w, m, c in zip(weights, means, covariances, strict=True)], axis=1,
        )  # fmt: skip
        r = np.exp(log_prob - logsumexp(log_prob, axis=1, keepdims=True))
        return r.sum(0), r.T @ x, np.einsum("nk,ni,nj->kij", r, x, x)

    def m_step(counts, first, second):
        means = first / counts[:, None]
        covariances = second / counts[:, None, None] - np.einsum("ki,kj->kij", means, means)
        return counts / counts.sum(), means, covariances + reg_covar * np.eye(2)

    fitted = (model.weights_, model.means_, model.covariances_)
    pooled = statistics(train, *fitted)
    # precondition: the fitted model is a fixed point of EM, so s_fit is its own M-step's
    for got, want in zip(m_step(*pooled), fitted, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    for chunk in (held_out[:3], held_out[3:8]):
        current = (model.weights_, model.means_, model.covariances_)
        model.partial_fit(chunk)
        pooled = tuple(a + b for a, b in zip(pooled, statistics(chunk, *current), strict=True))
        expected = m_step(*pooled)
        # the fixed point holds to 1e-10, the rest is float64 rounding of 1e4-term sums
        np.testing.assert_allclose(model.weights_, expected[0], rtol=1e-9)
        np.testing.assert_allclose(model.means_, expected[1], rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(model.covariances_, expected[2], rtol=1e-9, atol=1e-9)


def test_fit_after_partial_fit_starts_afresh(ten_thousand_rows):
    train, held_out = ten_thousand_rows
    fresh = GaussianMixture(2, random_state=0).fit(train)
    model = GaussianMixture(2, random_state=0).partial_fit(held_out[:500])
    model.partial_fit(held_out[500:1000]).fit(train)
    assert model.n_iter_ == fresh.n_iter_
    np.testing.assert_array_equal(model.means_, fresh.means_)
    # the next chunk continues the fit, not the earlier online state
    model.partial_fit(held_out[:1])
    fresh.partial_fit(held_out[:1])
    np.testing.assert_array_equal(model.means_, fresh.means_)
    assert model.n_iter_ == 1
