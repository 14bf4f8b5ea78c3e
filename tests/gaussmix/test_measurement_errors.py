"""GaussianMixture(...).fit(X, measurement_covariances=S): extreme deconvolution through the
estimator (issue 19, item 2): truth recovery, scores and predictions against scipy,
criteria, fit_predict, nan_policy with S, devices, refused execution modes and input."""

import itertools

import numpy as np
import pytest
from scipy.stats import multivariate_normal

from gaussmix import GaussianMixture

N_ROWS = 200


def _noisy(rng, n, spread=0.6):
    labels = rng.integers(0, 2, n)
    x = np.array([[0.0, 0.0], [4.0, 2.0]])[labels] + rng.normal(size=(n, 2)) @ np.array(
        [[1.0, 0.3], [0.0, 0.7]]
    )
    factor = rng.normal(size=(n, 2, 2)) * spread
    noise = factor @ np.swapaxes(factor, -1, -2)
    errors = np.einsum("nij,nj->ni", np.linalg.cholesky(noise), rng.normal(size=(n, 2)))
    return x + errors, noise


def _scipy_log_prob(gm, X, noise):
    """(n, K) log pi_k + log N(x_n | mu_k, Sigma_k + S_n) by scipy (full covariances)."""
    return np.array(
        [
            [
                np.log(gm.weights_[k])
                + multivariate_normal(gm.means_[k], gm.covariances_[k] + s).logpdf(row)
                for k in range(gm.n_components)
            ]
            for row, s in zip(X, noise, strict=True)
        ]
    )


@pytest.fixture(scope="module")
def fitted():
    rng = np.random.default_rng(0)
    X, noise = _noisy(rng, N_ROWS)
    gm = GaussianMixture(2, random_state=0, tol=1e-6).fit(X, measurement_covariances=noise)
    return gm, X, noise


def test_recovers_the_underlying_spherical_covariance():
    """Spherical truth (variance 1) blurred by heteroscedastic s_n^2 I: the deconvolved
    variance is within 4 standard errors of the truth (Fisher information of the known
    blur), the naive fit's far above it."""
    rng = np.random.default_rng(1)
    n = 2000
    labels = rng.integers(0, 2, n)
    means = np.array([[0.0, 0.0], [8.0, 0.0]])
    blur = rng.uniform(0.5, 3.0, n)
    X = means[labels] + rng.normal(size=(n, 2)) + rng.normal(size=(n, 2)) * np.sqrt(blur)[:, None]
    noise = np.repeat(blur[:, None], 2, axis=1)  # (N, D) variances
    gm = GaussianMixture(2, covariance_type="spherical", random_state=0, tol=1e-8)
    gm.fit(X, measurement_covariances=noise)
    order = np.argsort(gm.means_[:, 0])
    for k, index in enumerate(order):
        rows = labels == k
        information = 2 * np.sum(0.5 / (1.0 + blur[rows]) ** 2)  # two coordinates
        standard_error = 1.0 / np.sqrt(information)
        assert abs(gm.covariances_[index] - 1.0) < 4 * standard_error, (
            gm.covariances_[index],
            standard_error,
        )
        np.testing.assert_allclose(gm.means_[index], means[k], atol=4 * 1.8 / np.sqrt(rows.sum()))
    naive = GaussianMixture(2, covariance_type="spherical", random_state=0).fit(X)
    assert np.all(naive.covariances_ > 2.0)


def test_scores_and_responsibilities_match_scipy(fitted):
    gm, X, noise = fitted
    log_prob = _scipy_log_prob(gm, X, noise)
    norm = np.logaddexp.reduce(log_prob, axis=1)
    np.testing.assert_allclose(gm.score_samples(X, measurement_covariances=noise), norm, atol=1e-8)
    np.testing.assert_allclose(
        gm.predict_proba(X, measurement_covariances=noise),
        np.exp(log_prob - norm[:, None]),
        atol=1e-8,
    )
    assert gm.score(X, measurement_covariances=noise) == pytest.approx(norm.mean(), abs=1e-10)
    # the lower bound is the observed-data likelihood (of the parameters one step before)
    assert gm.lower_bound_ == pytest.approx(norm.mean(), abs=1e-5)
    # (N, D) variances are the diagonal covariances
    variances = np.diagonal(noise, axis1=1, axis2=2)
    diagonal = np.stack([np.diag(v) for v in variances])
    np.testing.assert_allclose(
        gm.score_samples(X, measurement_covariances=variances),
        np.logaddexp.reduce(_scipy_log_prob(gm, X, diagonal), axis=1),
        atol=1e-8,
    )


