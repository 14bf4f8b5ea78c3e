"""Choose the number of mixture components by an information criterion.

.. math::

    \\mathrm{BIC} = -2 \\log L + p \\log W,\\qquad \\mathrm{AIC} = -2 \\log L + 2p,

with :math:`\\log L = \\sum_n w_n \\log p(x_n \\mid \\hat\\theta)`, :math:`W = \\sum_n w_n`
(N without weights, scikit-learn's ``bic`` / ``aic``) and p free parameters
(:func:`gaussmix.inference.em.n_parameters`). Lower is better.

``criterion="loo"`` samples the posterior of every K by NUTS
(:func:`gaussmix.inference.mcmc.sample_mixture`, chains started at that K's fitted
estimator, draws in its labelling) and scores it by PSIS-LOO on the deviance scale,
:math:`\\mathrm{LOOIC} = -2\\,\\widehat{\\mathrm{elpd}}_{\\mathrm{loo}}` (lower is
better); the posteriors are kept for :func:`gaussmix.compare`.
"""

from collections.abc import Iterable, Mapping
from typing import NamedTuple

import numpy as np
from jax.typing import ArrayLike

from gaussmix._base import seed_from_random_state, validate_data
from gaussmix.inference import em
from gaussmix.inference.deprecation import UNSET, renamed_keyword
from gaussmix.mixture import GaussianMixture

__all__ = ["CRITERIA", "SelectionTable", "select_components"]

#: Criteria :func:`select_components` knows.
CRITERIA = ("bic", "aic", "loo")


class SelectionTable(NamedTuple):
    """One row per candidate K.

    Attributes:
        n_components: (M,) the candidate K.
        criterion: (M,) the criterion's value (lower is better).
        log_likelihood: (M,) total (weighted) log-likelihood at the fitted parameters.
        converged: (M,) whether EM converged.
        criterion_name: "bic", "aic" or "loo".
        posteriors: for "loo", the (M,) posterior DataTrees, else empty; each is
            labelled like the EM fit of its K (started at its ``params_``).
    """

    n_components: np.ndarray
    criterion: np.ndarray
    log_likelihood: np.ndarray
    converged: np.ndarray
    criterion_name: str
    posteriors: tuple = ()


def select_components(
    X: ArrayLike,
    n_components: Iterable[int] = range(1, 21),
    covariance_type: str = "full",
    criterion: str = "bic",
    *,
    sample_weight: ArrayLike | None = None,
    mcmc_options: Mapping | None = None,
    seed=None,
    random_state=UNSET,
    **estimator_parameters,
) -> tuple[SelectionTable, GaussianMixture]:
    """Fit a :class:`~gaussmix.GaussianMixture` for every K and keep the best by BIC/AIC.

    Each K is one compiled fit (its shapes differ); the restarts of each are vmapped.

    Args:
        X: (N, D) data.
        n_components: candidate numbers of components (each >= 1 and <= N).
        covariance_type: "full", "tied", "diag" or "spherical".
        criterion: "bic", "aic" or "loo" (NUTS for every K, then PSIS-LOO).
        sample_weight: (N,) weights of the points.
        mcmc_options: for "loo", arguments of
            :func:`~gaussmix.inference.mcmc.sample_mixture` (``num_warmup``,
            ``num_samples``, ``num_chains``, ``progress_bar``, ``prior_parameters``; not
            ``init``: each K starts at its fitted estimator).
        seed: None, an int (or a NumPy ``RandomState`` / ``Generator``) seeding every
            K's initialization (the estimator's ``random_state``) and, for "loo", the
            chains.
        random_state: deprecated spelling of ``seed`` (a FutureWarning).
        **estimator_parameters: passed to :class:`~gaussmix.GaussianMixture` (``n_init``,
            ``max_iter``, ``tol``, ``priors``, ...).

    Returns:
        The :class:`SelectionTable` and the fitted estimator with the smallest criterion
        (the smallest K among ties).

    Example:
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> X = np.concatenate([rng.normal(m, 0.5, (100, 2)) for m in (-4, 0, 4)])
        >>> table, best = select_components(X, range(1, 5), seed=0)
        >>> best.n_components, table.n_components.tolist()
        (3, [1, 2, 3, 4])
    """
    if criterion not in CRITERIA:
        raise ValueError(
            f"Unknown criterion {criterion!r}; select_components knows {list(CRITERIA)} "
            "(choose 'bic', 'aic' or 'loo')."
        )
    candidates = [k for k in n_components]
    if not candidates:
        raise ValueError("n_components is empty; give the candidate numbers of components.")
    for k in candidates:
        if not isinstance(k, int | np.integer) or isinstance(k, bool) or k < 1:
            raise ValueError(f"Every candidate in n_components must be an int >= 1, got {k!r}.")
    if "n_components" in estimator_parameters or "covariance_type" in estimator_parameters:
        raise ValueError("Give n_components and covariance_type as arguments of select_components.")
    seed = renamed_keyword("select_components", "random_state", random_state, "seed", seed, None)
    estimator_parameters = {**estimator_parameters, "random_state": seed}
    if criterion == "loo":
        return _select_by_loo(
            X, candidates, covariance_type, sample_weight, mcmc_options, estimator_parameters
        )
    values, log_likelihoods, converged, fitted = [], [], [], []
    for k in candidates:
        estimator = GaussianMixture(int(k), covariance_type=covariance_type, **estimator_parameters)
        estimator.fit(X, sample_weight=sample_weight)
        data = validate_data(estimator, X, reset=False)
        log_likelihood, total = _total_log_likelihood(estimator, data, sample_weight)
        n_parameters = em.n_parameters(covariance_type, int(k), data.shape[1])
        penalty = n_parameters * np.log(total) if criterion == "bic" else 2.0 * n_parameters
        values.append(-2.0 * log_likelihood + penalty)
        log_likelihoods.append(log_likelihood)
        converged.append(estimator.converged_)
        fitted.append(estimator)
    return _table_and_best(candidates, values, log_likelihoods, converged, fitted, criterion)


