"""GaussianMixture(nan_policy=...) on data with missing entries (issue 19, item 1)."""

import numpy as np
import pytest
from scipy.stats import multivariate_normal
from sklearn.exceptions import ConvergenceWarning

from gaussmix import GaussianMixture

TRUE_WEIGHTS = np.array([0.3, 0.7])
TRUE_MEANS = np.array([[0.0, 0.0, 0.0, 0.0], [4.0, -3.0, 2.0, 5.0]])
TRUE_COVARIANCES = np.array(
    [
        [[1.0, 0.6, 0.0, 0.2], [0.6, 1.5, 0.3, 0.0], [0.0, 0.3, 0.8, 0.1], [0.2, 0.0, 0.1, 1.2]],
        [
            [2.0, -0.5, 0.4, 0.0],
            [-0.5, 1.0, 0.0, 0.2],
            [0.4, 0.0, 1.0, -0.3],
            [0.0, 0.2, -0.3, 0.7],
        ],
    ]
)


def _draw(rng, n):
    labels = rng.choice(2, size=n, p=TRUE_WEIGHTS)
    x = np.empty((n, 4))
    for k in range(2):
        rows = labels == k
        x[rows] = rng.multivariate_normal(TRUE_MEANS[k], TRUE_COVARIANCES[k], rows.sum())
    return x


def _punch(rng, x, fraction):
    """A ``fraction`` of the entries NaN, completely at random (a row keeps one)."""
    x = x.copy()
    holes = rng.random(x.shape) < fraction
    holes[np.arange(x.shape[0]), rng.integers(0, x.shape[1], x.shape[0])] = False
    x[holes] = np.nan
    return x


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(11)
    complete = _draw(rng, 4000)
    return complete, _punch(rng, complete, 0.35)


@pytest.fixture(scope="module")
def fitted(data):
    _, holed = data
    return GaussianMixture(2, nan_policy="marginalize", random_state=0, tol=1e-8).fit(holed)


def _sorted(gm):
    order = np.argsort(gm.means_[:, 0])
    return gm.weights_[order], gm.means_[order], gm.covariances_[order]


def test_recovers_the_truth_with_a_quarter_missing(data, fitted):
    """About 26 % of the entries missing at random: the fit finds the truth within a few
    standard errors, about as well as the complete-data fit."""
    complete, holed = data
    assert 0.24 < np.isnan(holed).mean() < 0.29  # 0.35 of the entries but one per row
    weights, means, covariances = _sorted(fitted)
    np.testing.assert_allclose(weights, TRUE_WEIGHTS, atol=0.03)
    np.testing.assert_allclose(means, TRUE_MEANS, atol=0.12)
    np.testing.assert_allclose(covariances, TRUE_COVARIANCES, atol=0.2)
    _, full_means, _ = _sorted(GaussianMixture(2, random_state=0).fit(complete))
    assert np.max(np.abs(means - TRUE_MEANS)) < 3 * np.max(np.abs(full_means - TRUE_MEANS)) + 0.05
    # a naive fit on mean-imputed data is visibly worse: the imputed rows shrink variances
    imputed = np.where(np.isnan(holed), np.nanmean(holed, axis=0), holed)
    _, _, naive_covariances = _sorted(GaussianMixture(2, random_state=0).fit(imputed))
    naive_error = np.max(np.abs(naive_covariances - TRUE_COVARIANCES))
    assert np.max(np.abs(covariances - TRUE_COVARIANCES)) < naive_error / 2


def test_scores_are_scipy_marginal_densities(data, fitted):
    _, holed = data
    rows = holed[:60]
    log_prob = np.array(
        [
            [
                np.log(w) + multivariate_normal(m[o], c[np.ix_(o, o)]).logpdf(row[o])
                for w, m, c in zip(fitted.weights_, fitted.means_, fitted.covariances_, strict=True)
            ]
            for row in rows
            for o in [~np.isnan(row)]
        ]
    )
    expected = np.logaddexp.reduce(log_prob, axis=1)
    np.testing.assert_allclose(fitted.score_samples(rows), expected, rtol=0, atol=1e-8)
    np.testing.assert_allclose(
        fitted.predict_proba(rows), np.exp(log_prob - expected[:, None]), atol=1e-10
    )
    np.testing.assert_array_equal(fitted.predict(rows), np.argmax(log_prob, axis=1))
    assert fitted.score(rows) == pytest.approx(expected.mean(), abs=1e-10)
    p = fitted._n_parameters()
    assert fitted.bic(rows) == pytest.approx(-2 * expected.sum() + p * np.log(60), abs=1e-6)
    assert fitted.aic(rows) == pytest.approx(-2 * expected.sum() + 2 * p, abs=1e-6)


