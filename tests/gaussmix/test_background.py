"""GaussianMixture(background="uniform") (issue 19 item 3): mclust's noise component.

References: R's mclust 6.0 (``tests/references/mclust/noise_faithful.json``, written by
``Rscript scripts/mclust_noise_reference.R``: faithful with 40 uniform points added, 8
models x G = 2, 3, fitted with ``initialization = list(noise = ...)`` at mclust's default
tolerance and run to convergence), scipy's densities, a known truth, and repeated rows
for ``sample_weight``. The last mclust test reruns the R script when R is installed.
"""

import copy
import json
import os
import shutil
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import jax
import numpy as np
import pytest
from scipy import stats
from scipy.special import logsumexp

from gaussmix import GaussianMixture
from gaussmix.inference import em

jax.config.update("jax_enable_x64", True)

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT / "tests" / "references" / "mclust" / "noise_faithful.json"


def reference() -> dict:
    return json.loads(REFERENCE.read_text())


def mclust_fit(record: dict, model: str, g: int) -> dict:
    (fit,) = [f for f in record["fits"] if f["model"] == model and f["G"] == g]
    return fit


def noisy_data(seed=0, n_cluster=120, n_noise=60, half_width=8.0):
    """Two Gaussian clusters and uniform noise on [-half_width, half_width]^2."""
    rng = np.random.default_rng(seed)
    clusters = [
        rng.multivariate_normal([-3.0, -1.0], [[0.6, 0.2], [0.2, 0.4]], n_cluster),
        rng.multivariate_normal([3.0, 2.0], [[0.3, -0.1], [-0.1, 0.5]], n_cluster),
    ]
    return np.concatenate([*clusters, rng.uniform(-half_width, half_width, (n_noise, 2))])


def fit_quietly(estimator, X, **keywords):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", em.ConvergenceWarning)
        return estimator.fit(X, **keywords)


def scipy_log_density(gm, X):
    """log(sum_k w_k N(x | m_k, C_k) + b / V) of a fitted full-covariance estimator."""
    terms = [
        np.log(w) + stats.multivariate_normal(m, c).logpdf(X)
        for w, m, c in zip(gm.weights_, gm.means_, gm.covariances_, strict=True)
    ]
    terms.append(np.full(len(X), np.log(gm.background_weight_) - np.log(gm.background_volume_)))
    return logsumexp(np.stack(terms), axis=0)


# -- against mclust ------------------------------------------------------------------------

#: (model, G) fitted by gaussmix in the tests (all 16 are in the reference file).
CHECKED = [("VVV", 2), ("EEE", 3), ("VVI", 2), ("VEV", 3)]


def test_reference_file_is_consistent():
    record = reference()
    x = np.asarray(record["data"])
    assert x.shape == (312, 2) and sum(record["noise"]) == 40
    assert record["Vinv"] == pytest.approx(1 / np.prod(x.max(0) - x.min(0)), rel=1e-14)
    for fit in record["fits"]:
        assert len(fit["pro"]) == fit["G"] + 1 and sum(fit["pro"]) == pytest.approx(1.0)
        # mclust run to convergence is at least as good as at its default tolerance
        assert fit["tight_loglik"] >= fit["loglik"] - 1e-9 * abs(fit["loglik"])


