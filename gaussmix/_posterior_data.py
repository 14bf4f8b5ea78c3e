"""What :meth:`gaussmix.GaussianMixture.sample_posterior` passes to NUTS for imperfect data.

The estimator's ``nan_policy``, a fitted uniform ``background`` and the
``measurement_covariances`` of the call become the arguments of
:func:`gaussmix.inference.mcmc.sample_mixture` (whose program scores each row by its
marginal density, :mod:`gaussmix.models.imperfect_data`), and the fitted parameters its
chains' starting point:

* ``nan_policy="marginalize"``: rows with NaN stay, their missing entries marginalized;
  ``"omit"``: the rows holding NaN are dropped (with their ``sample_weight`` and
  measurement covariances); ``"raise"``: NaN is an error.
* ``background="uniform"``: the background's density is the fitted :math:`1/V`
  (``background_volume_``) and its weight starts at ``background_weight_``.
"""

import numpy as np

from gaussmix._base import validate_data

__all__ = ["posterior_arguments"]


def _rows(value, keep: np.ndarray | None, n_rows: int):
    """``value``'s rows that ``keep`` selects (when it has one per row of X)."""
    if value is None or keep is None:
        return value
    value = np.asarray(value)
    if value.shape[:1] != (n_rows,):
        return value  # the wrong shape is refused downstream, naming the expected one
    return value[keep]


def posterior_arguments(estimator, X, sample_weight, measurement_covariances):
    """``(X, keyword arguments of sample_mixture, init)`` of a fitted estimator.

    Returns:
        The validated rows (NaN dropped under "omit"), the keyword arguments
        ``sample_weight``, ``nan_policy``, ``measurement_covariances`` and
        ``background_volume``, and the starting point (``params_``, with
        ``background_weight`` after a background's fit).
    """
    policy = estimator.nan_policy
    X = validate_data(estimator, X, reset=False, allow_nan=policy != "raise")
    keep = None
    if policy == "omit" and np.isnan(X).any():
        keep = ~np.isnan(X).any(axis=1)
        if not keep.any():
            raise ValueError(
                "Every row of X holds a NaN, and nan_policy='omit' drops such rows: no "
                "data is left to sample the posterior of; use nan_policy='marginalize'."
            )
    n_rows = X.shape[0]
    arguments = {
        "sample_weight": _rows(sample_weight, keep, n_rows),
        "measurement_covariances": _rows(measurement_covariances, keep, n_rows),
    }
    if keep is not None:
        X = X[keep]
    if policy == "marginalize":
        arguments["nan_policy"] = "marginalize"
    # NumPy: jnp.asarray would compile a copy program per parameter shape
    init = {name: np.asarray(value, X.dtype) for name, value in estimator.params_.items()}
    if hasattr(estimator, "background_log_density_"):
        arguments["background_volume"] = float(np.exp(-estimator.background_log_density_))
        init["background_weight"] = np.asarray(estimator.background_weight_, X.dtype)
    return X, arguments, init
