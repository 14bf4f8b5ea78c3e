"""The bootstrap likelihood-ratio test for the number of components (issue 18, item 4)
against mclust's ``mclustBootstrapLRT`` and against independent checks.

mclust's numbers are committed (``tests/references/mclust/bootstrap_*.json``, written by
``Rscript scripts/mclust_bootstrap_reference.R``: faithful VVV, iris EEE and a simulated
set of three spherical clusters fitted EII, maxG = 3, nboot = 999, with mclust's fitted
H0 and H1 parameters), so these tests run without R; the last one runs ``Rscript``
itself when it is installed.

Monte Carlo error: a bootstrap p-value from B replicates has the binomial standard error
:math:`\\sqrt{p (1 - p) / B}`; ours (B = 199) and mclust's (B = 999) are compared within
4 standard errors of their difference plus one replicate's step, and the replicate
statistics by a two-sample Kolmogorov-Smirnov test.
"""

import json
import shutil
import subprocess
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from gaussmix import GaussianMixture
from gaussmix.bootstrap import (
    BootstrapLRT,
    ReplicateFits,
    bootstrap_likelihood_ratio,
    bootstrap_p_value,
    ill_conditioned,
    replicate_fits,
    replicate_statistics,
    split_heaviest,
)
from gaussmix.inference import em, native
from gaussmix.inference.em.pool import (
    fit_kernel_serves,
    kernel_serves,
    lane_statistics,
    pool_fit,
)
from gaussmix.models.priors import covariance_layout

REFERENCES = Path(__file__).resolve().parents[1] / "references" / "mclust"
N_BOOT = 199


def reference(name: str) -> dict:
    return json.loads((REFERENCES / f"bootstrap_{name}.json").read_text())


def mclust_parameters(fit: dict, model: str) -> em.MixtureParameters:
    """mclust's fitted pro, mean, sigma in gaussmix's storage layout of ``model``."""
    layout = covariance_layout(model)
    sigma = np.asarray(fit["sigma"], dtype=np.float64)
    covariances = {
        "full": sigma,
        "tied": sigma[0],
        "diag": np.diagonal(sigma, axis1=1, axis2=2),
        "spherical": sigma[:, 0, 0],
    }[layout]
    factor = np.asarray(em.precisions_cholesky_from_covariances(covariances, layout))
    return em.MixtureParameters(
        np.asarray(fit["pro"], dtype=np.float64),
        np.asarray(fit["mean"], dtype=np.float64),
        covariances,
        factor,
    )


def precisions_of(parameters: em.MixtureParameters, layout: str) -> np.ndarray:
    factor = np.asarray(parameters.precisions_cholesky)
    if layout in ("full", "tied"):
        return factor @ np.swapaxes(factor, -1, -2)
    return factor * factor


# ---- against mclust ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "g"),
    [
        ("faithful", 2),
        pytest.param("iris", 3, marks=pytest.mark.slow),
        pytest.param("simulated", 3, marks=pytest.mark.slow),
    ],
    ids=["faithful-VVV-2v3", "iris-EEE-3v4", "simulated-EII-3v4"],
)
def test_p_values_equal_mclust_within_monte_carlo_error(name, g):
    """From mclust's own H0 and H1 fits: our replicate statistics follow mclust's
    distribution, and the p-value at mclust's observed statistic equals mclust's."""
    case = reference(name)
    model = case["model"]
    fits = replicate_fits(
        mclust_parameters(case["fits"][g - 1], model),
        mclust_parameters(case["fits"][g], model),
        covariance_type=model,
        n_samples=case["n"],
        n_boot=N_BOOT,
        key=jax.random.key(g),
        tol=1e-5,
        reg_covar=0.0,
        max_iter=1000,
    )
    replicates = replicate_statistics(fits)
    assert replicates.n_failed == 0
    assert replicates.n_not_converged == 0
    observed = case["obs"][g - 1]
    p_value = bootstrap_p_value(observed, replicates.statistics)
    p_mclust = case["p_value"][g - 1]
    n_mclust = case["nboot"]
    error = np.sqrt(p_mclust * (1 - p_mclust) * (1 / N_BOOT + 1 / n_mclust))
    assert abs(p_value - p_mclust) <= 4 * error + 1 / (N_BOOT + 1), (p_value, p_mclust)
    # mclust keeps negative statistics, gaussmix clips them at 0 (the same p-values)
    theirs = np.maximum(np.asarray(case["boot"], dtype=np.float64)[:, g - 1], 0.0)
    assert stats.ks_2samp(replicates.statistics, theirs).pvalue > 1e-3


