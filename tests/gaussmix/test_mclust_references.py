"""gaussmix's model selection against R's mclust 6.0 (issue 18).

The reference numbers are committed (``tests/references/mclust/*.json``, written by
``Rscript scripts/mclust_reference.R``: mclust's BIC and ICL tables of 14 models x K = 1..9
on iris, faithful, diabetes, banknote and wreath, its parameter counts, and its fits of
VVV, EEE, VVI, VII, the models scikit-learn calls full, tied, diag, spherical), so these
tests run without R; the last one runs ``Rscript`` itself when it is installed.

mclust's BIC is :math:`2 \\log L - p \\log n` (higher is better); gaussmix's is minus that.
Which of mclust's models gaussmix has is read at run time from the estimator's registry
(``gaussmix.models.priors.COVARIANCE_LAYOUTS``: mclust's names, VVV, EEE, VVI, VII being
full, tied, diag, spherical).
"""

import json
import shutil
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pytest

from gaussmix import GaussianMixture, select_components
from gaussmix.inference import em
from gaussmix.models import priors
from gaussmix.selection import integrated_completed_likelihood

REFERENCES = Path(__file__).resolve().parents[1] / "references" / "mclust"
DATASETS = ("iris", "faithful", "diabetes", "banknote", "wreath")
SKLEARN_NAMES = dict(priors.COVARIANCE_ALIASES)  # "VVV" -> "full", ...


def reference(name: str) -> dict:
    return json.loads((REFERENCES / f"{name}.json").read_text())


def gaussmix_name(mclust_model: str) -> str | None:
    """gaussmix's name of an mclust model, or None when the estimator lacks it."""
    return mclust_model if mclust_model in priors.COVARIANCE_LAYOUTS else None


def estimator_at(covariance_type: str, fit: dict, x: np.ndarray) -> GaussianMixture:
    """A GaussianMixture holding mclust's fitted parameters exactly (``max_iter=0``
    keeps the starting values, which are mclust's; no EM step runs)."""
    weights = np.asarray(fit["pro"], dtype=np.float64)
    means = np.asarray(fit["mean"], dtype=np.float64)
    sigma = np.asarray(fit["sigma"], dtype=np.float64)  # (K, D, D)
    precisions = {
        "full": np.linalg.inv(sigma),
        "tied": np.linalg.inv(sigma[0]),
        "diag": 1.0 / np.diagonal(sigma, axis1=1, axis2=2),
        "spherical": 1.0 / sigma[:, 0, 0],
    }[covariance_type]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", em.ConvergenceWarning)
        return GaussianMixture(
            len(weights),
            covariance_type=covariance_type,
            max_iter=0,
            weights_init=weights / weights.sum(),
            means_init=means,
            precisions_init=precisions,
        ).fit(x)


def test_references_are_mclusts_tables():
    """The committed files are what the tests assume: mclust's 14 models, K = 1..9, the
    data of the stated size, and log L = (BIC + p log n) / 2 consistent with each fit."""
    for name in DATASETS:
        record = reference(name)
        x = np.asarray(record["data"])
        assert x.shape == (record["n"], record["d"])
        assert len(record["models"]) == 14 and record["G"] == list(range(1, 10))
        bic = np.asarray(record["bic"], dtype=float)
        assert bic.shape == (9, 14) and np.isfinite(bic).mean() > 0.9
        for model, cells in record["fits"].items():
            column = record["models"].index(model)
            for row, fit in enumerate(cells):
                if fit is not None:
                    np.testing.assert_allclose(fit["bic"], bic[row, column], rtol=1e-12)
                    np.testing.assert_allclose(
                        fit["loglik"], record["loglik"][row][column], rtol=1e-12
                    )


def test_parameter_counts_are_mclusts():
    """For every model gaussmix has, em.n_parameters equals mclust's nMclustParams."""
    checked = 0
    for name in DATASETS:
        record = reference(name)
        for column, model in enumerate(record["models"]):
            ours = gaussmix_name(model)
            if ours is None:
                continue
            for row, k in enumerate(record["G"]):
                expected = record["n_parameters"][row][column]
                assert em.n_parameters(ours, k, record["d"]) == expected, (name, model, k)
                checked += 1
    assert checked >= len(DATASETS) * 4 * 9


