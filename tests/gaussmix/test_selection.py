"""select_components: BIC / AIC tables and the chosen number of components."""

import warnings

import numpy as np
import pytest
from sklearn.mixture import GaussianMixture as SklearnGaussianMixture

from gaussmix import GaussianMixture, select_components
from gaussmix.inference.em import ConvergenceWarning

CANDIDATES = range(1, 5)


def three_blobs(seed=0):
    rng = np.random.default_rng(seed)
    centres = np.array([[0.0, 0.0], [6.0, 0.0], [0.0, 6.0]])
    # 120 points in 2-D: the shapes of the estimator tests (shared compiled programs)
    return np.concatenate([rng.normal(size=(40, 2)) + c for c in centres])


@pytest.mark.parametrize("criterion", ["bic", "aic"])
def test_table_is_scikit_learns_criterion_from_the_same_start(criterion):
    """Each row against scikit-learn's own GaussianMixture, started where gaussmix starts
    (its initialization read off a ``max_iter=0`` fit with the same random_state) and run
    with the same tol and max_iter: the same EM, so only float64 rounding separates them:
    sums of N = 120 log densities, sqrt(N) eps = 2.4e-15 relative (measured 2.2e-16);
    1e-14 relative."""
    x = three_blobs()
    table, best = select_components(x, CANDIDATES, criterion=criterion, seed=0)
    assert isinstance(best, GaussianMixture) and best.n_components == 3
    assert table.criterion_name == criterion
    np.testing.assert_array_equal(table.n_components, list(CANDIDATES))
    assert table.converged.all()
    for k, value, log_likelihood in zip(
        table.n_components, table.criterion, table.log_likelihood, strict=True
    ):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)  # max_iter=0 warns nothing
            start = GaussianMixture(int(k), max_iter=0, random_state=0).fit(x)
        reference = SklearnGaussianMixture(
            int(k),
            weights_init=start.weights_,
            means_init=start.means_,
            precisions_init=start.precisions_,
        ).fit(x)
        expected = reference.bic(x) if criterion == "bic" else reference.aic(x)
        np.testing.assert_allclose(value, expected, rtol=1e-14)
        np.testing.assert_allclose(log_likelihood, reference.score(x) * len(x), rtol=1e-14)
    assert table.n_components[np.argmin(table.criterion)] == best.n_components


def test_aic_penalizes_less_than_bic():
    x = three_blobs()
    bic, _ = select_components(x, CANDIDATES, seed=0)
    aic, _ = select_components(x, CANDIDATES, criterion="aic", seed=0)
    np.testing.assert_allclose(aic.log_likelihood, bic.log_likelihood)
    parameters = (bic.criterion - aic.criterion) / (np.log(len(x)) - 2.0)
    np.testing.assert_allclose(parameters, [5, 11, 17, 23])  # 6K - 1 for full, D = 2


def test_sample_weights_enter_the_criterion():
    x = three_blobs()
    weight = np.random.default_rng(3).integers(0, 3, len(x)).astype(float)
    table, best = select_components(x, CANDIDATES, sample_weight=weight, seed=0)
    per_point = best.score_samples(x)
    index = int(np.flatnonzero(table.n_components == best.n_components)[0])
    np.testing.assert_allclose(table.log_likelihood[index], np.sum(weight * per_point))
    expected = -2 * np.sum(weight * per_point) + best._n_parameters() * np.log(weight.sum())
    np.testing.assert_allclose(table.criterion[index], expected)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"criterion": "waic"}, "Unknown criterion 'waic'"),
        ({"n_components": [0, 1]}, "int >= 1"),
        ({"n_components": []}, "empty"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        select_components(three_blobs(), **kwargs)


def test_random_state_is_the_deprecated_spelling_of_seed():
    """``random_state`` (the estimator's name) still works for one release: a
    FutureWarning naming ``seed``, and the very same table (same seed, same programs:
    bit for bit)."""
    x = three_blobs()
    table, best = select_components(x, CANDIDATES, seed=0)
    with pytest.warns(FutureWarning, match="'random_state' is deprecated.*use 'seed'"):
        old_table, old_best = select_components(x, CANDIDATES, random_state=0)
    np.testing.assert_array_equal(old_table.criterion, table.criterion)
    np.testing.assert_array_equal(old_best.means_, best.means_)
    with pytest.raises(ValueError, match="got both 'seed'=1"):
        select_components(x, CANDIDATES, seed=1, random_state=0)