@pytest.mark.slow
@pytest.mark.parametrize(("model", "g"), CHECKED)
def test_fit_matches_mclusts_noise_component(model, g):
    """From gaussmix's own start (k-means) the fit reaches mclust's converged optimum
    (log-likelihood to 1e-8 relative, noise proportion to 1e-4), at least as good as
    mclust's fit at its default tolerance; the parameter count is mclust's
    nMclustParams(noise = TRUE) and the BIC mclust's formula with the opposite sign."""
    record = reference()
    x = np.asarray(record["data"])
    reference_fit = mclust_fit(record, model, g)
    gm = fit_quietly(
        GaussianMixture(
            g,
            covariance_type=model,
            background="uniform",
            tol=1e-11,
            max_iter=5000,
            random_state=0,
        ),
        x,
    )
    assert gm.background_volume_ == pytest.approx(1 / record["Vinv"], rel=1e-14)
    log_likelihood = gm.score(x) * len(x)
    assert log_likelihood >= reference_fit["loglik"] - 1e-9 * abs(reference_fit["loglik"])
    assert log_likelihood == pytest.approx(reference_fit["tight_loglik"], rel=1e-8)
    assert gm.background_weight_ == pytest.approx(reference_fit["tight_pro"][-1], abs=1e-4)
    np.testing.assert_allclose(
        np.sort(gm.weights_), np.sort(reference_fit["tight_pro"][:-1]), atol=1e-4
    )
    assert gm._n_parameters() == reference_fit["df"]
    # mclust's BIC is 2 log L - df log n at its log L: ours at ours, with the same df
    expected_bic = -reference_fit["bic"] - 2 * (log_likelihood - reference_fit["loglik"])
    assert gm.bic(x) == pytest.approx(expected_bic, rel=1e-10)
    assert gm.aic(x) == pytest.approx(-2 * log_likelihood + 2 * reference_fit["df"], rel=1e-12)


def test_density_at_mclusts_parameters_is_mclusts():
    """At mclust's fitted VVV parameters (pro with the noise's, means, sigma) gaussmix's
    score_samples sums to mclust's log-likelihood there (estep), to 1e-10 relative."""
    record = reference()
    x = np.asarray(record["data"])
    gm = fit_quietly(GaussianMixture(2, background="uniform", max_iter=1, random_state=0), x)
    for g in (2,):
        fit = mclust_fit(record, "VVV", g)
        sigma = np.asarray(fit["sigma"])
        gm.weights_ = np.asarray(fit["pro"][:-1])
        gm.background_weight_ = fit["pro"][-1]
        gm.means_ = np.asarray(fit["mean"])
        gm.covariances_ = sigma
        lower = np.linalg.cholesky(sigma)
        gm.precisions_cholesky_ = np.swapaxes(np.linalg.inv(lower), -1, -2)
        assert gm.score_samples(x).sum() == pytest.approx(fit["loglik_at"], rel=1e-10)
        np.testing.assert_allclose(gm.score_samples(x), scipy_log_density(gm, x), rtol=1e-10)


@pytest.mark.slow
def test_live_mclust_reproduces_the_reference(tmp_path):
    """Rerun the R script: mclust's numbers are the committed ones."""
    if shutil.which("Rscript") is None:
        pytest.skip("Rscript is not installed (apt-get install r-cran-mclust)")
    probe = subprocess.run(["Rscript", "-e", "library(mclust)"], capture_output=True, check=False)
    if probe.returncode != 0:
        pytest.skip("R's mclust is not installed (apt-get install r-cran-mclust)")
    output = tmp_path / "noise.json"
    subprocess.run(
        ["Rscript", str(ROOT / "scripts" / "mclust_noise_reference.R"), str(output)],
        check=True,
        capture_output=True,
    )
    live, committed = json.loads(output.read_text()), reference()
    assert live["data"] == committed["data"] and live["Vinv"] == committed["Vinv"]
    for a, b in zip(live["fits"], committed["fits"], strict=True):
        for name in ("loglik", "tight_loglik", "bic", "df"):
            assert a[name] == pytest.approx(b[name], rel=1e-9), (a["model"], a["G"], name)


# -- predictions, draws, criteria ----------------------------------------------------------


@pytest.fixture(scope="module")
def fitted_noisy():
    x = noisy_data()
    gm = fit_quietly(GaussianMixture(2, background="uniform", random_state=0, tol=1e-8), x)
    return gm, x


