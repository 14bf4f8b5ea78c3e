"""GaussianMixture with mclust's covariance models: aliases, BIC, what EM alone fits."""

import json
from pathlib import Path

import jax
import numpy as np
import pytest

from gaussmix import GaussianMixture
from gaussmix.inference.em import n_parameters
from gaussmix.models.priors import COVARIANCE_LAYOUTS, MCLUST_MODELS

jax.config.update("jax_enable_x64", True)

ALIASES = {"VVV": "full", "EEE": "tied", "VVI": "diag", "VII": "spherical"}
MCLUST_IRIS = Path(__file__).parents[1] / "references" / "mclust" / "iris.json"
FITTED = ("weights_", "means_", "covariances_", "precisions_cholesky_", "precisions_")
#: The fits' options and shapes (K = 2 on 150 x 4 float64 rows) are those of the iris test
#: below: each model's EM program is compiled once for the module, not once per test.
K = 2
EM_OPTIONS = {"n_init": 5, "tol": 1e-8, "max_iter": 1000, "random_state": 0}


def data(seed=0, n=50):
    """Three clusters of ``n`` rows in 4-D, linearly mixed (iris's shape at n = 50)."""
    rng = np.random.default_rng(seed)
    return np.concatenate(
        [rng.normal(size=(n, 4)) @ rng.normal(size=(4, 4)) + 3.0 * k for k in range(3)]
    )


@pytest.mark.parametrize("alias", list(ALIASES))
def test_an_alias_is_its_classic_type_to_the_last_bit(alias):
    x = data()
    a = GaussianMixture(K, covariance_type=alias, **EM_OPTIONS).fit(x)
    b = GaussianMixture(K, covariance_type=ALIASES[alias], **EM_OPTIONS).fit(x)
    for name in FITTED:
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    assert a.lower_bound_ == b.lower_bound_
    assert a.bic(x) == b.bic(x)
    np.testing.assert_array_equal(a.predict_proba(x), b.predict_proba(x))


@pytest.mark.parametrize("name", ["EII", "VEI", "EVE", "VEV"])
def test_a_constrained_model_through_the_estimator(name):
    x = data(1)
    gm = GaussianMixture(K, covariance_type=name, **EM_OPTIONS)
    labels = gm.fit_predict(x)
    np.testing.assert_array_equal(labels, gm.predict(x))
    n, d = x.shape
    layout = COVARIANCE_LAYOUTS[name]
    assert gm.covariances_.shape == {"spherical": (K,), "diag": (K, d), "full": (K, d, d)}[layout]
    # bic: -2 log L + p log n with mclust's count of the model's letters (I: none,
    # E: one for all components, V: one per component), K d means and K - 1 weights
    volume, shape, orientation = name
    per = {"I": 0, "E": 1, "V": K}
    p = per[volume] + per[shape] * (d - 1) + per[orientation] * d * (d - 1) // 2 + K * d + K - 1
    log_likelihood = gm.score(x) * n
    np.testing.assert_allclose(gm.bic(x), -2 * log_likelihood + p * np.log(n), rtol=1e-12)
    drawn, _ = gm.sample(50)
    assert drawn.shape == (50, d) and np.all(np.isfinite(drawn))
    map_fit = GaussianMixture(K, covariance_type=name, priors="default", random_state=0).fit(x)
    assert map_fit.method_ == "conjugate_map" and np.all(np.isfinite(map_fit.covariances_))


def separated(seed=0, n=75):
    """Two clusters in 2-D, elongated along different axes (150 points)."""
    rng = np.random.default_rng(seed)
    angle = 0.8
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    first = rng.normal(size=(n, 2)) @ np.diag([2.0, 0.5]) + [-4.0, 0.0]
    second = rng.normal(size=(n, 2)) @ np.diag([2.6, 0.65]) @ rotation.T + [4.0, 1.0]
    return np.concatenate([first, second])


@pytest.mark.slow
@pytest.mark.parametrize("name", ["VEI", "EVE", "VEV", "EEV"])
def test_sample_posterior_of_a_constrained_model_is_near_its_em_fit(name):
    """NUTS on the program's constrained model, started at and relabeled to the EM fit:
    posterior means of the means and covariances within 5 posterior standard deviations
    of EM's (plus the prior's pull, small at N = 150), R-hat < 1.05 after relabeling,
    (almost) no divergences, and the model's constraints on every draw."""
    from arviz_stats import rhat

    x = separated()
    gm = GaussianMixture(2, covariance_type=name, random_state=0).fit(x)
    tree = gm.sample_posterior(
        x, num_warmup=200, num_samples=200, num_chains=2, random_state=1, progress_bar=False
    )
    posterior = tree.posterior
    site = "variances" if COVARIANCE_LAYOUTS[name] == "diag" else "covariances"
    for attribute, values in (("means_", posterior["means"]), ("covariances_", posterior[site])):
        draws = values.values.reshape(-1, *values.shape[2:])
        error = np.abs(draws.mean(axis=0) - getattr(gm, attribute))
        assert np.all(error < 5 * draws.std(axis=0) + 0.1), (attribute, error, draws.std(axis=0))
        assert float(rhat(values).max()) < 1.05, (attribute, float(rhat(values).max()))
    assert int(tree.sample_stats["diverging"].sum()) <= 4  # of 400 transitions
    covariances = posterior[site].values.reshape(-1, *posterior[site].shape[2:])
    if site == "variances":
        covariances = covariances[..., None] * np.eye(2)
    log_volumes = np.linalg.slogdet(covariances)[1] / 2
    eigenvalues = np.linalg.eigvalsh(covariances) / np.exp(log_volumes)[..., None]
    volume, shape, orientation = name
    if volume == "E":
        np.testing.assert_allclose(log_volumes[:, 0], log_volumes[:, 1], atol=1e-9)
    if shape == "E":
        np.testing.assert_allclose(eigenvalues[:, 0], eigenvalues[:, 1], rtol=1e-8)
    if orientation == "E":  # one set of axes: the two matrices commute
        a, b = covariances[:, 0], covariances[:, 1]
        np.testing.assert_allclose(a @ b, b @ a, atol=1e-9 * np.abs(a @ b).max())
    assert tree["mixture"]["responsibilities"].shape == (150, 2)


def test_an_unknown_name_is_refused_with_the_list():
    with pytest.raises(ValueError, match=r"must be a str among.*VEV"):
        GaussianMixture(2, covariance_type="VEW").fit(data())


@pytest.mark.skipif(not MCLUST_IRIS.exists(), reason="mclust's iris references are absent")
def test_iris_bic_of_the_14_models_is_mclusts_where_the_optimum_is_shared():
    """mclust 6.0's BIC on iris (K = 2, scripts/mclust_reference.R): the same numbers
    where both reach the same optimum; never an optimum more than 1 below mclust's
    (gaussmix's starts are k-means restarts, mclust's its hierarchical clustering)."""
    reference = json.loads(MCLUST_IRIS.read_text())
    x = np.asarray(reference["data"], float)
    d = x.shape[1]
    assert reference["models"] == list(MCLUST_MODELS)
    row = reference["G"].index(K)
    equal = 0
    for j, name in enumerate(MCLUST_MODELS):
        assert n_parameters(name, K, d) == reference["n_parameters"][row][j], name
        gm = GaussianMixture(K, covariance_type=name, **EM_OPTIONS).fit(x)
        ours, theirs = -gm.bic(x), reference["bic"][row][j]
        assert ours >= theirs - 1.0, (name, ours, theirs)
        equal += abs(ours - theirs) < 0.01
    assert equal >= 12, equal
