"""Choose the number of mixture components and the covariance model by an information
criterion, as mclust's ``mclustBIC`` / ``mclustICL`` do.

.. math::

    \\mathrm{BIC} = -2 \\log L + p \\log W,\\qquad \\mathrm{AIC} = -2 \\log L + 2p,\\qquad
    \\mathrm{ICL} = \\mathrm{BIC} - 2 \\sum_n w_n \\log z_{n, \\hat k(n)},

with :math:`\\log L = \\sum_n w_n \\log p(x_n \\mid \\hat\\theta)`, :math:`W = \\sum_n w_n`
(N without weights, scikit-learn's ``bic`` / ``aic``), p free parameters
(:func:`gaussmix.inference.em.n_parameters`, mclust's counts) and
:math:`z_{n k}` the responsibilities at the fitted parameters,
:math:`\\hat k(n) = \\arg\\max_k z_{n k}`. Lower is better for all three: they are
mclust's BIC and ICL times -1 (mclust maximises :math:`2 \\log L - p \\log n`).

The ICL is mclust's (``icl``, ``mclustICL``): the BIC approximation of the integrated
*completed* likelihood of Biernacki, Celeux & Govaert (2000, IEEE TPAMI 22(7), 719-725),
with the unknown labels replaced by their maximum a posteriori assignment, so the BIC
is penalised by :math:`-2 \\sum_n \\log z_{n,\\hat k(n)} \\ge 0`, the cost of
assigning points that the mixture leaves ambiguous (mclust's ``icl.Mclust``:
``bic + 2 * sum(C * log(z))``, C the MAP labels). A variant with the soft entropy
:math:`-\\sum_{n k} z_{nk} \\log z_{nk}` in place of the MAP term also circulates
(e.g. in McLachlan & Peel, Finite Mixture Models, 2000); it is not this one.

``criterion="loo"`` samples the posterior of every K by NUTS
(:func:`gaussmix.inference.mcmc.sample_mixture`, chains started at that K's fitted
estimator, draws in its labelling) and scores it by PSIS-LOO on the deviance scale,
:math:`\\mathrm{LOOIC} = -2\\,\\widehat{\\mathrm{elpd}}_{\\mathrm{loo}}` (lower is
better); the posteriors are kept for :func:`gaussmix.compare`.
"""

import threading
import warnings
from collections.abc import Iterable, Mapping
from typing import NamedTuple

import jax
import numpy as np
from jax.typing import ArrayLike

from gaussmix._base import (
    check_is_fitted,
    convergence_warning_class,
    seed_from_random_state,
    validate_data,
)
from gaussmix.inference import em
from gaussmix.inference.deprecation import UNSET, renamed_keyword
from gaussmix.inference.em import candidates as candidates_em
from gaussmix.inference.em.features import block_size
from gaussmix.inference.em.hierarchical import start_labels_of_each
from gaussmix.inference.em.results import raise_on_failure
from gaussmix.mixture import GaussianMixture
from gaussmix.models import priors

__all__ = [
    "CRITERIA",
    "CriterionTable",
    "SelectionTable",
    "covariance_models",
    "integrated_completed_likelihood",
    "select_components",
]

#: Most features for which :func:`select_components` starts from mclust's hc by default:
#: the clustering (NumPy, up to 2 000 rows) costs about rows^2 D^2 (2 000 x 5: 2 s of
#: CPU; 1 000 x 20: 3.5 s; digits, 1 797 x 41: 85 s, where k-means and EM take 4 s), and
#: the evidence that it beats k-means (BENCHMARKS.md) is for D <= 8.
HC_DEFAULT_MAX_FEATURES = 10
#: Criteria :func:`select_components` knows.
CRITERIA = ("bic", "aic", "icl", "loo")


class SelectionTable(NamedTuple):
    """One row per candidate K (one covariance type).

    Attributes:
        n_components: (M,) the candidate K.
        criterion: (M,) the criterion's value (lower is better).
        log_likelihood: (M,) total (weighted) log-likelihood at the fitted parameters.
        converged: (M,) whether EM converged.
        criterion_name: "bic", "aic", "icl" or "loo".
        posteriors: for "loo", the (M,) posterior DataTrees, else empty; each is
            labelled like the EM fit of its K (started at its ``params_``).
    """

    n_components: np.ndarray
    criterion: np.ndarray
    log_likelihood: np.ndarray
    converged: np.ndarray
    criterion_name: str
    posteriors: tuple = ()