def test_predictions_follow_the_density_with_a_background_column(fitted_noisy):
    """score_samples is scipy's log(sum_k pi_k N + pi_0 / V), also outside the box (the
    constant term); predict_proba has K + 1 columns summing to 1; predict gives -1
    exactly where the last column is the largest; fit_predict equals fit().predict."""
    gm, x = fitted_noisy
    far = np.array([[40.0, -40.0], [1e3, 1e3]])
    points = np.concatenate([x, far])
    np.testing.assert_allclose(gm.score_samples(points), scipy_log_density(gm, points), rtol=1e-10)
    # far out only the background is left: pi_0 / V
    background_only = np.log(gm.background_weight_) + gm.background_log_density_
    assert gm.score_samples(far)[1] == pytest.approx(background_only, rel=1e-12)
    proba = gm.predict_proba(points)
    assert proba.shape == (len(points), 3)
    np.testing.assert_allclose(proba.sum(1), 1.0, atol=1e-12)
    labels = gm.predict(points)
    np.testing.assert_array_equal(labels == -1, proba.argmax(1) == 2)
    np.testing.assert_array_equal(labels[labels >= 0], proba.argmax(1)[labels >= 0])
    assert list(labels[-2:]) == [-1, -1]
    assert gm.weights_.sum() + gm.background_weight_ == pytest.approx(1.0, abs=1e-12)
    assert gm.background_log_density_ == pytest.approx(-np.log(gm.background_volume_))
    box = np.prod(x.max(0) - x.min(0))
    assert gm.background_volume_ == pytest.approx(box, rel=1e-14)
    refit = GaussianMixture(2, background="uniform", random_state=0, tol=1e-8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", em.ConvergenceWarning)
        np.testing.assert_array_equal(refit.fit_predict(x), gm.predict(x))


def test_criteria_count_mclusts_two_extra_parameters(fitted_noisy):
    gm, x = fitted_noisy
    p = em.n_parameters("full", 2, 2) + 2
    assert gm._n_parameters() == p
    log_likelihood = gm.score_samples(x).sum()
    assert gm.bic(x) == pytest.approx(-2 * log_likelihood + p * np.log(len(x)), rel=1e-12)
    assert gm.aic(x) == pytest.approx(-2 * log_likelihood + 2 * p, rel=1e-12)


def test_icl_is_the_bic_plus_the_assignment_cost_with_the_background_column(fitted_noisy):
    """mclust's ICL: the BIC plus -2 sum log of each row's largest responsibility, the
    background's column included."""
    gm, x = fitted_noisy
    largest = gm.predict_proba(x).max(1)
    assert gm.icl(x) == pytest.approx(gm.bic(x) - 2 * np.log(largest).sum(), rel=1e-10)


def test_sample_draws_the_background_uniformly_in_the_box(fitted_noisy):
    gm, x = fitted_noisy
    n = 4000
    X, labels = gm.sample(n)
    assert X.shape == (n, 2) and labels.shape == (n,)
    noise = labels == -1
    p = gm.background_weight_
    assert abs(noise.mean() - p) < 4 * np.sqrt(p * (1 - p) / n)
    lower, upper = x.min(0), x.max(0)
    assert np.all((X[noise] >= lower) & (X[noise] <= upper))
    # uniform in the box: each coordinate's quartiles (Kolmogorov-Smirnov at 1e-3)
    for d in range(2):
        uniform = stats.uniform(lower[d], upper[d] - lower[d])
        assert stats.kstest(X[noise, d], uniform.cdf).pvalue > 1e-3
    for k in range(2):
        mine = labels == k
        assert abs(mine.mean() - gm.weights_[k]) < 4 * np.sqrt(gm.weights_[k] / n)
        np.testing.assert_allclose(X[mine].mean(0), gm.means_[k], atol=0.15)


def test_save_and_load_keep_the_background(fitted_noisy, tmp_path):
    """gaussmix.save stores the background's fitted attributes (box included) and load
    gives the same scores, probabilities and draws; a fit without a background saves
    none of them (a refit without one removes them)."""
    import gaussmix

    gm, x = fitted_noisy
    loaded = gaussmix.load(gaussmix.save(gm, tmp_path / "noisy.npz"))
    assert loaded.background == "uniform"
    np.testing.assert_array_equal(loaded.score_samples(x), gm.score_samples(x))
    np.testing.assert_array_equal(loaded.predict_proba(x), gm.predict_proba(x))
    np.testing.assert_array_equal(loaded.background_lower_, x.min(0))
    np.testing.assert_array_equal(loaded.background_upper_, x.max(0))
    for drawn, expected in zip(loaded.sample(50), gm.sample(50), strict=True):
        np.testing.assert_array_equal(drawn, expected)
    plain = fit_quietly(GaussianMixture(2, random_state=0), x)
    assert not any(name.startswith("background") and name.endswith("_") for name in vars(plain))
    gaussmix.save(plain, tmp_path / "plain.npz")
    refit = fit_quietly(GaussianMixture(2, background="uniform", random_state=0), x)
    fit_quietly(refit.set_params(background=None), x)
    assert not hasattr(refit, "background_weight_") and not hasattr(refit, "background_lower_")
    gaussmix.save(refit, tmp_path / "refit.npz")
    # a file whose background does not fit its weights, box or hyperparameters is refused
    edits = [
        ({"background_weight_": 0.5}, "sums to"),
        ({"background_lower_": x.max(0) + 1.0}, "background_lower_ exceeds"),
        ({"background_log_density_": 0.0}, "not -log of it"),
    ]
    for number, (edit, match) in enumerate(edits):
        damaged = copy.deepcopy(gm)
        vars(damaged).update(edit)
        path = gaussmix.save(damaged, tmp_path / f"damaged{number}.npz")
        with pytest.raises(ValueError, match=match):
            gaussmix.load(path)
    orphan = copy.deepcopy(gm).set_params(background=None)
    with pytest.raises(ValueError, match=r"hyperparameters\.background is None"):
        gaussmix.load(gaussmix.save(orphan, tmp_path / "orphan.npz"))


def test_recovers_the_noise_weight_and_labels_noise_points():
    """Two clusters with 20 % uniform noise on a known square (its volume given): the
    background weight within 3.5 standard errors of 0.2; the share of the noise points
    labelled -1 is, within 4 binomial standard errors, the share of the square where the
    fitted background is the most probable (by Monte Carlo); the clusters' points are
    almost never labelled -1."""
    n_cluster, n_noise = 200, 100
    x = noisy_data(seed=11, n_cluster=n_cluster, n_noise=n_noise)
    gm = fit_quietly(
        GaussianMixture(2, background="uniform", background_volume=16.0**2, random_state=0), x
    )
    n = len(x)
    assert abs(gm.background_weight_ - 0.2) < 3.5 * np.sqrt(0.2 * 0.8 / n)
    labels = gm.predict(x)
    assert (labels[: 2 * n_cluster] == -1).mean() < 0.05
    square = np.random.default_rng(0).uniform(-8.0, 8.0, (20_000, 2))
    expected = (gm.predict(square) == -1).mean()
    assert expected > 0.8
    observed = (labels[2 * n_cluster :] == -1).mean()
    assert abs(observed - expected) < 4 * np.sqrt(expected * (1 - expected) / n_noise)
    assert sorted(np.round(gm.means_[:, 0]).tolist()) == [-3.0, 3.0]


def test_integer_sample_weight_equals_repeated_rows():
    """Weights 1, 2, 3 equal repeating the rows (the box is the same), from the same
    start for the same number of iterations."""
    x = noisy_data(seed=12, n_cluster=40, n_noise=20)
    weight = np.arange(len(x)) % 3 + 1
    start = {
        "weights_init": np.array([0.5, 0.5]),
        "means_init": np.array([[-2.0, 0.0], [2.0, 1.0]]),
        "precisions_init": np.stack([np.eye(2)] * 2),
    }
    common = {"background": "uniform", "tol": 0.0, "max_iter": 30, **start}
    weighted = fit_quietly(GaussianMixture(2, **common), x, sample_weight=weight)
    repeated = fit_quietly(GaussianMixture(2, **common), np.repeat(x, weight, axis=0))
    assert weighted.background_weight_ == pytest.approx(repeated.background_weight_, rel=1e-9)
    np.testing.assert_allclose(weighted.means_, repeated.means_, rtol=1e-9)
    np.testing.assert_allclose(weighted.covariances_, repeated.covariances_, rtol=1e-9)


def test_warm_start_continues_and_n_init_keeps_the_best(fitted_noisy):
    gm, x = fitted_noisy
    warm = GaussianMixture(2, background="uniform", random_state=0, tol=1e-8, warm_start=True)
    fit_quietly(warm, x)
    first = (warm.background_weight_, warm.means_.copy(), warm.lower_bound_)
    fit_quietly(warm, x)
    assert warm.n_iter_ <= 2  # a fresh start takes tens of iterations
    assert warm.background_weight_ == pytest.approx(first[0], abs=1e-4)
    np.testing.assert_allclose(warm.means_, first[1], atol=1e-3)
    assert warm.lower_bound_ >= first[2] - 1e-12
    more = fit_quietly(
        GaussianMixture(2, background="uniform", random_state=0, tol=1e-8, n_init=3), x
    )
    assert more.lower_bound_ >= gm.lower_bound_ - 1e-12


def test_map_float32_and_clone():
    x = noisy_data(seed=13)
    gm = fit_quietly(GaussianMixture(2, background="uniform", priors="default", random_state=0), x)
    assert gm.method_ == "conjugate_map" and 0 < gm.background_weight_ < 1
    single = fit_quietly(
        GaussianMixture(2, background="uniform", random_state=0), x.astype(np.float32)
    )
    assert single.means_.dtype == np.float32 and np.isfinite(single.score(x.astype(np.float32)))
    assert single.predict_proba(x.astype(np.float32)).shape == (len(x), 3)
    params = GaussianMixture(background="uniform", background_volume=3.0).get_params()
    assert params["background"] == "uniform" and params["background_volume"] == 3.0


COMPILES_SCRIPT = textwrap.dedent(
    """
    jax.config.update("jax_enable_x64", True)
    import json
    import numpy as np
    from gaussmix import GaussianMixture
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(-3, 0.5, (60, 2)), rng.uniform(-8, 8, (20, 2))])
    box = GaussianMixture(2, covariance_type="diag", background="uniform", random_state=0,
                          max_iter=5).fit(X)
    given = GaussianMixture(2, covariance_type="diag", background="uniform",
                            background_volume=500.0,
                            random_state=0, max_iter=5).fit(X)
    given.predict_proba(X)
    print(json.dumps({"compiled": compiled, "weights": [box.background_weight_,
                      given.background_weight_]}))
    """
)


@pytest.mark.slow
def test_the_volume_is_traced_and_a_second_process_compiles_nothing(tmp_path):
    """Two volumes share one compiled fit (V is an argument, not baked into the program),
    and a second process loads it from the cache folder instead of compiling."""
    script = (ROOT / "tests" / "compile_log.py").read_text() + COMPILES_SCRIPT
    env = {k: v for k, v in os.environ.items() if k != "GAUSSMIX_COMPILATION_CACHE"}
    env["GAUSSMIX_CACHE_DIR"] = str(tmp_path / "cache")
    runs = []
    for _ in range(2):
        result = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300
        )
        assert result.returncode == 0, result.stderr[-3000:]
        runs.append(json.loads(result.stdout.strip().splitlines()[-1]))
    first, second = runs
    assert first["compiled"].count("jit(_fit_program)") == 1
    assert second["compiled"] == []
    assert first["weights"] == second["weights"]
    assert first["weights"][0] != first["weights"][1]  # the volumes differ, so do the fits