@pytest.mark.slow
@pytest.mark.parametrize("name", ["faithful", "iris", "simulated"])
def test_observed_log_likelihoods_equal_mclust_at_its_optima(name):
    """At mclust's fitted parameters our log-likelihood is mclust's (which belongs to
    the previous iterate: within its stopping rule, 1e-5 (1 + |log L|)), and the
    observed statistics are mclust's; EM continued from there only climbs (mclust stops
    slowly converging fits early: by 0.13 on faithful K = 3, by 3.0 on the simulated
    set's K = 2, whose observed LRTS of 0.13 is mclust's)."""
    case = reference(name)
    model, layout = case["model"], covariance_layout(case["model"])
    x = np.asarray(case["data"], dtype=np.float64)
    at, converged = [], []
    for fit in case["fits"]:
        start = mclust_parameters(fit, model)
        for max_iter, values in ((0, at), (1000, converged)):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", em.ConvergenceWarning)
                estimator = GaussianMixture(
                    len(fit["pro"]),
                    covariance_type=model,
                    tol=1e-10,
                    reg_covar=0.0,
                    max_iter=max_iter,
                    weights_init=start.weights,
                    means_init=start.means,
                    precisions_init=precisions_of(start, layout),
                ).fit(x)
            values.append(float(np.sum(estimator.score_samples(x))))
    mclust = np.array([fit["loglik"] for fit in case["fits"]])
    at, converged = np.array(at), np.array(converged)
    assert np.all(np.abs(at - mclust) <= 1e-5 * (1 + np.abs(mclust)))
    np.testing.assert_allclose(2 * np.diff(at), case["obs"], atol=0.1)
    assert np.all(converged >= at - 1e-8)


@pytest.fixture(scope="module")
def faithful_test() -> BootstrapLRT:
    case = reference("faithful")
    return bootstrap_likelihood_ratio(
        np.asarray(case["data"]), "VVV", max_components=1, n_boot=19, random_state=0
    )


def test_end_to_end_observed_statistic_equals_mclust(faithful_test):
    """faithful, 1 against 2 components: our observed fits reach mclust's optima."""
    case = reference("faithful")
    np.testing.assert_allclose(faithful_test.statistic, case["obs"][:1], atol=1e-2)
    np.testing.assert_allclose(
        faithful_test.log_likelihood, [fit["loglik"] for fit in case["fits"][:2]], atol=1e-2
    )
    assert faithful_test.p_value.tolist() == [1 / 20]  # no replicate reaches 319
    assert faithful_test.selected == 2
    assert faithful_test.replicates.shape == (1, 19)
    text = repr(faithful_test)
    assert "1 vs 2" in text and "selected: 2" in text and "VVV" in text