@pytest.mark.parametrize("name", DATASETS)
def test_bic_and_icl_at_mclusts_fit_are_mclusts(name):
    """At mclust's own fitted parameters (VVV, EEE, VVI, VII, every K), gaussmix's
    log-likelihood, BIC and ICL are mclust's with the opposite sign, as mclust computes
    them at those parameters (``dens``, ``estep``, ``bic``, ``icl``: the ``*_at``
    numbers; the log L and z that mclust reports belong to the iterate before its last
    M-step). The log-likelihood is a sum of n <= 1000 log densities computed two ways
    (mclust's Fortran, gaussmix's features): sqrt(n) eps relative ~ 1e-14, more for the
    nearly singular fits of large K; the BIC adds p log n, so equal log L and equal BIC
    mean equal parameter counts; the ICL adds the log responsibility of each point's
    most probable component. 1e-9 relative."""
    record = reference(name)
    x = np.asarray(record["data"], dtype=np.float64)
    checked = 0
    for model, cells in record["fits"].items():
        for fit in cells:
            if fit is None:
                continue
            estimator = estimator_at(SKLEARN_NAMES[model], fit, x)
            log_likelihood = float(np.sum(estimator.score_samples(x)))
            np.testing.assert_allclose(log_likelihood, fit["loglik_at"], rtol=1e-9)
            np.testing.assert_allclose(estimator.bic(x), -fit["bic_at"], rtol=1e-9)
            icl = integrated_completed_likelihood(estimator, x)
            np.testing.assert_allclose(icl, -fit["icl_at"], rtol=1e-9)
            checked += 1
    assert checked >= 30


def bic_table_against_mclust(name: str) -> tuple[int, int, list[str]]:
    """gaussmix's BIC table (its default start, EM run to its optimum) against mclust's:
    (cells where gaussmix is at least as good, cells compared, the others)."""
    record = reference(name)
    x = np.asarray(record["data"], dtype=np.float64)
    pairs = [(m, gaussmix_name(m)) for m in record["models"] if gaussmix_name(m) is not None]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", em.ConvergenceWarning)
        table, _ = select_components(
            x, record["G"], [ours for _, ours in pairs], seed=0, tol=1e-8, max_iter=10_000
        )
    mclust_bic = -np.asarray(record["bic"], dtype=float)
    good, compared, worse = 0, 0, []
    for column, (model, _) in enumerate(pairs):
        expected = mclust_bic[:, record["models"].index(model)]
        for row, k in enumerate(record["G"]):
            if np.isnan(expected[row]):  # mclust failed: nothing to match
                continue
            compared += 1
            ours = table.criterion[row, column]
            if np.isfinite(ours) and ours <= expected[row] + 1e-6 * abs(expected[row]):
                good += 1
            else:
                worse.append(f"{name} {model} K={k}: {ours:.2f} vs mclust {expected[row]:.2f}")
    return good, compared, worse


@pytest.mark.slow
@pytest.mark.xfail(
    strict=True,
    reason="issue 18 item 3 (a start as good as mclust's hc) is not done: measured "
    "2026-12-06 with the default k-means start (n_init=1, tol 1e-8): VVV/EEE/VVI/VII on "
    "the five sets 132 of 177 cells (74.6 %) as good as mclust's, the others worse by "
    "0.05 to 191; all 14 models on iris 110 of 121 (90.9 %)",
)
def test_bic_at_the_optimum_is_at_least_mclusts_in_95_percent_of_cells():
    """Issue 18's criterion: in >= 95 % of the cells (data set x model x K where mclust
    has a value), gaussmix's BIC, EM run to convergence (tol 1e-8) from its default
    start, is at least as good as mclust's (within 1e-6 relative: mclust stops EM at a
    relative change of 1e-5 in log L, so its values are at most that far below its
    optimum). A cell where gaussmix fails and mclust does not counts against gaussmix."""
    good, compared, worse = 0, 0, []
    for name in DATASETS:
        g, c, w = bic_table_against_mclust(name)
        good, compared, worse = good + g, compared + c, worse + w
    assert compared >= len(DATASETS) * 4 * 9 - 12
    assert good >= 0.95 * compared, (
        f"{good}/{compared} cells ({100 * good / compared:.1f} %) as good as mclust; "
        "worse: " + "; ".join(worse)
    )