# -- hostile input -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("keywords", "match"),
    [
        ({"background": "gaussian"}, "'background' parameter"),
        ({"background": True}, "'background' parameter"),
        ({"background": "uniform", "background_volume": 0.0}, "positive, finite"),
        ({"background": "uniform", "background_volume": -2.0}, "positive, finite"),
        ({"background": "uniform", "background_volume": np.nan}, "positive, finite"),
        ({"background": "uniform", "background_volume": np.inf}, "positive, finite"),
        ({"background": "uniform", "background_volume": "big"}, "'background_volume'"),
        ({"background_volume": 2.0}, "pass background='uniform'"),
    ],
)
def test_bad_parameters_are_refused(keywords, match):
    with pytest.raises(ValueError, match=match):
        GaussianMixture(2, **keywords).fit(noisy_data()[:40])


def test_degenerate_box_names_background_volume_as_the_fix():
    x = noisy_data()[:60].copy()
    x[:, 1] = 3.0
    with pytest.raises(ValueError, match=r"feature 1 is constant.*background_volume"):
        GaussianMixture(2, covariance_type="diag", background="uniform").fit(x)


def test_volume_smaller_than_the_box_warns():
    x = noisy_data()
    with pytest.warns(UserWarning, match="smaller than the volume of the data's bounding box"):
        fit_quietly(GaussianMixture(2, background="uniform", background_volume=1.0), x)