# ---- the pieces against independent computations -----------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("covariance_type", ["VEI", "tied"])
def test_observed_fits_equal_the_estimator_one_k_at_a_time(covariance_type):
    """The observed fits (every K in one padded program) are GaussianMixture's with the
    same options, K by K: log-likelihoods to 1e-9, for a constrained model (iterative
    M-step) and the tied layout (one covariance, not one per component)."""
    case = reference("faithful")
    x = np.asarray(case["data"], dtype=np.float64)[::2]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        test = bootstrap_likelihood_ratio(
            x, covariance_type, max_components=1, n_boot=1, random_state=3
        )
    single = GaussianMixture(1, covariance_type=covariance_type, reg_covar=0.0).fit(x)
    log_likelihood1 = float(np.sum(single.score_samples(x)))
    tol = 1e-5 * (1.0 / len(x) + abs(log_likelihood1) / len(x))
    expected = []
    for k in (1, 2):  # K = 1 is padded inside the K = 2 program
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", em.ConvergenceWarning)
            estimator = GaussianMixture(
                k,
                covariance_type=covariance_type,
                tol=tol,
                reg_covar=0.0,
                max_iter=1000,
                n_init=5,
                random_state=3,
            ).fit(x)
        expected.append(float(np.sum(estimator.score_samples(x))))
    np.testing.assert_allclose(test.log_likelihood, expected, rtol=1e-9)
    assert test.log_likelihood[0] == pytest.approx(log_likelihood1, rel=1e-12)


@pytest.mark.parametrize("covariance_type", ["full", "tied", "diag", "spherical"])
def test_lane_statistics_equal_the_em_core(covariance_type):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(37, 3)) * [1.0, 2.0, 0.5] + [3.0, -1.0, 0.0]
    centre = x.mean(axis=0)
    result = em.fit_em(x, n_components=3, covariance_type=covariance_type, max_iter=3)
    parameters = em.MixtureParameters(
        *(
            jnp.asarray(a)
            for a in (
                result.params["weights"],
                result.params["means"],
                result.params[
                    {
                        "full": "covariances",
                        "tied": "covariance",
                        "diag": "variances",
                        "spherical": "variances",
                    }[covariance_type]
                ],
                result.precisions_cholesky,
            )
        )
    )
    expected = em.sufficient_statistics(
        x, parameters, covariance_type=covariance_type, centre=centre
    )
    centred = parameters._replace(means=parameters.means - centre)
    got = lane_statistics(centred, jnp.asarray((x - centre).T), covariance_type)
    for name, want, have in zip(expected._fields, expected, got, strict=True):
        np.testing.assert_allclose(have, want, rtol=1e-10, atol=1e-10, err_msg=name)