def test_without_errors_predictions_are_about_error_free_points(fitted):
    gm, X, noise = fitted
    zero = np.zeros_like(noise)
    np.testing.assert_allclose(
        gm.score_samples(X), np.logaddexp.reduce(_scipy_log_prob(gm, X, zero), axis=1), atol=1e-8
    )
    np.testing.assert_array_equal(gm.predict(X), gm.predict(X, measurement_covariances=zero))


def test_criteria_use_the_noisy_likelihood(fitted):
    gm, X, noise = fitted
    log_likelihood = np.sum(gm.score_samples(X, measurement_covariances=noise))
    p = gm._n_parameters()
    bic = gm.bic(X, measurement_covariances=noise)
    assert bic == pytest.approx(-2 * log_likelihood + p * np.log(N_ROWS), rel=1e-10)
    assert gm.aic(X, measurement_covariances=noise) == pytest.approx(
        -2 * log_likelihood + 2 * p, rel=1e-10
    )
    largest = np.max(gm.predict_proba(X, measurement_covariances=noise), axis=1)
    assert gm.icl(X, measurement_covariances=noise) == pytest.approx(
        bic - 2 * np.sum(np.log(largest)), rel=1e-10
    )
    assert bic != pytest.approx(gm.bic(X), rel=1e-3)


def test_fit_predict_equals_fit_then_predict(fitted):
    gm, X, noise = fitted
    labels = GaussianMixture(2, random_state=0, tol=1e-6).fit_predict(
        X, measurement_covariances=noise
    )
    np.testing.assert_array_equal(labels, gm.predict(X, measurement_covariances=noise))


@pytest.mark.filterwarnings("ignore:Best performing initialization did not converge")
def test_sample_weight_with_errors_equals_repeated_rows():
    rng = np.random.default_rng(3)
    X, noise = _noisy(rng, N_ROWS)
    repeats = rng.integers(1, 3, N_ROWS)
    start = dict(
        weights_init=[0.5, 0.5],
        means_init=[[0.0, 0.0], [4.0, 2.0]],
        precisions_init=np.stack([np.eye(2)] * 2),  # the whole start given
        max_iter=5,
        tol=0.0,
    )
    weighted = GaussianMixture(2, **start).fit(
        X, sample_weight=repeats.astype(float), measurement_covariances=noise
    )
    repeated = GaussianMixture(2, **start).fit(
        np.repeat(X, repeats, 0), measurement_covariances=np.repeat(noise, repeats, 0)
    )
    np.testing.assert_allclose(weighted.means_, repeated.means_, rtol=1e-9)
    np.testing.assert_allclose(weighted.covariances_, repeated.covariances_, rtol=1e-9)


@pytest.mark.filterwarnings("ignore:Best performing initialization did not converge")
def test_nan_policies_with_errors(fitted):
    _, X, noise = fitted
    holed = X.copy()
    holed[::5, 1] = np.nan
    start = dict(
        weights_init=[0.5, 0.5],
        means_init=[[0.0, 0.0], [4.0, 2.0]],
        precisions_init=np.stack([np.eye(2)] * 2),
        max_iter=5,
        random_state=0,
    )
    keep = ~np.isnan(holed).any(axis=1)
    omitted = GaussianMixture(2, nan_policy="omit", tol=0.0, **start).fit(
        holed, measurement_covariances=noise
    )
    kept = GaussianMixture(2, tol=0.0, **start).fit(X[keep], measurement_covariances=noise[keep])
    np.testing.assert_allclose(omitted.means_, kept.means_, rtol=1e-12)
    marginal = GaussianMixture(2, nan_policy="marginalize", **start).fit(
        holed, measurement_covariances=noise
    )
    scores = marginal.score_samples(holed, measurement_covariances=noise)
    row = holed[0]  # NaN in column 1: the density of column 0 under (Sigma + S)_00
    reference = np.logaddexp.reduce(
        [
            np.log(marginal.weights_[k])
            + multivariate_normal(
                marginal.means_[k][0], marginal.covariances_[k][0, 0] + noise[0, 0, 0]
            ).logpdf(row[0])
            for k in range(2)
        ]
    )
    assert scores[0] == pytest.approx(reference, abs=1e-10)
    with pytest.raises(ValueError, match="nan_policy='marginalize'"):
        GaussianMixture(2).fit(holed, measurement_covariances=noise)