def test_modes_not_implemented_name_the_in_memory_fit(tmp_path):
    x = noisy_data()[:60]
    holes = x.copy()
    holes[0, 0] = np.nan
    # a given volume has no box: NaN rows are refused, in the fit and in scoring
    given = dict(background="uniform", background_volume=300.0, nan_policy="marginalize")
    with pytest.raises(NotImplementedError, match="background_volume=None"):
        GaussianMixture(2, **given).fit(holes)
    gm = fit_quietly(GaussianMixture(2, **given), x)
    with pytest.raises(NotImplementedError, match="background=None"):
        gm.score_samples(holes)


def _assert_same_estimator(gm, reference, atol=1e-10, bound_atol=1e-10):
    assert gm.n_iter_ == reference.n_iter_
    assert gm.lower_bound_ == pytest.approx(reference.lower_bound_, abs=bound_atol)
    for name in (
        "weights_",
        "means_",
        "covariances_",
        "background_weight_",
        "background_volume_",
        "background_lower_",
        "background_upper_",
    ):
        np.testing.assert_allclose(
            getattr(gm, name), getattr(reference, name), rtol=1e-12, atol=atol, err_msg=name
        )


def test_chunked_and_device_fits_with_background_equal_the_in_memory_fit():
    """chunk_size (exact EM over chunks, the default V the box of all chunks: one more
    pass) and devices=1 (sharded EM) reach the in-memory fit to 1e-10, its box and
    volume included; nan_policy='omit' read by chunks boxes the rows it keeps, and
    'marginalize' the observed entries (the in-memory NaN fit)."""
    x = noisy_data(seed=5)
    keywords = dict(n_components=2, background="uniform", tol=1e-8, max_iter=60, random_state=0)
    reference = fit_quietly(GaussianMixture(**keywords), x)
    assert 0.05 < reference.background_weight_ < 0.5
    _assert_same_estimator(fit_quietly(GaussianMixture(chunk_size=70, **keywords), x), reference)
    _assert_same_estimator(fit_quietly(GaussianMixture(devices=1, **keywords), x), reference)
    holes = np.concatenate([x, [[np.nan, 100.0]]])  # dropped by omit: not in the box
    chunked = fit_quietly(GaussianMixture(chunk_size=70, nan_policy="omit", **keywords), holes)
    _assert_same_estimator(chunked, reference)
    # marginalize by chunks: the box of the observed entries, the in-memory NaN fit
    holes[3, 1] = np.nan
    marginal = fit_quietly(GaussianMixture(nan_policy="marginalize", **keywords), holes)
    _assert_same_estimator(
        fit_quietly(GaussianMixture(chunk_size=70, nan_policy="marginalize", **keywords), holes),
        marginal,
        bound_atol=1e-7,  # the final bound differs by 3e-9 without background too
    )
    assert marginal.background_upper_[1] == 100.0
    with pytest.raises(NotImplementedError, match="background_volume=None"):
        GaussianMixture(
            chunk_size=70, nan_policy="marginalize", background_volume=5000.0, **keywords
        ).fit(holes)
    # a given volume is used as given over chunks
    given = GaussianMixture(chunk_size=70, background_volume=5000.0, **keywords)
    assert fit_quietly(given, x).background_volume_ == pytest.approx(5000.0, rel=1e-12)


