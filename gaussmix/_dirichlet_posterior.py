"""NUTS posterior of a fitted ``BayesianGaussianMixture``: its Dirichlet-process or
Dirichlet program, its hyperparameters, started from its variational fit.

:func:`sample_posterior` is what ``BayesianGaussianMixture.sample_posterior`` calls. The
program follows ``weight_concentration_prior_type``: "dirichlet_process" samples
:func:`gaussmix.models.dirichlet_mixture.dirichlet_process_mixture` (stick-breaking,
:math:`v_k \\sim \\mathrm{Beta}(1, \\alpha_0)`), "dirichlet_distribution"
:func:`~gaussmix.models.dirichlet_mixture.dirichlet_mixture` with
:math:`\\pi \\sim \\mathrm{Dirichlet}(\\alpha_0, \\ldots, \\alpha_0)` (its total
concentration :math:`K\\alpha_0`), :math:`\\alpha_0` being the estimator's
``weight_concentration_prior_``. The means and covariances take the program's conjugate
prior with the estimator's hyperparameters (``mean_prior_``, ``mean_precision_prior_``,
``degrees_of_freedom_prior_``, ``covariance_prior_``):
:math:`\\Sigma_k \\sim \\mathcal{W}^{-1}(\\nu_0, W_0^{-1})`,
:math:`\\mu_k \\mid \\Sigma_k \\sim \\mathcal{N}(m_0, \\Sigma_k / \\beta_0)`, the
variational model's prior (per-feature inverse gammas for diag and spherical). The chains
start from the variational fit (``weights_``, ``means_``, ``covariances_``), whose unused
components already have weights near zero, so NUTS need not empty them.
"""

import numpy as np
from jax.typing import ArrayLike

from gaussmix._base import seed_from_random_state
from gaussmix.models.priors import COVARIANCE_SITES, MixturePriorParameters, covariance_layout

__all__ = ["sample_posterior"]


def sample_posterior(
    estimator,
    X: ArrayLike,
    *,
    num_warmup: int = 1000,
    num_samples: int = 1000,
    num_chains: int = 4,
    random_state=None,
    progress_bar: bool | None = None,
    sample_weight: ArrayLike | None = None,
    weight_threshold: float = 0.01,
    nuts_options=None,
):
    """NUTS on the estimator's Dirichlet-process (or Dirichlet) program (module docstring).

    Args:
        estimator: a ``BayesianGaussianMixture``, fitted here on ``X`` if it is not.
        X: (N, D) data without NaN.
        num_warmup, num_samples, num_chains, progress_bar: NUTS settings.
        random_state: None, int or RandomState seeding the chains (default: the
            estimator's ``random_state``).
        sample_weight: (N,) non-negative weights of the rows' log-likelihoods.
        weight_threshold: ``weighted_components`` counts the weights above it.
        nuts_options: ``target_accept_prob``, ``max_tree_depth``, ``dense_mass`` (raise
            the first, e.g. to 0.95, when near-empty components make divergences).

    Returns:
        The DataTree of
        :func:`gaussmix.inference.dirichlet_sampling.sample_dirichlet_mixture`: its
        ``posterior`` holds ``occupied_components`` and ``weighted_components`` (chain,
        draw), the posterior of the number of components.
    """
    from gaussmix.inference.dirichlet_sampling import sample_dirichlet_mixture

    if not estimator.__sklearn_is_fitted__():
        estimator.fit(X, sample_weight=sample_weight)
    X = np.asarray(X)
    if X.ndim != 2 or X.shape[1] != estimator.means_.shape[1]:
        raise ValueError(
            f"X must have shape (N, {estimator.means_.shape[1]}), the fitted features; got "
            f"shape {X.shape}."
        )
    if not np.all(np.isfinite(X)):
        raise ValueError("X contains NaN or infinity; remove or impute those rows first.")
    dtype = estimator.means_.dtype
    X = X.astype(dtype)
    layout = covariance_layout(estimator.covariance_type)
    n_components = int(estimator.n_components)
    prior_type = estimator.weight_concentration_prior_type
    alpha = float(estimator.weight_concentration_prior_)
    concentration = alpha if prior_type == "dirichlet_process" else alpha * n_components
    prior_parameters = MixturePriorParameters(
        weight_concentration=np.asarray(1.0, dtype),  # unused: the weights' prior is set
        mean_prior=np.asarray(estimator.mean_prior_, dtype),
        mean_precision=np.asarray(estimator.mean_precision_prior_, dtype),
        degrees_of_freedom=np.asarray(estimator.degrees_of_freedom_prior_, dtype),
        covariance_prior=np.asarray(estimator.covariance_prior_, dtype),
    )
    weights = np.asarray(estimator.weights_, dtype)
    init = {
        "weights": weights / weights.sum(),
        "means": np.asarray(estimator.means_, dtype),
        COVARIANCE_SITES[layout]: np.asarray(estimator.covariances_, dtype),
    }
    seed = seed_from_random_state(estimator.random_state if random_state is None else random_state)
    return sample_dirichlet_mixture(
        X,
        max_components=n_components,
        weight_concentration_prior_type=prior_type,
        concentration=concentration,
        covariance_type=layout,
        prior_parameters=prior_parameters,
        sample_weight=sample_weight,
        num_warmup=num_warmup,
        num_samples=num_samples,
        num_chains=num_chains,
        seed=seed,
        progress_bar=progress_bar,
        init=init,
        weight_threshold=weight_threshold,
        nuts_options=nuts_options,
    )