def _total_log_likelihood(estimator, data, sample_weight) -> tuple[float, float]:
    """(Weighted) log-likelihood of the data at the fitted parameters, and the total
    weight (the number of points without weights)."""
    per_point = estimator.score_samples(data)
    if sample_weight is None:
        return float(np.sum(per_point)), float(data.shape[0])
    weight = np.asarray(sample_weight, dtype=np.float64)
    return float(np.sum(weight * per_point)), float(weight.sum())


def _table_and_best(candidates, values, log_likelihoods, converged, fitted, criterion, **extra):
    """The selection table and the estimator of the lowest criterion (ties: smallest K)."""
    table = SelectionTable(
        n_components=np.asarray(candidates, dtype=np.int64),
        criterion=np.asarray(values),
        log_likelihood=np.asarray(log_likelihoods),
        converged=np.asarray(converged, dtype=bool),
        criterion_name=criterion,
        **extra,
    )
    order = np.lexsort((table.n_components, table.criterion))
    return table, fitted[int(order[0])]


# --------------------------------------------------------------------------------------
# criterion="loo" (the NUTS back end, gaussmix.inference.mcmc).


def _select_by_loo(X, candidates, covariance_type, sample_weight, mcmc_options, parameters):
    """Every K: EM fit (the returned estimator), NUTS posterior, LOOIC = -2 elpd_loo."""
    import warnings

    import arviz_stats

    from gaussmix.inference.mcmc import sample_mixture

    options = {"num_warmup": 1000, "num_samples": 1000, "num_chains": 4, **(mcmc_options or {})}
    if "init" in options:
        raise ValueError(
            "mcmc_options cannot hold 'init': the chains of every K start at its fitted "
            "estimator's params_."
        )
    priors = parameters.get("priors")
    seed = seed_from_random_state(parameters.get("random_state"))
    values, log_likelihoods, converged, fitted, posteriors = [], [], [], [], []
    for k in candidates:
        estimator = GaussianMixture(int(k), covariance_type=covariance_type, **parameters)
        estimator.fit(X, sample_weight=sample_weight)
        data = validate_data(estimator, X, reset=False)
        # Chains start at the fitted parameters and the draws keep their labelling, so
        # posteriors[i]["means"][..., k, :] belongs to the estimator's component k.
        init = {name: np.asarray(value, data.dtype) for name, value in estimator.params_.items()}
        tree = sample_mixture(
            data,
            n_components=int(k),
            covariance_type=covariance_type,
            priors=priors if isinstance(priors, Mapping) else None,
            sample_weight=sample_weight,
            seed=seed,
            init=init,
            **options,
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # high Pareto k: see diagnose()
            loo = arviz_stats.loo(tree)
        values.append(-2.0 * float(loo.elpd))
        log_likelihoods.append(_total_log_likelihood(estimator, data, sample_weight)[0])
        converged.append(estimator.converged_)
        fitted.append(estimator)
        posteriors.append(tree)
    return _table_and_best(
        candidates,
        values,
        log_likelihoods,
        converged,
        fitted,
        "loo",
        posteriors=tuple(posteriors),
    )