def test_nan_rows_with_background_fit_and_score_by_their_observed_coordinates():
    """nan_policy='marginalize' with the default box: the fit's box is that of the
    observed entries, and score_samples / predict_proba of rows with NaN are scipy's
    density of their observed coordinates, sum_k w_k N(x_O | m_O, C_OO) + b / prod_{d in
    O} side_d, to 1e-10 (complete rows: b / V)."""
    rng = np.random.default_rng(8)
    x = noisy_data(seed=8, n_cluster=80, n_noise=40)
    holes = x.copy()
    holes[rng.random(x.shape) < 0.2] = np.nan
    holes[np.isnan(holes).all(axis=1), 1] = 0.5
    keywords = dict(background="uniform", nan_policy="marginalize", tol=1e-8, random_state=0)
    gm = fit_quietly(GaussianMixture(2, **keywords), holes)
    _assert_same_estimator(fit_quietly(GaussianMixture(2, devices=1, **keywords), holes), gm)
    np.testing.assert_array_equal(gm.background_lower_, np.nanmin(holes, axis=0))
    np.testing.assert_array_equal(gm.background_upper_, np.nanmax(holes, axis=0))
    assert 0.05 < gm.background_weight_ < 0.5
    sides = gm.background_upper_ - gm.background_lower_
    expected = np.empty(len(holes))
    background_column = np.empty(len(holes))
    for n, row in enumerate(holes):
        o = ~np.isnan(row)
        terms = [
            np.log(w) + stats.multivariate_normal(m[o], c[np.ix_(o, o)]).logpdf(row[o])
            for w, m, c in zip(gm.weights_, gm.means_, gm.covariances_, strict=True)
        ]
        background_column[n] = np.log(gm.background_weight_) - np.sum(np.log(sides[o]))
        expected[n] = logsumexp([*terms, background_column[n]])
    np.testing.assert_allclose(gm.score_samples(holes), expected, rtol=0, atol=1e-10)
    proba = gm.predict_proba(holes)
    assert proba.shape == (len(holes), 3)
    np.testing.assert_allclose(proba[:, -1], np.exp(background_column - expected), atol=1e-10)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-12)