def test_complete_rows_score_as_without_missing_entries(data, fitted):
    """A complete row's answers do not depend on the rows beside it."""
    complete, holed = data
    mixed = np.vstack([complete[:20], holed[:20]])
    np.testing.assert_array_equal(
        fitted.score_samples(mixed)[:20], fitted.score_samples(complete[:20])
    )
    np.testing.assert_array_equal(
        fitted.predict_proba(mixed)[:20], fitted.predict_proba(complete[:20])
    )


def test_fit_predict_equals_fit_then_predict(data):
    _, holed = data
    gm = GaussianMixture(2, nan_policy="marginalize", random_state=0)
    labels = gm.fit_predict(holed[:500])
    np.testing.assert_array_equal(labels, gm.predict(holed[:500]))


def test_lower_bound_is_the_observed_likelihood_and_increases(data, fitted):
    _, holed = data
    assert np.all(np.diff(fitted.lower_bounds_) >= -1e-12)
    # the last bound is of the parameters entering the last step (tol 1e-8 apart)
    assert fitted.score(holed) == pytest.approx(fitted.lower_bound_, abs=1e-7)


def test_complete_data_gives_the_same_fit_under_every_policy(data):
    complete, _ = data
    fits = [
        GaussianMixture(2, covariance_type="diag", nan_policy=policy, random_state=0).fit(
            complete[:400]
        )
        for policy in ("raise", "marginalize", "omit")
    ]
    for other in fits[1:]:
        np.testing.assert_array_equal(other.means_, fits[0].means_)
        np.testing.assert_array_equal(other.covariances_, fits[0].covariances_)
        assert other.lower_bound_ == fits[0].lower_bound_


def test_omit_drops_rows_and_their_weights(data):
    _, holed = data
    rows = holed[:300]
    weight = np.random.default_rng(1).uniform(0.5, 2.0, 300)
    keep = ~np.isnan(rows).any(axis=1)
    omitted = GaussianMixture(2, nan_policy="omit", random_state=0).fit(rows, sample_weight=weight)
    direct = GaussianMixture(2, random_state=0).fit(rows[keep], sample_weight=weight[keep])
    np.testing.assert_array_equal(omitted.means_, direct.means_)
    np.testing.assert_array_equal(omitted.covariances_, direct.covariances_)
    np.testing.assert_array_equal(omitted.predict(rows[keep]), direct.predict(rows[keep]))
    with pytest.raises(ValueError, match=r"nan_policy='omit'.*nan_policy='marginalize'"):
        omitted.predict(rows)
    with pytest.raises(ValueError, match="nan_policy='marginalize'"):
        omitted.score_samples(rows)
    # fit_predict is fit(X).predict(X): it labels every row, so it refuses rows with NaN
    with pytest.raises(ValueError, match="nan_policy='omit'"):
        GaussianMixture(2, nan_policy="omit", random_state=0).fit_predict(rows)
    again = GaussianMixture(2, nan_policy="omit", random_state=0)
    np.testing.assert_array_equal(
        again.fit_predict(rows[keep], sample_weight=weight[keep]), direct.predict(rows[keep])
    )


def test_raise_refuses_nan_naming_the_policies(data):
    _, holed = data
    with pytest.raises(ValueError, match="Input X contains NaN") as error:
        GaussianMixture(2).fit(holed[:50])
    assert "nan_policy='marginalize'" in str(error.value)
    assert "nan_policy='omit'" in str(error.value)
    gm = GaussianMixture(2, random_state=0).fit(np.nan_to_num(holed[:50]))
    for method in (gm.predict, gm.predict_proba, gm.score_samples, gm.score, gm.bic):
        with pytest.raises(ValueError, match="Input X contains NaN"):
            method(holed[:50])


def test_steps_without_missing_entries_say_so_not_to_pass_the_policy(data, fitted):
    """select_components does not take NaN yet: under a policy that allows NaN the error
    says which steps do, not "pass nan_policy='marginalize'" (sample_posterior takes NaN:
    tests/gaussmix/test_imperfect_posteriors.py)."""
    import gaussmix

    _, holed = data
    for call in (
        lambda: gaussmix.select_components(
            holed[:60], n_components=[1, 2], covariance_type="diag", nan_policy="marginalize"
        ),
    ):
        with pytest.raises(ValueError, match="does not take NaN yet") as error:
            call()
        assert "pass nan_policy" not in str(error.value)


