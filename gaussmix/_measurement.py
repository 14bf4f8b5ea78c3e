"""Measurement errors in :class:`gaussmix.GaussianMixture` (extreme deconvolution): the
estimator's side of :mod:`gaussmix.inference.em.deconvolution`.

With ``measurement_covariances=S`` the fit maximizes the likelihood of the noisy rows
under :math:`\\Sigma_k + S_n`, and ``means_``/``covariances_`` describe the error-free
distribution. Scoring, predicting and labelling with ``S`` give the answers about the
noisy rows (under :math:`\\Sigma_k + S_n`); without it, about error-free points. In
memory on one device, with ``devices`` (:func:`gaussmix.inference.shard.fit_em_sharded`)
and on data read by chunks (:func:`gaussmix.inference.streaming.fit_em_chunked`, the
covariances read alongside the rows).
"""

import numpy as np

from gaussmix import _background as background
from gaussmix.inference import em
from gaussmix.inference.em import deconvolution
from gaussmix.models.priors import COVARIANCE_LAYOUTS

__all__ = ["icl", "kept_rows", "log_responsibilities"]

NAME = "measurement_covariances"


def kept_rows(value, X: np.ndarray, nan_policy: str):
    """``value`` (S of the rows of ``X``) restricted to the rows that ``nan_policy="omit"``
    keeps (rows without NaN); unchanged otherwise (its shape checked later)."""
    if value is None or nan_policy != "omit":
        return value
    value = np.asarray(value)
    if value.shape[:1] != X.shape[:1]:
        return value
    return value[~np.isnan(X).any(axis=1)]


def log_responsibilities(estimator, X: np.ndarray, value) -> tuple[np.ndarray, np.ndarray]:
    """Log-likelihood (n,) and log responsibilities (n, K) of validated rows ``X`` observed
    with errors ``value`` (S, (n, D, D) or (n, D)): under :math:`\\Sigma_k + S_n`, from
    the observed coordinates of rows with NaN (``nan_policy="marginalize"``); (n, K + 1)
    with a fitted background (its column last, unchanged by the errors)."""
    holes = np.isnan(X)
    if holes.any():
        if estimator.nan_policy != "marginalize":
            raise ValueError(
                f"Input X contains NaN, and this {type(estimator).__name__} was built with "
                f"nan_policy={estimator.nan_policy!r}; set nan_policy='marginalize' to score "
                "rows with missing entries from their observed coordinates."
            )
        empty = np.flatnonzero(holes.all(axis=1))
        if empty.size:
            raise ValueError(
                f"{empty.size} row(s) of X have no observed entry (all NaN; first: row "
                f"{int(empty[0])}); a row needs at least one observed value to be scored."
            )
    noise = deconvolution.as_measurement_covariances(value, X, NAME)
    parameters = em.MixtureParameters(
        estimator.weights_,
        estimator.means_,
        estimator.covariances_,
        estimator.precisions_cholesky_,
    )
    norm, log_resp = deconvolution.measurement_log_responsibilities(
        X, noise, parameters, COVARIANCE_LAYOUTS[estimator.covariance_type]
    )
    broken = np.isnan(log_resp).any(axis=1) | ~np.isfinite(norm)
    if broken.any():
        first = int(np.flatnonzero(broken)[0])
        raise ValueError(
            f"overflow in {X.dtype}: the log-likelihood of {int(broken.sum())} row(s) of X "
            f"(first: row {first}) under the fitted components plus its measurement error "
            f"is beyond the range of {X.dtype}; " + em.precision_advice(X.dtype)
        )
    return background.marginal(estimator, X, norm, log_resp)  # a fitted background's column


def icl(estimator, X, value) -> float:
    """mclust's ICL of noisy rows ``X``: the BIC under :math:`\\Sigma_k + S_n` plus
    :math:`-2 \\sum_n \\log z_{n, \\hat k(n)}` of their responsibilities."""
    norm, log_resp = log_responsibilities(estimator, estimator._validate_rows(X), value)
    n_samples, n_features = log_resp.shape[0], estimator.means_.shape[1]
    n_parameters = em.n_parameters(
        estimator.covariance_type, int(estimator.n_components), int(n_features)
    ) + background.extra_parameters(estimator)
    bic = -2.0 * float(np.sum(norm, dtype=np.float64)) + n_parameters * np.log(n_samples)
    largest = np.max(log_resp, axis=1).astype(np.float64)
    return bic - 2.0 * float(np.sum(np.minimum(largest, 0.0)))