def test_measurement_errors_with_background_fit_and_score_by_scipy():
    """measurement_covariances with background='uniform' (NaN entries too): the fit runs,
    and score_samples / predict_proba with the errors are scipy's density of the noisy
    rows, sum_k w_k N(x_O | m_O, (C_k + S_n)_OO) + b / prod_{d in O} side_d, to 1e-10;
    the errors do not change the background's column."""
    rng = np.random.default_rng(10)
    x = noisy_data(seed=10, n_cluster=60, n_noise=30)
    a = rng.normal(scale=0.3, size=(len(x), 2, 2))
    noise = a @ np.swapaxes(a, 1, 2) + 0.05 * np.eye(2)
    x[rng.random(x.shape) < 0.1] = np.nan
    x[np.isnan(x).all(axis=1), 0] = 0.5
    gm = fit_quietly(
        GaussianMixture(2, background="uniform", nan_policy="marginalize", max_iter=200),
        x,
        measurement_covariances=noise,
    )
    assert 0.05 < gm.background_weight_ < 0.5
    sides = gm.background_upper_ - gm.background_lower_
    expected, column = np.empty(len(x)), np.empty(len(x))
    for n, row in enumerate(x):
        o = ~np.isnan(row)
        terms = [
            np.log(w) + stats.multivariate_normal(m[o], (c + noise[n])[np.ix_(o, o)]).logpdf(row[o])
            for w, m, c in zip(gm.weights_, gm.means_, gm.covariances_, strict=True)
        ]
        column[n] = np.log(gm.background_weight_) - np.sum(np.log(sides[o]))
        expected[n] = logsumexp([*terms, column[n]])
    scores = gm.score_samples(x, measurement_covariances=noise)
    np.testing.assert_allclose(scores, expected, rtol=0, atol=1e-10)
    proba = gm.predict_proba(x, measurement_covariances=noise)
    assert proba.shape == (len(x), 3)
    np.testing.assert_allclose(proba[:, -1], np.exp(column - expected), atol=1e-10)
    assert np.isfinite(gm.icl(x, measurement_covariances=noise))


def _errors(n, seed=5):
    """(n, 2, 2) measurement covariances of a small, varying size."""
    factor = np.random.default_rng(seed).normal(size=(n, 2, 2)) * 0.3
    return factor @ np.swapaxes(factor, -1, -2)