def test_devices_give_the_in_memory_fit(fitted):
    gm, X, noise = fitted
    sharded = GaussianMixture(2, random_state=0, tol=1e-6, devices=1)
    sharded.fit(X, measurement_covariances=noise)
    np.testing.assert_allclose(sharded.means_, gm.means_, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(sharded.covariances_, gm.covariances_, rtol=1e-9, atol=1e-12)


def _chunks_of(X, noise, bounds=(0, 70, 71, 150, 200)):
    """(x, None, s) chunks of uneven lengths (one of a single row)."""
    return [(X[a:b], None, noise[a:b]) for a, b in itertools.pairwise(bounds)]


def test_chunked_fit_equals_the_in_memory_fit(fitted, tmp_path):
    """Extreme deconvolution read by chunks sums each chunk's deconvolution statistics:
    the fit (same start: all rows are the initialization sample) equals the in-memory
    one to 1e-10, whether S is read alongside a .npy file or carried by (x, w, s)
    chunks; scores, labels and
    responsibilities of chunked X with S equal the in-memory answers."""
    gm, X, noise = fitted
    np.save(tmp_path / "x.npy", X)
    np.save(tmp_path / "s.npy", noise)
    by_file = GaussianMixture(2, random_state=0, tol=1e-6, chunk_size=64)
    by_file.fit(str(tmp_path / "x.npy"), measurement_covariances=str(tmp_path / "s.npy"))
    by_chunks = GaussianMixture(2, random_state=0, tol=1e-6).fit(_chunks_of(X, noise))
    for chunked in (by_file, by_chunks):
        assert chunked.n_iter_ == gm.n_iter_
        np.testing.assert_allclose(chunked.means_, gm.means_, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(chunked.covariances_, gm.covariances_, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(chunked.lower_bound_, gm.lower_bound_, rtol=1e-12)
    memmap = np.load(tmp_path / "x.npy", mmap_mode="r")
    np.testing.assert_allclose(
        gm.score_samples(
            memmap, measurement_covariances=np.load(tmp_path / "s.npy", mmap_mode="r")
        ),
        gm.score_samples(X, measurement_covariances=noise),
        rtol=1e-12,
    )
    np.testing.assert_array_equal(
        gm.predict(str(tmp_path / "x.npy"), measurement_covariances=noise),
        gm.predict(X, measurement_covariances=noise),
    )


@pytest.mark.slow
def test_chunked_fit_with_nan_and_weights_equals_the_in_memory_fit(fitted):
    """NaN entries (nan_policy='marginalize') and sample weights with diagonal S (one
    array per chunk of a list) by chunks: the same deconvolution with missing entries as
    in memory (1e-10), and nan_policy='omit' drops a row's covariances with it."""
    _, X, noise = fitted
    noise = np.diagonal(noise, axis1=1, axis2=2).copy()
    holed = X.copy()
    holed[::7, 1] = np.nan
    holed[3::7, 0] = np.nan
    weight = np.random.default_rng(3).uniform(0.5, 2.0, X.shape[0])
    for policy in ("marginalize", "omit"):
        options = {"random_state": 0, "tol": 1e-6, "nan_policy": policy}
        gm = GaussianMixture(2, **options).fit(
            holed, sample_weight=weight, measurement_covariances=noise
        )
        chunks = [(holed[a:b], weight[a:b]) for a, b in ((0, 90), (90, 200))]
        chunked = GaussianMixture(2, **options).fit(
            chunks, measurement_covariances=[noise[:90], noise[90:]]
        )
        np.testing.assert_allclose(chunked.means_, gm.means_, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(chunked.covariances_, gm.covariances_, rtol=1e-10, atol=1e-12)


def test_chunked_float32_fit_is_close_to_float64(fitted):
    """float32 chunks with float32 S: the fit stays in float32 and within float32
    rounding of the float64 in-memory fit."""
    gm, X, noise = fitted
    chunks = [(x.astype(np.float32), w, s.astype(np.float32)) for x, w, s in _chunks_of(X, noise)]
    single = GaussianMixture(2, random_state=0, tol=1e-6).fit(chunks)
    assert single.means_.dtype == np.float32
    order, reference = np.argsort(single.means_[:, 0]), np.argsort(gm.means_[:, 0])
    np.testing.assert_allclose(single.means_[order], gm.means_[reference], rtol=2e-3, atol=2e-3)


def test_chunked_errors_refuse_bad_chunks(fitted):
    """A chunk's S of the wrong length or shape, S not positive semi-definite in a later
    chunk, chunks with and without S, and S beside a generator: errors naming the chunk
    and the fix."""
    _, X, noise = fitted
    short = _chunks_of(X, noise)
    short[2] = (X[71:150], None, noise[72:150])
    with pytest.raises(ValueError, match=r"chunk 2 have shape \(78, 2, 2\), but the chunk has 79"):
        GaussianMixture(2).fit(short)
    wide = _chunks_of(X, noise)
    wide[1] = (X[70:71], None, np.ones((1, 3)))
    with pytest.raises(ValueError, match=r"measurement_covariances of chunk 1 has shape \(1, 3\)"):
        GaussianMixture(2).fit(wide)
    indefinite = _chunks_of(X, noise)
    indefinite[3] = (X[150:], None, -noise[150:])
    with pytest.raises(ValueError, match=r"chunk 3\[0\] is not positive semi-definite"):
        GaussianMixture(2).fit(indefinite)
    mixed = _chunks_of(X, noise)
    mixed[1] = (X[70:71], None)
    with pytest.raises(ValueError, match="chunk 1 does not carry measurement covariances"):
        GaussianMixture(2).fit(mixed)
    with pytest.raises(ValueError, match="list of 2 arrays, one"):
        GaussianMixture(2).fit([X[:100], X[100:]], measurement_covariances=noise)
    with pytest.raises(ValueError, match=r"shape \(199, 2, 2\); expected \(200, 2, 2\)"):
        GaussianMixture(2, chunk_size=50).fit(X, measurement_covariances=noise[1:])
    with pytest.raises(ValueError, match=r"as \(x, w, s\) tuples"):
        GaussianMixture(2).fit(lambda: iter([X]), measurement_covariances=noise)


def test_bad_input_is_refused(fitted):
    gm, X, noise = fitted
    with pytest.raises(ValueError, match=r"shape \(199, 2, 2\); expected \(200, 2, 2\)"):
        gm.score_samples(X, measurement_covariances=noise[1:])
    with pytest.raises(ValueError, match="not positive semi-definite"):
        GaussianMixture(2).fit(X, measurement_covariances=-noise)
    with pytest.raises(ValueError, match="negative variances"):
        gm.predict(X, measurement_covariances=-np.ones_like(X))


def test_partial_fit_with_errors_on_rows_with_nan(fitted):
    """partial_fit with S on rows with NaN: the first call is the fit of that chunk (the
    same deconvolution with missing entries), a later chunk moves the model; S of the
    wrong length or not positive semi-definite in a later chunk is refused, naming it."""
    _, X, noise = fitted
    holed = X.copy()
    holed[::7, 1] = np.nan
    options = {"random_state": 0, "tol": 1e-6, "nan_policy": "marginalize"}
    whole = GaussianMixture(2, **options).fit(holed[:120], measurement_covariances=noise[:120])
    online = GaussianMixture(2, **options).partial_fit(
        holed[:120], measurement_covariances=noise[:120]
    )
    np.testing.assert_allclose(online.means_, whole.means_, rtol=1e-12, atol=1e-12)
    online.partial_fit(holed[120:], measurement_covariances=noise[120:])
    assert online.n_iter_ == 1 and np.all(np.isfinite(online.covariances_))
    assert not np.allclose(online.means_, whole.means_)
    with pytest.raises(ValueError, match=r"shape \(79, 2, 2\), but the chunk has 80"):
        online.partial_fit(holed[120:], measurement_covariances=noise[121:])
    with pytest.raises(ValueError, match=r"chunk 1\[0\] is not positive semi-definite"):
        online.partial_fit(holed[120:], measurement_covariances=-noise[120:])