def test_hostile_input_is_refused_with_the_fix(data):
    _, holed = data
    rows = holed[:100].copy()
    gm = GaussianMixture(2, nan_policy="marginalize", random_state=0)
    with pytest.raises(ValueError, match="column 2 of X holds no observed entry"):
        gm.fit(np.where(np.arange(4) == 2, np.nan, rows))
    all_nan = rows.copy()
    all_nan[7] = np.nan
    with pytest.raises(ValueError, match=r"1 row\(s\) of X have no observed entry.*row 7"):
        gm.fit(all_nan)
    infinite = rows.copy()
    infinite[3, 0] = np.inf
    with pytest.raises(ValueError, match="infinity"):
        gm.fit(infinite)
    gm.fit(rows)
    with pytest.raises(ValueError, match=r"no observed entry.*row 7"):
        gm.predict(all_nan)
    with pytest.raises(ValueError, match="infinity"):
        gm.score_samples(infinite)
    with pytest.raises(ValueError, match="'nan_policy' parameter of GaussianMixture"):
        GaussianMixture(2, nan_policy="drop").fit(rows)
    weight = np.ones(100)
    weight[~np.isnan(rows).any(axis=1)] = 0
    with pytest.raises(ValueError, match="sample_weight sums to zero over the rows"):
        GaussianMixture(2, nan_policy="omit").fit(rows, sample_weight=weight)


def test_one_observed_coordinate_per_row():
    """Every row observes one coordinate: the means and variances are identified (the
    correlations are not, and stay at their start), and the fit is finite."""
    rng = np.random.default_rng(12)
    x = rng.normal([1.0, -2.0, 3.0], [1.0, 2.0, 0.5], (900, 3))
    keep = rng.integers(0, 3, 900)
    holed = np.where(np.arange(3) == keep[:, None], x, np.nan)
    gm = GaussianMixture(1, covariance_type="diag", nan_policy="marginalize").fit(holed)
    np.testing.assert_allclose(gm.means_[0], [1.0, -2.0, 3.0], atol=0.25)
    np.testing.assert_allclose(np.sqrt(gm.covariances_[0]), [1.0, 2.0, 0.5], rtol=0.15)
    full = GaussianMixture(1, nan_policy="marginalize").fit(holed)
    assert np.all(np.isfinite(full.covariances_)) and np.isfinite(full.lower_bound_)
    assert np.all(np.isfinite(full.score_samples(holed)))


def test_float32_data_fits_in_float32(data):
    _, holed = data
    rows = holed[:1000]
    single = GaussianMixture(2, nan_policy="marginalize", random_state=0).fit(
        rows.astype(np.float32)
    )
    double = GaussianMixture(2, nan_policy="marginalize", random_state=0).fit(rows)
    assert single.means_.dtype == np.float32
    assert single.score_samples(rows.astype(np.float32)).dtype == np.float32
    np.testing.assert_allclose(_sorted(single)[1], _sorted(double)[1], atol=2e-3)
    assert single.lower_bound_ == pytest.approx(double.lower_bound_, abs=1e-3)


def test_weights_with_missing_entries_equal_repeated_rows(data):
    _, holed = data
    rows = holed[:200]
    weight = np.random.default_rng(2).integers(1, 4, 200)
    # the same number of iterations for both (tol 0): EM with a third of the entries
    # missing converges slowly, and a tol reached one iteration apart (the lower bounds
    # differ in the last bits) would move the means by 1e-6
    # the whole start given (the precisions too: drawn from a k-means of other rows, they
    # would differ between the two fits)
    start = {
        "means_init": TRUE_MEANS,
        "weights_init": TRUE_WEIGHTS,
        "precisions_init": np.linalg.inv(TRUE_COVARIANCES),
        "tol": 0.0,
        "max_iter": 60,
    }
    with pytest.warns(ConvergenceWarning):
        weighted = GaussianMixture(2, nan_policy="marginalize", **start).fit(
            rows, sample_weight=weight
        )
    with pytest.warns(ConvergenceWarning):
        repeated = GaussianMixture(2, nan_policy="marginalize", **start).fit(
            np.repeat(rows, weight, axis=0)
        )
    assert weighted.n_iter_ == repeated.n_iter_ == 60
    np.testing.assert_allclose(weighted.means_, repeated.means_, rtol=1e-8, atol=1e-9)
    np.testing.assert_allclose(weighted.covariances_, repeated.covariances_, rtol=1e-8, atol=1e-9)