def test_partial_fit_with_background_and_errors_is_one_batch_em_step():
    """Online EM with a background and measurement errors: the first call on an unfitted
    estimator is the fit of that chunk; after a fit on A (converged to 1e-10), one call on
    B is one batch EM step on A and B from the fitted parameters (incremental EM: A's
    statistics at the fixed point), by fit_em with max_iter=1 and the same volume."""
    x = noisy_data()
    noise = _errors(len(x))
    a, b = np.arange(0, len(x), 2), np.arange(1, len(x), 2)
    options = dict(background="uniform", random_state=0, tol=1e-10, max_iter=500)
    fitted = GaussianMixture(2, **options).fit(x[a], measurement_covariances=noise[a])
    first = GaussianMixture(2, **options).partial_fit(x[a], measurement_covariances=noise[a])
    np.testing.assert_allclose(first.means_, fitted.means_, rtol=1e-12, atol=1e-12)
    assert first.background_weight_ == pytest.approx(fitted.background_weight_, rel=1e-12)
    gaussian = fitted.weights_ / fitted.weights_.sum()
    step = em.fit_em(
        np.concatenate([x[a], x[b]]),
        n_components=2,
        measurement_covariances=np.concatenate([noise[a], noise[b]]),
        weights_init=gaussian,
        means_init=fitted.means_,
        precisions_init=fitted.precisions_,
        max_iter=1,
        tol=0.0,
        background_log_density=fitted.background_log_density_,
        background_weight_init=fitted.background_weight_,
    )
    before = fitted.covariances_.copy()
    fitted.partial_fit(x[b], measurement_covariances=noise[b])
    # A's fit is a fixed point to its lower bound's tol, its parameters to about 1e-6
    assert np.abs(fitted.covariances_ - before).max() > 1e-3  # the step moves them
    np.testing.assert_allclose(fitted.means_, step.params["means"], atol=2e-6)
    np.testing.assert_allclose(fitted.covariances_, step.params["covariances"], atol=2e-6)
    assert fitted.background_weight_ == pytest.approx(float(step.background_weight), abs=2e-6)
    assert fitted.background_volume_ == pytest.approx(first.background_volume_)  # box kept


@pytest.mark.slow
def test_online_passes_with_background_and_errors_approach_the_batch_fit():
    """Passes of partial_fit over shuffled chunks (step sizes 1/(t + 1): an average)
    with measurement errors and a background of the batch fit's volume approach the
    deconvolved batch fit: nearer to it than to the batch fit that ignores the errors."""
    x = noisy_data(n_cluster=150)
    noise = _errors(len(x), seed=6)
    blur = np.einsum(
        "nij,nj->ni", np.linalg.cholesky(noise), np.random.default_rng(7).normal(size=x.shape)
    )
    x = x + blur
    options = dict(background="uniform", covariance_type="diag", random_state=0, tol=1e-8)
    batch = GaussianMixture(2, **options).fit(x, measurement_covariances=noise)
    naive = GaussianMixture(2, **options, background_volume=batch.background_volume_).fit(x)
    online = GaussianMixture(
        2,
        **options,
        background_volume=batch.background_volume_,
        learning_decay=1.0,
        learning_offset=1.0,
    )
    rng = np.random.default_rng(8)
    for _ in range(8):
        order = rng.permutation(len(x))
        for rows in np.array_split(order, 4):
            online.partial_fit(x[rows], measurement_covariances=noise[rows])
    sort = lambda gm: np.argsort(gm.means_[:, 0])  # noqa: E731
    online_error = np.abs(online.covariances_[sort(online)] - batch.covariances_[sort(batch)]).max()
    naive_gap = np.abs(online.covariances_[sort(online)] - naive.covariances_[sort(naive)]).max()
    assert online_error < 0.5 * naive_gap  # nearer the deconvolved fit than the naive one
    np.testing.assert_allclose(online.means_[sort(online)], batch.means_[sort(batch)], atol=0.1)
    assert online.background_weight_ == pytest.approx(batch.background_weight_, abs=0.03)