class CriterionTable(NamedTuple):
    """The criterion of every K and covariance model (mclust's ``mclustBIC`` table, in
    scikit-learn's sign: lower is better).

    Attributes:
        n_components: (M,) the candidate K (rows).
        covariance_types: (T,) the covariance models (columns).
        criterion: (M, T) the criterion's value; NaN where the fit failed.
        log_likelihood: (M, T) total (weighted) log-likelihood; NaN where it failed.
        n_parameters: (M, T) free parameters of each model.
        converged: (M, T) whether EM converged (False where it failed).
        failures: {(K, covariance type): why that fit failed} for the NaN cells.
        criterion_name: "bic", "aic" or "icl".
        best_n_components: K of the smallest criterion.
        best_covariance_type: the covariance model of the smallest criterion.
    """

    n_components: np.ndarray
    covariance_types: tuple[str, ...]
    criterion: np.ndarray
    log_likelihood: np.ndarray
    n_parameters: np.ndarray
    converged: np.ndarray
    failures: dict
    criterion_name: str
    best_n_components: int
    best_covariance_type: str

    def summary(self, n_best: int = 3) -> list[tuple[str, int, float]]:
        """The ``n_best`` smallest cells as (covariance type, K, criterion), best first
        (mclust's ``summary(mclustBIC)``; ties: smaller K, then the earlier model)."""
        rows, columns = np.nonzero(np.isfinite(self.criterion))
        values = self.criterion[rows, columns]
        order = np.lexsort((columns, self.n_components[rows], values))[:n_best]
        return [
            (
                self.covariance_types[columns[i]],
                int(self.n_components[rows[i]]),
                float(values[i]),
            )
            for i in order
        ]


def covariance_models() -> tuple[str, ...]:
    """The covariance models ``covariance_type="all"`` fits, as ``mclustBIC`` does:
    mclust's 14 (:data:`gaussmix.models.priors.MCLUST_MODELS`, in mclust's order; VVV,
    EEE, VVI and VII are the estimator's full, tied, diag and spherical), read from the
    estimator's registry when called; any other type the EM back end fits follows, each
    model once.

    Example:
        >>> covariance_models()[:3], len(covariance_models())
        (('EII', 'VII', 'EEI'), 14)
    """
    mclust = tuple(priors.MCLUST_MODELS)
    same = {priors.canonical_covariance_type(name) for name in mclust}
    others = tuple(
        name
        for name in priors.EM_COVARIANCE_TYPES
        if priors.canonical_covariance_type(name) not in same
    )
    return mclust + others


def integrated_completed_likelihood(
    estimator: GaussianMixture, X: ArrayLike, sample_weight: ArrayLike | None = None
) -> float:
    """mclust's ICL of a fitted mixture, in scikit-learn's sign (lower is better).

    .. math::

        \\mathrm{ICL} = -2 \\sum_n w_n \\log p(x_n \\mid \\hat\\theta) + p \\log W
            - 2 \\sum_n w_n \\log z_{n, \\hat k(n)},

    the BIC (weighted as :func:`select_components` weighs it; the estimator's ``bic``
    without weights) plus twice the (weighted) negative log responsibility of each
    point's most probable component. It equals ``-icl(fit)`` of R's mclust for the same
    parameters, so ICL >= BIC, with equality when every point is assigned with
    certainty (and for K = 1).

    Args:
        estimator: a fitted :class:`~gaussmix.GaussianMixture`.
        X: (N, D) data.
        sample_weight: (N,) non-negative weights of the points, or None.

    Returns:
        The ICL (a float).

    Example:
        >>> import numpy as np
        >>> from gaussmix import GaussianMixture
        >>> rng = np.random.default_rng(0)
        >>> X = np.concatenate([rng.normal(m, 0.5, (100, 2)) for m in (-0.5, 0.5)])
        >>> gm = GaussianMixture(2, random_state=0).fit(X)  # overlapping: ambiguous labels
        >>> bool(integrated_completed_likelihood(gm, X) > gm.bic(X) + 10.0)
        True
    """
    check_is_fitted(estimator)
    data = validate_data(estimator, X, reset=False)
    weight = _checked_weight(sample_weight, data.shape[0])
    log_likelihood, total = _total_log_likelihood(estimator, data, weight)
    # the estimator's count: mclust's, plus a background's parameters
    n_parameters = estimator._n_parameters()
    bic = -2.0 * log_likelihood + n_parameters * np.log(total)
    return bic + _assignment_penalty(estimator, data, weight)