@pytest.mark.parametrize("covariance_type", ["tied", "spherical", "VEI", "EVV"])
def test_other_covariance_types_score_scipys_marginals(data, covariance_type):
    _, holed = data
    rows = holed[:600]
    gm = GaussianMixture(
        2, covariance_type=covariance_type, nan_policy="marginalize", random_state=0
    )
    gm.fit(rows)
    layout = {"tied": "tied", "spherical": "spherical", "VEI": "diag", "EVV": "full"}[
        covariance_type
    ]
    covariances = gm.covariances_
    if layout == "tied":
        covariances = np.broadcast_to(covariances, (2, 4, 4))
    elif layout == "diag":
        covariances = np.stack([np.diag(v) for v in covariances])
    elif layout == "spherical":
        covariances = covariances[:, None, None] * np.eye(4)
    expected = np.array(
        [
            np.logaddexp.reduce(
                [
                    np.log(w) + multivariate_normal(m[o], c[np.ix_(o, o)]).logpdf(row[o])
                    for w, m, c in zip(gm.weights_, gm.means_, covariances, strict=True)
                ]
            )
            for row in rows[:40]
            for o in [~np.isnan(row)]
        ]
    )
    np.testing.assert_allclose(gm.score_samples(rows[:40]), expected, atol=1e-8, rtol=0)
    assert np.all(np.diff(gm.lower_bounds_) >= -1e-10)


def test_get_params_and_clone_keep_the_policy():
    gm = GaussianMixture(2, nan_policy="omit")
    assert gm.get_params()["nan_policy"] == "omit"
    assert "nan_policy='omit'" in repr(gm)
    assert gm.set_params(nan_policy="marginalize").nan_policy == "marginalize"


def test_chunks_give_the_in_memory_fit(data, tmp_path):
    """Data read by chunks (an in-memory array with chunk_size, a .npy file) with NaN:
    exact EM over chunks, the in-memory answer to rounding."""
    _, holed = data
    rows = holed[:1500]
    in_memory = GaussianMixture(2, nan_policy="marginalize", random_state=0).fit(rows)
    path = tmp_path / "holed.npy"
    np.save(path, rows)
    for source in (rows, path):
        chunked = GaussianMixture(2, nan_policy="marginalize", random_state=0, chunk_size=400)
        chunked.fit(source)
        np.testing.assert_allclose(chunked.means_, in_memory.means_, rtol=0, atol=1e-10)
        np.testing.assert_allclose(chunked.covariances_, in_memory.covariances_, atol=1e-10)
        assert chunked.lower_bound_ == pytest.approx(in_memory.lower_bound_, abs=1e-12)
    chunked = GaussianMixture(2, nan_policy="marginalize", random_state=0, chunk_size=400).fit(path)
    np.testing.assert_allclose(
        chunked.score_samples(path), in_memory.score_samples(rows), atol=1e-9
    )
    omitted = GaussianMixture(2, nan_policy="omit", random_state=0, chunk_size=400).fit(rows)
    direct = GaussianMixture(2, random_state=0).fit(rows[~np.isnan(rows).any(axis=1)])
    np.testing.assert_allclose(omitted.means_, direct.means_, atol=1e-10)
    with pytest.raises(ValueError, match=r"chunk 0 contains NaN(.|\n)*nan_policy='marginalize'"):
        GaussianMixture(2, random_state=0, chunk_size=400).fit(rows)


def test_partial_fit_with_missing_entries(data):
    """Online EM over chunks with NaN ends near the batch fit; after a fit (maximum
    likelihood or MAP) partial_fit continues from it; "omit" drops rows per chunk."""
    _, holed = data
    batch = GaussianMixture(2, nan_policy="marginalize", random_state=0).fit(holed)
    online = GaussianMixture(2, nan_policy="marginalize", random_state=0)
    for start in range(0, 4000, 400):
        online.partial_fit(holed[start : start + 400])
    np.testing.assert_allclose(_sorted(online)[1], _sorted(batch)[1], atol=0.15)
    assert online.n_iter_ == 9
    for priors in (None, "default"):
        gm = GaussianMixture(2, nan_policy="marginalize", random_state=0, priors=priors)
        gm.fit(holed[:2000])
        before = gm.means_.copy()
        gm.partial_fit(holed[2000:2100])
        assert 0 < np.max(np.abs(gm.means_ - before)) < 0.1  # a few rows move it a little
    omitted = GaussianMixture(2, nan_policy="omit", random_state=0).partial_fit(holed[:400])
    keep = ~np.isnan(holed[:400]).any(axis=1)
    direct = GaussianMixture(2, random_state=0).partial_fit(holed[:400][keep])
    np.testing.assert_array_equal(omitted.means_, direct.means_)
    with pytest.raises(ValueError, match=r"Input X contains NaN(.|\n)*nan_policy='marginalize'"):
        GaussianMixture(2, random_state=0).partial_fit(holed[:400])