# --------------------------------------------------------------------------------------
# Live: mclust itself, when R and mclust are installed.

LIVE_SCRIPT = r"""
suppressPackageStartupMessages(library(mclust))
x <- as.matrix(read.csv(commandArgs(trailingOnly = TRUE)[[1]], header = FALSE))
bic <- mclustBIC(x, G = 1:3, modelNames = c("VVV", "EEE", "VVI", "VII"), verbose = FALSE)
for (model in c("VVV", "EEE", "VVI", "VII")) for (g in 1:3) {
  fit <- summary(bic, x, G = g, modelNames = model)
  p <- fit$parameters
  loglik <- sum(log(dens(data = x, modelName = model, parameters = p)))
  z <- estep(data = x, modelName = model, parameters = p)$z
  at <- bic(model, loglik, nrow(x), ncol(x), g)
  icl <- mclust:::icl.Mclust(list(n = nrow(x), z = z, bic = at))
  cat(model, g, sprintf("%.17g", c(loglik, at, icl, fit$bic, nMclustParams(model, ncol(x), g),
      p$pro, p$mean, p$variance$sigma)),  # column-major: NumPy (K, d) and (K, d, d)
      "\n")
}
"""


def test_live_mclust_on_a_small_sample(tmp_path):
    """R's mclust on 120 points of three blobs (K = 1..3, four models): at each of
    mclust's fits gaussmix's log-likelihood, BIC, ICL (as mclust computes them at those
    parameters) and parameter count are mclust's, and gaussmix's own fit is at least as
    good as mclust's tabled BIC (1e-6 relative)."""
    if shutil.which("Rscript") is None:
        pytest.skip("Rscript is not installed (apt-get install r-cran-mclust)")
    probe = subprocess.run(
        ["Rscript", "-e", "library(mclust)"], capture_output=True, text=True, check=False
    )
    if probe.returncode != 0:
        pytest.skip("R's mclust is not installed (apt-get install r-cran-mclust)")
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(size=(40, 2)) + c for c in ([0, 0], [5, 0], [0, 5])])
    np.savetxt(tmp_path / "x.csv", x, delimiter=",", fmt="%.17g")
    (tmp_path / "live.R").write_text(LIVE_SCRIPT)
    output = subprocess.run(
        ["Rscript", str(tmp_path / "live.R"), str(tmp_path / "x.csv")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rows = [line.split() for line in output.strip().splitlines()]
    assert len(rows) == 12
    models = [SKLEARN_NAMES[m] for m in ("VVV", "EEE", "VVI", "VII")]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", em.ConvergenceWarning)
        table, _ = select_components(x, [1, 2, 3], models, seed=0, tol=1e-8, max_iter=10_000)
    for model, k, *numbers in rows:
        k, values = int(k), np.asarray(numbers, dtype=np.float64)
        loglik, bic, icl, reported_bic, n_parameters = values[:5]
        pro, rest = values[5 : 5 + k], values[5 + k :]
        fit = {"pro": pro, "mean": rest[: 2 * k].reshape(k, 2), "sigma": rest[2 * k :]}
        fit["sigma"] = fit["sigma"].reshape(k, 2, 2)
        ours = SKLEARN_NAMES[model]
        estimator = estimator_at(ours, fit, x)
        assert em.n_parameters(ours, k, 2) == n_parameters
        np.testing.assert_allclose(np.sum(estimator.score_samples(x)), loglik, rtol=1e-9)
        np.testing.assert_allclose(estimator.bic(x), -bic, rtol=1e-9)
        np.testing.assert_allclose(integrated_completed_likelihood(estimator, x), -icl, rtol=1e-9)
        cell = table.criterion[k - 1, models.index(ours)]
        assert cell <= -reported_bic + 1e-6 * abs(reported_bic), (model, k, cell, -reported_bic)