def datasets_and_start(n_datasets=5, n_samples=60):
    rng = np.random.default_rng(2)
    x = np.stack(
        [
            np.concatenate(
                [rng.normal(-2, 1, (n_samples // 2, 2)), rng.normal(2, 0.7, (n_samples // 2, 2))]
            )
            for _ in range(n_datasets)
        ]
    )
    start = em.MixtureParameters(
        jnp.array([0.4, 0.6]),
        jnp.array([[-1.0, 0.0], [1.0, 0.5]]),
        jnp.stack([jnp.eye(2), jnp.eye(2)]),
        jnp.stack([jnp.eye(2), jnp.eye(2)]),
    )
    return x, start


def test_pool_fit_equals_separate_fits_for_any_number_of_lanes():
    """The pool's lanes and refills give each dataset the fit that fit_em gives it alone
    from the same start, whatever the number of lanes."""
    x, start = datasets_and_start()
    centre = x.mean(axis=1)
    x_rows = jnp.asarray(np.swapaxes(x - centre[:, None], 1, 2))
    config = em.StepConfig(2, "full")
    results = [
        pool_fit(
            x_rows,
            jnp.asarray(centre),
            start,
            jnp.ones(len(x), bool),
            jnp.asarray(1e-14),
            jnp.asarray(0.0),
            config,
            300,
            slots,
        )
        for slots in (1, 5)
    ]
    for result in results[1:]:
        np.testing.assert_allclose(result.log_likelihood, results[0].log_likelihood, rtol=1e-12)
    separate = [
        em.fit_em(
            data,
            n_components=2,
            tol=1e-13,
            reg_covar=0.0,
            max_iter=300,
            weights_init=start.weights,
            means_init=start.means,
            precisions_init=np.stack([np.eye(2), np.eye(2)]),
        )
        for data in x
    ]
    expected = [float(r.lower_bound) * x.shape[1] for r in separate]
    np.testing.assert_allclose(results[0].log_likelihood, expected, rtol=1e-9)
    for result, fit in zip(np.asarray(results[0].parameters.means), separate, strict=True):
        np.testing.assert_allclose(result, fit.params["means"], atol=1e-6)
    # a masked dataset is not fitted
    masked = pool_fit(
        x_rows,
        jnp.asarray(centre),
        start,
        jnp.array([True, False, True, False, True]),
        jnp.asarray(1e-14),
        jnp.asarray(0.0),
        config,
        300,
        2,
    )
    assert np.all(np.isneginf(np.asarray(masked.log_likelihood)[[1, 3]]))
    np.testing.assert_allclose(
        np.asarray(masked.log_likelihood)[[0, 2, 4]], expected[::2], rtol=1e-9
    )


def layout_start(layout: str) -> em.MixtureParameters:
    """Two components at (-1, 0) and (1, 0.5), unit covariances, in a layout."""
    covariances = {
        "full": np.stack([np.eye(2), np.eye(2)]),
        "diag": np.ones((2, 2)),
        "spherical": np.ones(2),
    }[layout]
    return em.MixtureParameters(
        jnp.array([0.4, 0.6]),
        jnp.array([[-1.0, 0.0], [1.0, 0.5]]),
        jnp.asarray(covariances),
        em.precisions_cholesky_from_covariances(jnp.asarray(covariances), layout),
    )


@pytest.mark.parametrize("kernel_mode", ["use_kernel", "whole_fit"])
@pytest.mark.parametrize("covariance_type", ["full", "diag", "spherical"])
def test_pool_fit_through_the_kernel_equals_xla(covariance_type, kernel_mode):
    """pool_fit's E-step through the compiled lane kernel (use_kernel), or each whole fit
    in the compiled kernel (whole_fit: E-step, M-step, collapse and convergence tests in
    C++), and through XLA: the same fits to rounding (log-likelihoods, parameters) and
    the same steps, convergence and collapse flags per dataset, with one lane and with
    several; a fit whose component gets no rows collapses (reg_covar 0) in both."""
    if not fit_kernel_serves(covariance_type, 2, 2, np.float64):
        pytest.skip(f"the compiled kernel is not in use: {native.status()}")
    x, _ = datasets_and_start(6, 60)
    centre = x.mean(axis=1)
    x_rows = jnp.asarray(np.swapaxes(x - centre[:, None], 1, 2))
    # one start per dataset; the last one's second component, far from every row with a
    # tiny covariance, gets no rows: its covariance is 0 (reg_covar 0), the fit collapses
    starts = jax.tree.map(lambda leaf: np.stack([leaf] * 6), layout_start(covariance_type))
    starts.means[5, 1] = [1e4, 1e4]
    starts.covariances[5, 1] *= 1e-4
    starts.precisions_cholesky[5, 1] *= 1e2
    arguments = (
        x_rows,
        jnp.asarray(centre),
        jax.tree.map(jnp.asarray, starts),
        jnp.ones(len(x), bool),
        jnp.asarray(1e-10),
        jnp.asarray(0.0),
        em.StepConfig(2, covariance_type),
        300,
    )
    layout = covariance_layout(covariance_type)

    def failed(fits):  # the bootstrap's failure test
        bad = jax.vmap(ill_conditioned, in_axes=(0, None))(fits.parameters, layout)
        return np.asarray(fits.collapsed | bad | ~jnp.isfinite(fits.log_likelihood))

    for slots in (1, 4):
        xla = pool_fit(*arguments, slots, use_kernel=False)
        kernel = pool_fit(*arguments, slots, **{kernel_mode: True})
        assert np.array_equal(failed(xla), [False] * 5 + [True])
        assert bool(xla.collapsed[5]) and bool(kernel.collapsed[5])
        assert np.array_equal(failed(kernel), failed(xla))
        fitted = ~failed(xla)
        for name in ("n_iter", "converged", "collapsed"):
            assert np.array_equal(
                np.asarray(getattr(kernel, name))[fitted], np.asarray(getattr(xla, name))[fitted]
            ), name
        np.testing.assert_allclose(
            np.asarray(kernel.log_likelihood)[fitted],
            np.asarray(xla.log_likelihood)[fitted],
            rtol=1e-11,
        )
        for name in ("weights", "means", "covariances"):
            np.testing.assert_allclose(
                np.asarray(getattr(kernel.parameters, name))[fitted],
                np.asarray(getattr(xla.parameters, name))[fitted],
                rtol=1e-8,
                atol=1e-10,
                err_msg=name,
            )


def test_whole_fits_in_the_kernel_only_for_unconstrained_models():
    """The C++ M-step is maximum likelihood of VVV, VVI and VII: the constrained models
    (their M-steps in XLA) and tied keep XLA's loop, full covariances past FIT_FEATURES
    and more than LANE_COMPONENTS components too."""
    if not kernel_serves("VVV", 2, np.float64):
        pytest.skip(f"the compiled kernel is not in use: {native.status()}")
    for covariance_type in ("full", "diag", "spherical"):
        assert fit_kernel_serves(covariance_type, native.LANE_COMPONENTS, 3, np.float64)
    for covariance_type in ("EEI", "VEI", "EII", "EEE", "tied", "VVE", "EVV"):
        assert not fit_kernel_serves(covariance_type, 2, 2, np.float64), covariance_type
    assert not fit_kernel_serves("full", 2, native.FIT_FEATURES + 1, np.float64)
    assert fit_kernel_serves("diag", 2, native.FIT_FEATURES + 1, np.float64)
    assert not fit_kernel_serves("full", native.LANE_COMPONENTS + 1, 2, np.float64)


def single_gaussian(rows: np.ndarray) -> em.MixtureParameters:
    """The one-component full-covariance fit of ``rows`` (its mean and covariance)."""
    covariance = jnp.asarray(np.cov(rows.T)[None])
    return em.MixtureParameters(
        jnp.array([1.0]),
        jnp.asarray(rows.mean(0, keepdims=True)),
        covariance,
        em.precisions_cholesky_from_covariances(covariance, "full"),
    )


def test_replicates_through_the_kernel_equal_xla():
    """replicate_fits with the kernel and with GAUSSMIX_NATIVE's switch off
    (set_enabled(False)): the same failure and refit flags, statistics to rounding, and
    the same steps and convergence per fitted replicate."""
    if not kernel_serves("VVV", 2, np.float64):
        pytest.skip(f"the compiled kernel is not in use: {native.status()}")
    x, start = datasets_and_start(1, 80)
    null = single_gaussian(x[0])
    keywords = dict(
        covariance_type="VVV",
        n_samples=80,
        n_boot=40,
        key=jax.random.key(7),
        tol=1e-5,
        reg_covar=0.0,
        max_iter=500,
        refit_negative=True,
    )
    kernel = replicate_fits(null, start, **keywords)
    native.set_enabled(False)
    try:
        xla = replicate_fits(null, start, **keywords)
    finally:
        native.set_enabled(None)
    for name in ("failed0", "failed1", "failed_split", "refit"):
        assert np.array_equal(getattr(kernel, name), getattr(xla, name)), name
    # where a fit fails (a component collapsing), its last step and log-likelihood are
    # those of a degenerate mixture and are not compared: the flag is what counts
    for fit, suffix in ((0, "0"), (1, "1"), (2, "_split")):
        fitted = ~getattr(xla, f"failed{suffix}")
        if suffix == "_split":
            fitted &= xla.refit
        assert np.array_equal(kernel.n_iter[fitted, fit], xla.n_iter[fitted, fit]), suffix
        assert np.array_equal(
            getattr(kernel, f"converged{suffix}")[fitted],
            getattr(xla, f"converged{suffix}")[fitted],
        )
        np.testing.assert_allclose(
            getattr(kernel, f"log_likelihood{suffix}")[fitted],
            getattr(xla, f"log_likelihood{suffix}")[fitted],
            rtol=1e-10,
        )
    np.testing.assert_allclose(
        replicate_statistics(kernel).statistics,
        replicate_statistics(xla).statistics,
        rtol=1e-8,
        atol=1e-8,
    )


@pytest.mark.slow
def test_replicates_do_not_depend_on_batches_or_lanes():
    x, start = datasets_and_start(1, 80)
    null = single_gaussian(x[0])
    keywords = dict(
        covariance_type="VVV",
        n_samples=80,
        n_boot=23,
        key=jax.random.key(5),
        tol=1e-5,
        reg_covar=0.0,
        max_iter=500,
    )
    one = replicate_fits(null, start, **keywords)
    other = replicate_fits(null, start, batch_size=10, slots=3, **keywords)
    np.testing.assert_allclose(other.log_likelihood0, one.log_likelihood0, rtol=1e-10)
    np.testing.assert_allclose(other.log_likelihood1, one.log_likelihood1, rtol=1e-10)


def test_draws_follow_the_mixture():
    parameters = em.MixtureParameters(
        jnp.array([0.3, 0.7]),
        jnp.array([[-5.0, 0.0], [5.0, 1.0]]),
        jnp.array([[[1.0, 0.8], [0.8, 2.0]], [[0.5, 0.0], [0.0, 0.5]]]),
        jnp.zeros((2, 2, 2)),
    )
    from gaussmix.bootstrap import draw

    x = np.asarray(draw(parameters, jax.random.key(0), 20_000, "full"))
    left = x[x[:, 0] < 0]
    assert abs(len(left) / len(x) - 0.3) < 4 * np.sqrt(0.3 * 0.7 / len(x))
    np.testing.assert_allclose(np.cov(left.T), parameters.covariances[0], atol=0.1)
    np.testing.assert_allclose(left.mean(0), parameters.means[0], atol=0.05)


@pytest.mark.parametrize("covariance_type", ["VVV", "EEE", "VVI", "EII"])
def test_split_heaviest_keeps_the_mixture_and_the_constraints(covariance_type):
    layout = covariance_layout(covariance_type)
    covariances = {
        "full": jnp.array([[[2.0, 0.5], [0.5, 1.0]], [[1.0, 0.0], [0.0, 1.0]]]),
        "tied": jnp.array([[2.0, 0.5], [0.5, 1.0]]),
        "diag": jnp.array([[2.0, 1.0], [1.0, 3.0]]),
        "spherical": jnp.array([1.5, 1.5]),
    }[layout]
    parameters = em.MixtureParameters(
        jnp.array([0.7, 0.3]),
        jnp.array([[0.0, 0.0], [5.0, 5.0]]),
        covariances,
        em.precisions_cholesky_from_covariances(covariances, layout),
    )
    split = split_heaviest(parameters, layout)
    assert split.weights.shape == (3,)
    np.testing.assert_allclose(split.weights, [0.35, 0.3, 0.35])
    # the two halves are centred on the old mean, along the main axis, the rest is kept
    np.testing.assert_allclose((split.means[0] + split.means[2]) / 2, [0.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(split.means[1], [5.0, 5.0])
    assert float(jnp.linalg.norm(split.means[0] - split.means[2])) > 0.5
    if layout != "tied":
        np.testing.assert_allclose(split.covariances[2], split.covariances[0])
        np.testing.assert_allclose(split.precisions_cholesky[2], split.precisions_cholesky[0])


def test_ill_conditioned_is_mclusts_failure_test():
    good = jnp.array([[[1.0, 0.0], [0.0, 2.0]]])
    singular = jnp.array([[[1.0, 1.0], [1.0, 1.0]]])
    for covariances, bad in ((good, False), (singular, True)):
        factor = em.precisions_cholesky_from_covariances(covariances, "full")
        parameters = em.MixtureParameters(jnp.ones(1), jnp.zeros((1, 2)), covariances, factor)
        assert bool(ill_conditioned(parameters, "full")) is bad
    diag = em.MixtureParameters(
        jnp.ones(1), jnp.zeros((1, 2)), jnp.array([[1.0, 1e-20]]), jnp.array([[1.0, 1e10]])
    )
    assert bool(ill_conditioned(diag, "diag"))


def test_replicate_statistics_policy():
    """Failures are NaN and counted, negative statistics clipped and counted, the split
    refit kept where it is better, and the p-value leaves failures out."""
    fits = ReplicateFits(
        log_likelihood0=np.array([-10.0, -10.0, -10.0, -10.0, -10.0]),
        log_likelihood1=np.array([-8.0, -11.0, -11.0, -9.0, -9.0]),
        log_likelihood_split=np.array([-np.inf, -9.5, -10.000001, -np.inf, -np.inf]),
        failed0=np.array([False, False, False, True, False]),
        failed1=np.array([False, False, False, False, True]),
        failed_split=np.zeros(5, bool),
        converged0=np.ones(5, bool),
        converged1=np.array([False, True, True, True, True]),
        converged_split=np.ones(5, bool),
        refit=np.array([False, True, True, False, False]),
        n_iter=np.zeros((5, 3), np.int32),
    )
    result = replicate_statistics(fits)
    np.testing.assert_allclose(result.statistics, [4.0, 1.0, 0.0, np.nan, np.nan])
    assert (result.n_failed, result.n_refit, result.n_clipped, result.n_not_converged) == (
        2,
        2,
        1,
        1,
    )
    assert bootstrap_p_value(1.0, result.statistics) == (1 + 2) / (3 + 1)
    assert bootstrap_p_value(5.0, result.statistics) == 1 / 4


@pytest.mark.slow
def test_a_hopeless_alternative_start_fails_or_is_refitted():
    """An H1 start with a component far from every replicate collapses: counted as
    failed (mclust's procedure), or rescued by the split refit (refit_negative)."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(50, 2))
    covariance = np.cov(x.T)
    null = em.MixtureParameters(
        np.ones(1),
        x.mean(0, keepdims=True),
        covariance[None],
        np.asarray(em.precisions_cholesky_from_covariances(covariance[None], "full")),
    )
    far = np.array([[1e4, 1e4]])
    tiny = 1e-4 * np.eye(2)[None]
    alternative = em.MixtureParameters(
        np.array([1.0 - 1e-9, 1e-9]),
        np.concatenate([null.means, far]),
        np.concatenate([null.covariances, tiny]),
        np.asarray(
            em.precisions_cholesky_from_covariances(
                np.concatenate([null.covariances, tiny]), "full"
            )
        ),
    )
    keywords = dict(
        covariance_type="full",
        n_samples=50,
        n_boot=8,
        key=jax.random.key(0),
        tol=1e-5,
        reg_covar=0.0,
        max_iter=500,
    )
    plain = replicate_statistics(replicate_fits(null, alternative, **keywords))
    assert plain.n_failed == 8 and np.all(np.isnan(plain.statistics))
    rescued = replicate_statistics(
        replicate_fits(null, alternative, refit_negative=True, **keywords)
    )
    assert rescued.n_failed == 0 and rescued.n_refit == 8
    assert np.all(rescued.statistics >= 0)


# ---- calibration -----------------------------------------------------------------


@pytest.mark.slow
def test_null_p_values_are_uniform():
    """Data drawn from one Gaussian: the p-values of 1 against 2 components are uniform
    (a Kolmogorov-Smirnov test, and the rejections at 20 % within 4 binomial errors)."""
    rng = np.random.default_rng(11)
    n_datasets, n_boot = 40, 39
    p_values = []
    for _ in range(n_datasets):
        x = rng.normal(size=(40, 2)) @ np.array([[1.0, 0.3], [0.0, 0.8]])
        with warnings.catch_warnings():  # a few replicates reach max_iter: counted, kept
            warnings.simplefilter("ignore", UserWarning)
            test = bootstrap_likelihood_ratio(
                x,
                "VVI",
                max_components=1,
                n_boot=n_boot,
                n_init=3,
                random_state=int(rng.integers(2**31)),
            )
        p_values.append(float(test.p_value[0]))
    p_values = np.array(p_values)
    rejected = np.sum(p_values <= 0.2)
    assert abs(rejected - 0.2 * n_datasets) <= 4 * np.sqrt(0.2 * 0.8 * n_datasets)
    assert stats.kstest(p_values, "uniform").pvalue > 1e-3


# ---- bad input -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("keywords", "message"),
    [
        ({"n_boot": 0}, "'n_boot': 0; it must be an int >= 1"),
        ({"n_boot": 2.5}, "'n_boot'"),
        ({"level": 1.0}, "'level': 1.0; it must be in \\(0, 1\\)"),
        ({"level": 0}, "'level'"),
        ({"max_components": 30}, "max_components = 30 tests 30 against 31 components"),
        ({"max_components": 0}, "'max_components': 0"),
        ({"covariance_type": "XYZ"}, "'covariance_type'"),
        ({"tol": -1.0}, "'tol'"),
        ({"reg_covar": float("nan")}, "'reg_covar'"),
        ({"batch_size": 0}, "'batch_size': 0"),
    ],
)
def test_bad_input_is_named(keywords, message):
    x = np.random.default_rng(0).normal(size=(30, 2))
    with pytest.raises(ValueError, match=message):
        bootstrap_likelihood_ratio(x, **{"covariance_type": "VVV", **keywords})


def test_nan_in_data_is_named():
    x = np.random.default_rng(0).normal(size=(30, 2))
    x[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        bootstrap_likelihood_ratio(x, "VVV")


@pytest.mark.parametrize(
    ("covariance_type", "column", "message"),
    [
        ("VVV", "constant", r"feature\(s\) \[1\] are constant"),
        ("VVI", "constant", r"feature\(s\) \[1\] are constant"),
        ("EEE", "duplicated", "linearly dependent"),
    ],
)
def test_a_singular_one_component_fit_is_named(covariance_type, column, message):
    """A constant or duplicated feature makes the K = 1 likelihood unbounded (reg_covar 0,
    mclust's default): a clear error naming it and the fix, not NumPy's LinAlgError or a
    silent infinite statistic."""
    first = np.random.default_rng(0).normal(size=40)
    x = np.c_[first, np.ones(40) if column == "constant" else first]
    with pytest.raises(ValueError, match=message + ".*reg_covar > 0"):
        bootstrap_likelihood_ratio(x, covariance_type, max_components=1, n_boot=9)


# ---- live: R's mclust ------------------------------------------------------------


def test_live_mclust_observed_statistic(faithful_test):
    """mclust itself, when R and mclust are installed: its observed LRTS of faithful
    (VVV, 1 against 2) is ours."""
    if shutil.which("Rscript") is None:
        pytest.skip("Rscript is not installed (apt-get install r-cran-mclust)")
    script = (
        "suppressPackageStartupMessages(library(mclust)); set.seed(0); "
        "r <- mclustBootstrapLRT(datasets::faithful, modelName = 'VVV', maxG = 1, "
        "nboot = 9, verbose = FALSE); cat(sprintf('%.10f', r$obs))"
    )
    run = subprocess.run(["Rscript", "-e", script], capture_output=True, text=True, timeout=300)
    if run.returncode != 0 and "mclust" in run.stderr:
        pytest.skip(f"R's mclust is not installed: {run.stderr.strip()[:200]}")
    assert run.returncode == 0, run.stderr
    observed = float(run.stdout.strip().split()[-1])
    np.testing.assert_allclose(faithful_test.statistic[0], observed, atol=1e-2)
