"""GaussianMixture's init_params, n_init and verbose against scikit-learn's own code.

- ``init_params``: the start gaussmix draws is read off a ``max_iter=0`` fit; its labels
  (k-means partition, or the K chosen rows) are handed to scikit-learn's own
  ``_initialize`` (sklearn/mixture/_base.py), whose parameters and whole EM run must equal
  gaussmix's.
- ``n_init``: every restart's start, recorded as it is drawn, is run by scikit-learn; the
  fit gaussmix keeps is the one scikit-learn scores best (the initialization has no public
  API yet, so the test wraps em's private ``_initial_parameters``; issue 16 gives it one).
- ``verbose``: the lines gaussmix promises (scikit-learn's format without the timings),
  the numbers in them those of the fit's own lower bounds and of scikit-learn's run.
"""

import re
import warnings

import jax
import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning as SklearnConvergenceWarning
from sklearn.mixture import GaussianMixture as SklearnGaussianMixture

from gaussmix import GaussianMixture

#: The shapes of tests/gaussmix/test_gaussian_mixture.py (shared compiled programs).
K, D = 3, 2


def three_clusters(seed=0, n_per_cluster=40):
    rng = np.random.default_rng(seed)
    centres = np.array([[0.0, 0.0], [5.0, 5.0], [0.0, 6.0]])
    return np.concatenate([rng.normal(size=(n_per_cluster, D)) + c for c in centres])


class FromResponsibilities(SklearnGaussianMixture):
    """scikit-learn's GaussianMixture whose initialization is its own ``_initialize`` of
    given responsibilities (what its ``_initialize_parameters`` does after drawing them)."""

    def _initialize_parameters(self, X, random_state, xp=None):
        self._initialize(X, self.initial_responsibilities)


def labels_of_start(x, start, init_params):
    """(N, K) responsibilities that gaussmix's start is the M-step of: for "kmeans" the
    partition by the nearest start mean (Lloyd's fixed point), for "k-means++" and
    "random_from_data" one chosen row per component (its mean is that row)."""
    resp = np.zeros((x.shape[0], K))
    if init_params == "kmeans":
        nearest = np.argmin(((x[:, None] - start.means_[None]) ** 2).sum(-1), axis=1)
        resp[np.arange(x.shape[0]), nearest] = 1.0
    else:
        for k, mean in enumerate(start.means_):
            distances = np.abs(x - mean).max(axis=1)
            row = int(np.argmin(distances))
            # the mean is the row, up to rounding of the centring (x - c) + c: 1e-15
            assert distances[row] < 1e-13, (k, distances[row])
            resp[row, k] = 1.0
    return resp


@pytest.mark.parametrize("init_params", ["kmeans", "k-means++", "random_from_data"])
def test_initialization_is_scikit_learns_initialize_of_the_same_labels(init_params):
    """gaussmix's start (its own k-means / k-means++ / random rows) is scikit-learn's
    ``_initialize`` of the same labels, and EM from there is scikit-learn's EM.

    One difference, by design: for "k-means++" and "random_from_data" scikit-learn's
    ``_initialize`` leaves the weights at (1 + 10 eps) / N each (they sum to K / N, a
    scikit-learn quirk its first M-step removes); gaussmix starts from the normalized
    weights, 1/K. That shifts only the first lower bound, by log(sum of scikit-learn's
    weights) = log(K / N) (measured: 3.689 = log 40); every later one and every parameter
    agree. Tolerances (float64, 120 rows of magnitude <= 8, sqrt(N) eps ~ 2.4e-15
    relative): means and covariances 1e-13 absolute (measured 1e-14); precision factors
    of the one-row components (covariance reg_covar = 1e-6, so the centring's rounding of
    1e-15 moves them by 1e-15 / 1e-6 / 2 = 5e-10 relative; measured 4e-10): 5e-9 of the
    factor's largest entry (off the diagonal too: measured 8.9e-7 of 1e3); lower bounds
    1e-14 relative (measured 8.9e-16), the first one, -d^2 / (2 reg_covar) ~ -2e6 for
    one-row components, inherits their 5e-10 (measured 1.8e-10): 5e-9 relative."""
    x = three_clusters()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SklearnConvergenceWarning)
        start = GaussianMixture(K, init_params=init_params, max_iter=0, random_state=0).fit(x)
        resp = labels_of_start(x, start, init_params)
        initialized = FromResponsibilities(K, max_iter=0)
        initialized.initial_responsibilities = resp
        initialized.fit(x)
    np.testing.assert_allclose(
        start.weights_, initialized.weights_ / initialized.weights_.sum(), rtol=1e-14
    )
    np.testing.assert_allclose(start.means_, initialized.means_, rtol=0, atol=1e-13)
    np.testing.assert_allclose(start.covariances_, initialized.covariances_, rtol=0, atol=1e-13)
    np.testing.assert_allclose(
        start.precisions_cholesky_,
        initialized.precisions_cholesky_,
        rtol=0,
        atol=5e-9 * np.abs(initialized.precisions_cholesky_).max(),
    )
    ours = GaussianMixture(K, init_params=init_params, random_state=0).fit(x)
    reference = FromResponsibilities(K)
    reference.initial_responsibilities = resp
    reference.fit(x)
    assert ours.n_iter_ == reference.n_iter_ and ours.converged_ == reference.converged_
    shift = np.log(initialized.weights_.sum())  # 0 for "kmeans"
    np.testing.assert_allclose(ours.lower_bounds_[0] + shift, reference.lower_bounds_[0], rtol=5e-9)
    np.testing.assert_allclose(ours.lower_bounds_[1:], reference.lower_bounds_[1:], rtol=1e-14)
    for attribute in ("weights_", "means_", "covariances_", "precisions_cholesky_"):
        np.testing.assert_allclose(
            getattr(ours, attribute), getattr(reference, attribute), rtol=0, atol=1e-13,
            err_msg=attribute,
        )  # fmt: skip