def _assignment_penalty(estimator, data, weight) -> float:
    """:math:`-2 \\sum_n w_n \\log z_{n, \\hat k(n)}` (>= 0): the responsibility of each
    point's most probable component is >= 1/K, so its log is accurate."""
    largest = np.max(estimator.predict_proba(data), axis=1).astype(np.float64)
    log_largest = np.log(np.minimum(largest, 1.0))
    if weight is None:
        return float(-2.0 * np.sum(log_largest))
    return float(-2.0 * np.sum(weight * log_largest))


def _checked_weight(sample_weight, n_samples) -> np.ndarray | None:
    if sample_weight is None:
        return None
    weight = np.asarray(sample_weight, dtype=np.float64)
    if weight.shape != (n_samples,):
        raise ValueError(f"sample_weight has shape {weight.shape}; X has {n_samples} rows.")
    if not np.all(np.isfinite(weight)) or np.any(weight < 0) or weight.sum() <= 0:
        raise ValueError(
            "sample_weight must be finite and non-negative with a positive sum; "
            "give every point a weight >= 0."
        )
    return weight


def select_components(
    X: ArrayLike,
    n_components: Iterable[int] = range(1, 21),
    covariance_type: str | Iterable[str] = "full",
    criterion: str = "bic",
    *,
    sample_weight: ArrayLike | None = None,
    mcmc_options: Mapping | None = None,
    seed=None,
    random_state=UNSET,
    **estimator_parameters,
) -> tuple[SelectionTable | CriterionTable, GaussianMixture]:
    """Fit a :class:`~gaussmix.GaussianMixture` for every K (and covariance model) and
    keep the best by BIC, AIC, ICL or LOO.

    **The start** is mclust's by default: ``init_params="hc"``, the model-based
    hierarchical clustering (:func:`gaussmix.inference.em.hierarchical.start_labels`;
    one clustering serves every K), which reaches an optimum at least as good as
    mclust's in about 97 % of the cells of such tables (BENCHMARKS.md, issue 18), where
    scikit-learn's k-means start (the estimator's own default, kept there for parity)
    reaches about 75 %; k-means where the clustering refuses the data, above
    :data:`HC_DEFAULT_MAX_FEATURES` features (its cost grows as D^2: 85 s on the 41
    PCA scores of the digits), or with ``devices`` or ``chunk_size``. Give ``init_params`` to choose (criterion "loo" keeps
    the estimator's default).

    **Programs.** By maximum likelihood from the hc or k-means start (no priors, no user
    starting values), every K of a covariance model is fitted in one compiled program
    (:mod:`gaussmix.inference.em.candidates`: mixtures padded to the largest K, equal to
    each K's fit alone to rounding) and the estimator returned is the best cell's,
    fitted once more alone from the same start. Otherwise each (K, model) is its own
    fit; gaussmix bounds the compiled programs it holds
    (:data:`gaussmix.inference.compilation.MAX_PROGRAMS`, and a guard near
    ``vm.max_map_count``), so a table of any size stays within the process's memory
    mappings.

    With one covariance type (a str) the answer is a :class:`SelectionTable` (one row
    per K) and a fit that fails raises. With several (a list, or ``"all"``) it is the
    :class:`CriterionTable` of every K and model, as mclust's ``mclustBIC``: a fit that
    fails (a collapsed component, K > N, ...) is a NaN cell whose reason is kept in
    ``failures``, and the best is the smallest finite cell.

    Args:
        X: (N, D) data.
        n_components: candidate numbers of components (each >= 1 and <= N).
        covariance_type: one name the estimator knows ("full", "tied", "diag",
            "spherical", mclust's "EII" ... "VVV"), a list of names, or "all"
            (:func:`covariance_models`: mclust's 14 models).
        criterion: "bic", "aic", "icl" (mclust's ICL,
            :func:`integrated_completed_likelihood`) or "loo" (NUTS for every K, then
            PSIS-LOO; one covariance type only).
        sample_weight: (N,) weights of the points.
        mcmc_options: for "loo", arguments of
            :func:`~gaussmix.inference.mcmc.sample_mixture` (``num_warmup``,
            ``num_samples``, ``num_chains``, ``progress_bar``, ``prior_parameters``; not
            ``init``: each K starts at its fitted estimator).
        seed: None, an int (or a NumPy ``RandomState`` / ``Generator``) seeding every
            fit's initialization (the estimator's ``random_state``) and, for "loo", the
            chains.
        random_state: deprecated spelling of ``seed`` (a FutureWarning).
        **estimator_parameters: passed to :class:`~gaussmix.GaussianMixture` (``n_init``,
            ``max_iter``, ``tol``, ``priors``, ``init_params`` (default here "hc", see
            above), ...).

    Returns:
        The table and the fitted estimator with the smallest criterion (the smallest K
        among ties, then the earlier covariance model).

    Raises:
        ValueError: an unknown criterion or covariance type, bad candidates, bad data,
            or (several models) every fit failed (the first reason is given).

    Example:
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> X = np.concatenate([rng.normal(m, 0.5, (100, 2)) for m in (-4, 0, 4)])
        >>> table, best = select_components(X, range(1, 5), seed=0)
        >>> best.n_components, table.n_components.tolist()
        (3, [1, 2, 3, 4])
        >>> table, best = select_components(X, [2, 3], ["full", "spherical"], seed=0)
        >>> table.criterion.shape, table.best_n_components, table.best_covariance_type
        ((2, 2), 3, 'spherical')
    """
    if criterion not in CRITERIA:
        raise ValueError(
            f"Unknown criterion {criterion!r}; select_components knows {list(CRITERIA)} "
            "(choose 'bic', 'aic', 'icl' or 'loo')."
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
    # mclust's start by default (the table's use case): hc, k-means where refused
    auto_start = "init_params" not in estimator_parameters and criterion != "loo"
    if auto_start:
        in_memory = all(
            estimator_parameters.get(name) is None for name in ("devices", "chunk_size")
        )
        shape = np.shape(X)
        affordable = len(shape) == 2 and shape[1] <= HC_DEFAULT_MAX_FEATURES
        estimator_parameters["init_params"] = "hc" if in_memory and affordable else "kmeans"
    models = _covariance_models(covariance_type)
    if models is not None:
        if criterion == "loo":
            raise ValueError(
                "criterion='loo' samples one covariance type; give covariance_type as one "
                "name, or choose 'bic', 'aic' or 'icl' to compare several."
            )
        return _select_table(
            X, candidates, models, criterion, sample_weight, estimator_parameters, auto_start
        )
    if criterion == "loo":
        return _select_by_loo(
            X, candidates, covariance_type, sample_weight, mcmc_options, estimator_parameters
        )
    if covariance_type in priors.COVARIANCE_LAYOUTS:
        padded = _select_one_padded(
            X,
            candidates,
            covariance_type,
            criterion,
            sample_weight,
            estimator_parameters,
            auto_start,
        )
        if padded is not None:
            return padded
    values, log_likelihoods, converged, fitted = [], [], [], []
    for k in candidates:
        estimator = GaussianMixture(int(k), covariance_type=covariance_type, **estimator_parameters)
        estimator.fit(X, sample_weight=sample_weight)
        data = validate_data(estimator, X, reset=False)
        value, log_likelihood, _ = _criterion(estimator, data, sample_weight, criterion)
        values.append(value)
        log_likelihoods.append(log_likelihood)
        converged.append(estimator.converged_)
        fitted.append(estimator)
    return _table_and_best(candidates, values, log_likelihoods, converged, fitted, criterion)


def _covariance_models(covariance_type) -> tuple[str, ...] | None:
    """None for one covariance type (a str other than "all"), else the models, checked."""
    if isinstance(covariance_type, str) and covariance_type != "all":
        return None
    models = (
        covariance_models()
        if isinstance(covariance_type, str)
        else tuple(covariance_type)
        if isinstance(covariance_type, Iterable)
        else None
    )
    if not models or not all(isinstance(name, str) for name in models):
        raise ValueError(
            f"covariance_type must be a name, a list of names or 'all', got {covariance_type!r}."
        )
    known = tuple(priors.COVARIANCE_LAYOUTS)
    unknown = [name for name in models if name not in known]
    if unknown:
        raise ValueError(
            f"Unknown covariance_type {unknown}; the estimator knows {list(known)} (or give 'all')."
        )
    same = [priors.canonical_covariance_type(name) for name in models]
    if len(set(same)) != len(same):
        raise ValueError(
            f"covariance_type lists a model twice: {list(models)} (mclust's VVV, EEE, VVI "
            "and VII are full, tied, diag and spherical); give each model once."
        )
    return models


def _criterion(estimator, data, sample_weight, criterion) -> tuple[float, float, int]:
    """(criterion, total log-likelihood, free parameters) of a fitted estimator."""
    weight = _checked_weight(sample_weight, data.shape[0])
    log_likelihood, total = _total_log_likelihood(estimator, data, weight)
    n_parameters = em.n_parameters(
        estimator.covariance_type, int(estimator.n_components), int(data.shape[1])
    )
    if criterion == "aic":
        return -2.0 * log_likelihood + 2.0 * n_parameters, log_likelihood, n_parameters
    value = -2.0 * log_likelihood + n_parameters * np.log(total)
    if criterion == "icl":
        value += _assignment_penalty(estimator, data, weight)
    return value, log_likelihood, n_parameters


def _select_table(X, candidates, models, criterion, sample_weight, parameters, auto_start):
    """Every (K, model): fit, criterion; a failed fit is a NaN cell with its reason."""
    data = validate_data(GaussianMixture(), X, reset=True, ensure_min_samples=2)
    shape = (len(candidates), len(models))
    values = np.full(shape, np.nan)
    log_likelihoods = np.full(shape, np.nan)
    n_parameters = np.zeros(shape, dtype=np.int64)
    converged = np.zeros(shape, dtype=bool)
    failures, fitted = {}, {}
    for i, k in enumerate(candidates):
        for j, model in enumerate(models):
            n_parameters[i, j] = em.n_parameters(model, int(k), int(data.shape[1]))
    weight = _checked_weight(sample_weight, data.shape[0])
    padded = _padded_options(data, candidates, models, weight, parameters, auto_start)
    cells = [(i, j) for i in range(shape[0]) for j in range(shape[1])]
    if padded is not None:  # every K of a model in one program
        total = float(data.shape[0] if weight is None else weight.sum())
        # every model's programs dispatched before the first is waited for: loading
        # model j + 1's program overlaps model j's EM (XLA's threads, not Python's)
        started = [_start_column(data, model, padded) for model in models]
        for j, model in enumerate(models):
            fits = started[j]()
            _padded_column(data, total, j, model, padded, criterion, n_parameters, fits)
        rows = padded["rows"]
        for j in range(shape[1]):
            for i, value in rows[j].items():
                if isinstance(value, str):
                    failures[(int(candidates[i]), models[j])] = value
                else:
                    values[i, j], log_likelihoods[i, j], converged[i, j] = value
                    fitted[(i, j)] = None  # fitted below if it is the best
        cells = [(i, j) for i, j in cells if i not in padded["indices"]]
    for i, j in cells:  # one (K, model) at a time
        k, model = candidates[i], models[j]
        estimator = GaussianMixture(int(k), covariance_type=model, **parameters)
        try:
            estimator.fit(X, sample_weight=sample_weight)  # keeps feature names
            values[i, j], log_likelihoods[i, j], _ = _criterion(
                estimator, validate_data(estimator, X, reset=False), sample_weight, criterion
            )
        except ValueError as error:  # a collapsed component, K > N, overflow, ...
            failures[(int(k), model)] = str(error)
        else:
            converged[i, j] = estimator.converged_
            fitted[(i, j)] = estimator
    if not fitted:
        first = next(iter(failures.items()))
        raise ValueError(
            f"Every fit failed; the first, K = {first[0][0]}, {first[0][1]}: {first[1]}"
        )
    cells = list(fitted)
    rows = np.array([i for i, _ in cells])
    columns = np.array([j for _, j in cells])
    order = np.lexsort((columns, rows, values[rows, columns]))
    best = cells[int(order[0])]
    if fitted[best] is None:  # a padded fit: the estimator fitted alone, same start
        estimator = GaussianMixture(
            int(candidates[best[0]]), covariance_type=models[best[1]], **padded["parameters"]
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", convergence_warning_class())  # warned already
            fitted[best] = estimator.fit(X, sample_weight=sample_weight)
    table = CriterionTable(
        n_components=np.asarray(candidates, dtype=np.int64),
        covariance_types=tuple(models),
        criterion=values,
        log_likelihood=log_likelihoods,
        n_parameters=n_parameters,
        converged=converged,
        failures=failures,
        criterion_name=criterion,
        best_n_components=int(candidates[best[0]]),
        best_covariance_type=models[best[1]],
    )
    return table, fitted[best]


#: Estimator parameters the padded table fits (maximum likelihood from the k-means or
#: the hc start); any other value is fitted one (K, model) at a time.
_PADDED_DEFAULTS = {
    "weights_init": None,
    "means_init": None,
    "precisions_init": None,
    "warm_start": False,
    "verbose": 0,
    "priors": None,
    "chunk_size": None,
    "devices": None,
}


def _padded_options(data, candidates, models, weight, parameters, auto_start) -> dict | None:
    """The checked options of the padded table (:mod:`gaussmix.inference.em.candidates`:
    every K of a model in one program), or None where the table is fitted one (K,
    model) at a time: other starts or priors, user starting values, NaN in the data,
    options the estimator refuses (each cell then fails with its message).

    ``auto_start``: the default start, mclust's hc, or k-means where the hierarchical
    clustering refuses the data. ``"parameters"`` of the answer are the estimator's for
    the best cell's refit: its start and the seed drawn here (the same start)."""
    settings = GaussianMixture(**parameters).get_params()
    if any(settings[name] != value for name, value in _PADDED_DEFAULTS.items()):
        return None
    hc_model = em.hierarchical_model(settings["init_params"])
    if (settings["init_params"] != "kmeans" and hc_model is None) or np.isnan(data).any():
        return None
    indices = [i for i, k in enumerate(candidates) if int(k) <= data.shape[0]]
    if not indices:
        return None
    counts = tuple(int(candidates[i]) for i in indices)
    seed = seed_from_random_state(settings["random_state"])
    try:
        options = em.check_options(
            n_components=max(counts),
            covariance_type=models[0],
            max_iter=settings["max_iter"],
            tol=settings["tol"],
            reg_covar=settings["reg_covar"],
            n_init=settings["n_init"],
            seed=seed,
        )
    except ValueError:
        return None
    fit_weight = (np.ones(data.shape[0]) if weight is None else weight).astype(data.dtype)
    init_params = settings["init_params"]
    labels = None
    if hc_model is not None:
        # the models' programs are loaded by a thread while the clustering computes
        # their start (loading and XLA's compilation run mostly outside Python's lock)
        preload = threading.Thread(
            target=_preload_columns,
            args=(data, fit_weight, models, options, counts, jax.config.jax_enable_x64),
            daemon=True,
        )
        preload.start()
        try:
            hc = _hc_labels(data, counts, seed, weight, hc_model)
        except ValueError:
            if not auto_start:
                return None  # each cell fails with the estimator's message
            init_params = "kmeans"
        finally:
            preload.join()
    if init_params == "kmeans" or options.n_init > 1:  # k-means starts restarts 1, 2, ...
        labels = candidates_em.kmeans_labels(
            data, fit_weight, options.key, n_components=counts, n_init=options.n_init
        )
    if init_params != "kmeans":  # hc (the k-means fallback above changed init_params)
        labels = hc[:, None] if labels is None else np.concatenate([hc[:, None], labels[:, 1:]], 1)
    return {
        "options": options,
        "indices": indices,
        "counts": counts,
        "weight": fit_weight,
        "labels": labels,
        "parameters": {**parameters, "random_state": seed, "init_params": init_params},
        "rows": {},
    }


def _hc_labels(data, counts, seed, weight, model="VVV") -> np.ndarray:
    """(C, N) mclust's hc start of each K, as the estimator's ``init_params="hc"`` draws
    it from ``seed`` (the subset of 2000 rows: ``SeedSequence([seed, 0])``, dataset 0) and
    weighs the rows (weights all 1 or None: the unweighted clustering)."""
    subset_seed = int(np.random.SeedSequence([int(seed) % 2**63, 0]).generate_state(1)[0])
    if weight is not None and np.all(weight == 1.0):
        weight = None
    return start_labels_of_each(
        np.asarray(data, np.float64), counts, model=model, seed=subset_seed, sample_weight=weight
    )


def _column_config(data, model, options, counts) -> candidates_em.CandidatesConfig:
    """The padded program of one model (every K of ``counts``)."""
    return candidates_em.CandidatesConfig(
        covariance_type=priors.canonical_covariance_type(model),
        n_components=counts,
        max_iter=int(options.max_iter),
        n_init=int(options.n_init),
        block_rows=block_size(
            data.shape[0], data.shape[1], max(counts), model, data.dtype.itemsize, None
        ),
    )


def _preload_columns(data, weight, models, options, counts, x64: bool) -> None:
    """Load every model's padded programs (:func:`candidates_em.preload_candidates`), in a
    thread while the hierarchical clustering computes their start. Skipped where this
    thread's JAX settings differ from the caller's (``jax.enable_x64`` is per thread):
    the programs would not be the caller's. A failure here is the fit's to meet again
    and report, so it ends the preloading quietly."""
    if jax.config.jax_enable_x64 != x64:
        return
    for model in models:
        config = _column_config(data, model, options, counts)
        try:
            candidates_em.preload_candidates(
                data, weight, tol=options.tol, reg_covar=options.reg_covar, config=config
            )
        except Exception:  # the fit in the caller's thread meets it again and raises it
            return


def _start_column(data, model, padded):
    """One model's padded program started (:func:`candidates_em.start_candidates`): the
    answer's call waits for its :class:`~gaussmix.inference.em.candidates.CandidateFits`."""
    options = padded["options"]
    return candidates_em.start_candidates(
        data,
        padded["weight"],
        padded["labels"],
        tol=options.tol,
        reg_covar=options.reg_covar,
        config=_column_config(data, model, options, padded["counts"]),
    )


def _padded_column(data, total, column, model, padded, criterion, n_parameters, fits):
    """One model's cells from its padded program's ``fits``: ``padded["rows"][column]``
    maps each row to (criterion, log-likelihood, converged), or to the failure's message."""
    options = padded["options"]
    counts = padded["counts"]
    rows = {}
    for position, i in enumerate(padded["indices"]):
        try:
            raise_on_failure(
                fits.collapsed[position][None],
                fits.n_iters[position][None],
                fits.lower_bound[position],
                False,
                model,
                data.dtype,
            )
        except ValueError as error:
            rows[i] = str(error)
            continue
        log_likelihood = float(fits.log_likelihood[position])
        if criterion == "aic":
            value = -2.0 * log_likelihood + 2.0 * n_parameters[i, column]
        else:
            value = -2.0 * log_likelihood + n_parameters[i, column] * np.log(total)
            if criterion == "icl":
                value -= 2.0 * float(fits.assignment[position])
        converged = bool(fits.converged[position]) or options.max_iter == 0
        if not converged:
            warnings.warn(
                f"{model}, K = {counts[position]}: the best initialization did not "
                "converge. Try different init parameters, or increase max_iter, tol, or "
                "check for degenerate data.",
                convergence_warning_class(),
                stacklevel=4,
            )
        rows[i] = (value, log_likelihood, bool(fits.converged[position]))
    padded["rows"][column] = rows


def _select_one_padded(X, candidates, model, criterion, sample_weight, parameters, auto_start):
    """One model's selection through its padded program (every K in one), or None where
    the K are fitted one at a time (see :func:`_padded_options`). A failed fit raises
    its message, as the estimator's fit."""
    try:
        data = validate_data(GaussianMixture(), X, reset=True, ensure_min_samples=2)
        weight = _checked_weight(sample_weight, data.shape[0])
    except ValueError:
        return None  # the estimator's fit says why
    if len(candidates) == 1:
        return None  # one fit: the estimator's own program
    padded = _padded_options(data, candidates, (model,), weight, parameters, auto_start)
    if padded is None or len(padded["indices"]) != len(candidates):
        return None
    n_parameters = np.array(
        [[em.n_parameters(model, int(k), int(data.shape[1]))] for k in candidates]
    )
    total = float(data.shape[0] if weight is None else weight.sum())
    fits = _start_column(data, model, padded)()
    _padded_column(data, total, 0, model, padded, criterion, n_parameters, fits)
    rows = [padded["rows"][0][i] for i in range(len(candidates))]
    for row in rows:
        if isinstance(row, str):
            raise ValueError(row)
    values, log_likelihoods, converged = (np.array(column) for column in zip(*rows, strict=True))
    order = np.lexsort((np.asarray(candidates), values))
    best = GaussianMixture(int(candidates[order[0]]), covariance_type=model, **padded["parameters"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", convergence_warning_class())  # warned already
        best.fit(X, sample_weight=sample_weight)
    table = SelectionTable(
        n_components=np.asarray(candidates, dtype=np.int64),
        criterion=values,
        log_likelihood=log_likelihoods,
        converged=converged.astype(bool),
        criterion_name=criterion,
    )
    return table, best


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
