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


#: The K whose mclust fits test_bic_and_icl_at_mclusts_fit_are_mclusts evaluates.
CHECKED_K = (1, 3, 9)


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
        for k, fit in zip(record["G"], cells, strict=True):
            # K = 1 (closed form), 3 and 9 (the nearly singular fits): each K compiles
            # its own programs, and the other K add no kind of check.
            if fit is None or k not in CHECKED_K:
                continue
            estimator = estimator_at(SKLEARN_NAMES[model], fit, x)
            log_likelihood = float(np.sum(estimator.score_samples(x)))
            np.testing.assert_allclose(log_likelihood, fit["loglik_at"], rtol=1e-9)
            np.testing.assert_allclose(estimator.bic(x), -fit["bic_at"], rtol=1e-9)
            icl = integrated_completed_likelihood(estimator, x)
            np.testing.assert_allclose(icl, -fit["icl_at"], rtol=1e-9)
            checked += 1
    assert checked >= 10


# The whole table (issue 18's criterion: gaussmix's BIC at its optimum at least mclust's in
# 95 % of the cells of five data sets, four classic models, K = 1..9) is measured by
# scripts/hc_start_bic.py, not here: its 180 fits compile 180 programs, minutes of the
# suite, and in one process they once exhausted the memory mappings. Measured
# 2026-12-06: from the hc start 171 of 177 cells (96.6 %), from the default k-means start
# 132 (74.6 %). tests/gaussmix/test_hc_start.py checks mclust's default model (VVV) on
# every data set.


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