def test_verbose_prints_scikit_learns_lines_with_the_fits_numbers(capsys):
    """verbose=2: "Initialization 0", every verbose_interval-th "  Iteration i\t ll change
    c" and "Initialization converged. lower bound b." (scikit-learn's lines without their
    time lapses). Each printed number is the fit's own lower bound (difference) to the 5
    printed decimals, and scikit-learn's run from the same start prints the same numbers
    (its lower bounds agree to 1e-10, far below the 5e-6 of the printing)."""
    x = three_clusters()
    start = {
        "weights_init": np.full(K, 1.0 / K),
        "means_init": x[[0, 1, 2]],
        "precisions_init": np.stack([np.eye(D)] * K),
    }
    options = {"tol": 1e-6, "verbose": 2, "verbose_interval": 2, **start}
    model = GaussianMixture(K, **options).fit(x)
    ours = capsys.readouterr().out.splitlines()
    SklearnGaussianMixture(K, **options).fit(x)
    theirs = capsys.readouterr().out.splitlines()
    bounds = model.lower_bounds_
    expected = ["Initialization 0"]
    expected += [
        f"  Iteration {i}\t ll change {bounds[i - 1] - bounds[i - 2]:.5f}"
        for i in range(2, model.n_iter_ + 1, 2)
    ]
    expected.append(f"Initialization converged. lower bound {model.lower_bound_:.5f}.")
    assert model.n_iter_ > 4 and ours == expected
    untimed = [re.sub(r"time lapse [0-9.]+s\t ?", "", line) for line in theirs]
    assert [re.sub(r"-?\d+\.\d{5}", "#", line) for line in untimed] == [
        re.sub(r"-?\d+\.\d{5}", "#", line) for line in ours
    ]
    numbers = [float(n) for line in ours for n in re.findall(r"-?\d+\.\d{5}", line)]
    reference = [float(n) for line in untimed for n in re.findall(r"-?\d+\.\d{5}", line)]
    np.testing.assert_allclose(numbers, reference, rtol=0, atol=1.0001e-5)
    GaussianMixture(K, **{**options, "verbose": 1}).fit(x)
    assert capsys.readouterr().out.splitlines() == [expected[0], expected[-1]]


def test_n_init_keeps_the_restart_scikit_learn_finds_best(monkeypatch, request):
    """``n_init`` restarts: each restart's start is recorded as it is drawn (a callback in
    the traced initialization), scikit-learn runs its EM from each of those starts, and
    gaussmix's fit must be the one scikit-learn scores best, as scikit-learn's own
    ``fit`` keeps the best of its restarts by lower bound.

    Four components on three clusters from random responsibilities end in two local
    optima (lower bounds -3.878 and -3.892 per point), so which restart is kept matters.
    gaussmix and scikit-learn run the same EM from the same start to tol 1e-10 (float64);
    the kept fit matches its scikit-learn twin to 1.4e-14 (measured; rounding compounded
    over the iterations), the other restarts differ by O(1) (another optimum or another
    labelling): tolerance 1e-12.
    """
    from gaussmix.inference.em import initialization

    starts = []

    def record(weights, means, factors):
        starts.append((np.asarray(weights), np.asarray(means), np.asarray(factors)))

    original = initialization.initial_parameters

    def recording(*args, **kwargs):
        parameters = original(*args, **kwargs)
        jax.debug.callback(
            record, parameters.weights, parameters.means, parameters.precisions_cholesky
        )
        return parameters

    monkeypatch.setattr(initialization, "initial_parameters", recording)
    # Fresh compiled programs, so that the recording initialization is traced (and no
    # program traced with it outlives this test).
    jax.clear_caches()
    request.addfinalizer(jax.clear_caches)
    x = three_clusters(seed=3)
    options = {"covariance_type": "full", "tol": 1e-10, "max_iter": 500}
    fitted = GaussianMixture(4, n_init=5, init_params="random", random_state=0, **options).fit(x)
    assert len(starts) == 5
    references = []
    for weights, means, factors in starts:
        precisions = factors @ np.swapaxes(factors, -1, -2)  # scikit-learn's layout: U U^T
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SklearnConvergenceWarning)
            references.append(
                SklearnGaussianMixture(
                    4, weights_init=weights, means_init=means, precisions_init=precisions,
                    **options,
                ).fit(x)
            )  # fmt: skip
    bounds = np.array([reference.lower_bound_ for reference in references])
    # The restart gaussmix kept: the reference from the same start with the same answer.
    kept = [
        index
        for index, reference in enumerate(references)
        if all(
            np.allclose(getattr(fitted, name), getattr(reference, name), rtol=0, atol=1e-12)
            for name in ("weights_", "means_", "covariances_")
        )
    ]
    assert kept, "gaussmix's fit is none of scikit-learn's fits from the same starts"
    # It is scikit-learn's best: restarts that reach the same optimum (in another
    # labelling) stop within EM's tolerance of each other (tol / (1 - contraction) ~
    # 1e-9 here), so a tie is anything within 1e-8.
    assert bounds[kept[0]] >= bounds.max() - 1e-8
    assert fitted.lower_bound_ == pytest.approx(bounds[kept[0]], rel=1e-12)
    # and choosing matters: some restart ends at a worse optimum.
    assert bounds.min() < bounds.max() - 1e-3
