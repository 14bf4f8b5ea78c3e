"""The first pass over chunked data: size, centre, moments, the initialization sample;
and the starting parameters and EM context it gives.

One validating pass over all rows (of all processes) finds N, the total weight and the
weighted mean (the centre of the moments), the moments of the default prior (MAP) and a
uniform sample of at most ``init_rows`` rows on which the initialization runs
(:func:`gaussmix.inference.em.initialize`); with at most ``init_rows`` rows the sample is
the whole data in order and the start is :func:`gaussmix.inference.em.fit_em`'s.
"""

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gaussmix.inference.em.core import EMContext, StepConfig, make_context
from gaussmix.inference.em.initialization import initialize, restart_key
from gaussmix.inference.em.options import EMOptions
from gaussmix.inference.em.parameters import MixtureParameters
from gaussmix.inference.em.validation import check_range
from gaussmix.inference.streaming.chunks import chunk_dtype, prepare_chunk
from gaussmix.inference.streaming.processes import broadcast_from_first, process_gather
from gaussmix.models.priors import MixturePriorParameters, default_prior_parameters

__all__ = [
    "Survey",
    "initial_parameters",
    "survey_context",
    "survey_prior_parameters",
    "survey_with_rows",
    "take_survey",
]


class Survey(NamedTuple):
    """What one pass over all rows (of all processes) tells before EM starts."""

    n_rows: int
    n_features: int
    dtype: np.dtype
    total_weight: float
    weighted_sum: np.ndarray  # (D,) float64
    mean: np.ndarray | None  # (D,) unweighted, for the default prior
    scatter: np.ndarray | None  # (D, D) unweighted about ``mean``
    sample: np.ndarray  # (m, D) rows for the initialization, in row order
    sample_weight: np.ndarray | None  # (m,)
    chunk_rows: int  # largest chunk of this process
    #: (D,) float64 weight of the observed entries of each column (data with NaN), else None
    observed_weight: np.ndarray | None = None


def _numpy_seed(seed) -> int:
    if isinstance(seed, jax.Array):
        return int(jax.random.bits(seed, dtype=jnp.uint32))
    return int(seed)


def take_survey(source, *, moments: bool, init_rows: int, seed, allow_nan: bool = False) -> Survey:
    """One validating pass: N, total weight, weighted sum, moments, a uniform sample.

    The sample keeps the ``init_rows`` rows of smallest uniform priority (all rows when
    there are not more), sorted by global row index. With ``allow_nan`` NaN entries are
    missing values: the weighted sum and ``observed_weight`` count the observed entries
    (the centre is each column's weighted mean of them), the sample keeps its NaN.
    """
    rng = np.random.default_rng([_numpy_seed(seed), jax.process_index()])
    dtype, n_features = None, None
    n_rows, total_weight, weighted_sum = 0, 0.0, None
    count, mean, scatter = 0, None, None
    keys = np.empty(0)
    indices = np.empty(0, np.int64)
    rows, row_weights = None, None
    weighted = False
    largest = 0
    observed_weight = None
    for index, (x, w) in enumerate(source):
        if dtype is None:
            dtype = chunk_dtype(np.asarray(x))
        x, w = prepare_chunk(
            x, w, dtype, n_features, f"chunk {index}", validate=True, allow_nan=allow_nan
        )
        n_features = x.shape[1]
        n = x.shape[0]
        if n == 0:
            continue
        largest = max(largest, n)
        if weighted_sum is None:
            weighted_sum = np.zeros(n_features)
            rows = np.empty((0, n_features), dtype)
            row_weights = np.empty(0, dtype)
        weighted = weighted or w is not None
        w64 = np.ones(n) if w is None else w.astype(np.float64)
        total_weight += float(w64.sum())
        if allow_nan:
            holes = np.isnan(x)
            observed_weight = (0.0 if observed_weight is None else observed_weight) + w64 @ ~holes
            weighted_sum += w64 @ np.where(holes, 0.0, x.astype(np.float64))
            if moments and holes.any():
                raise ValueError(
                    "MAP (priors) on data with NaN read by chunks or split over devices is "
                    "not supported: the default prior needs the moments of the completed "
                    "data; fit it in memory (GaussianMixture.fit on an array, devices=None), "
                    "or fit by maximum likelihood (priors=None)."
                )
        else:
            weighted_sum += w64 @ x.astype(np.float64)
        if moments:
            chunk_mean = x.mean(axis=0, dtype=np.float64)
            centred = x.astype(np.float64) - chunk_mean
            chunk_scatter = centred.T @ centred
            if mean is None:
                count, mean, scatter = n, chunk_mean, chunk_scatter
            else:
                delta = chunk_mean - mean
                total = count + n
                mean = mean + delta * (n / total)
                scatter = scatter + chunk_scatter + np.outer(delta, delta) * (count * n / total)
                count = total
        keys = np.concatenate([keys, rng.random(n)])
        indices = np.concatenate([indices, np.arange(n_rows, n_rows + n)])
        rows = np.concatenate([rows, x])
        row_weights = np.concatenate([row_weights, np.ones(n, dtype) if w is None else w])
        if keys.shape[0] > init_rows:
            keep = np.argpartition(keys, init_rows - 1)[:init_rows]
            keys, indices, rows, row_weights = (a[keep] for a in (keys, indices, rows, row_weights))
        n_rows += n
    if weighted_sum is None:
        raise ValueError("data has no rows; pass at least one non-empty chunk.")
    if allow_nan:
        observed_weight = np.broadcast_to(observed_weight, (n_features,)).astype(np.float64)
    return _combine_processes(
        Survey(
            n_rows=n_rows,
            n_features=n_features,
            dtype=dtype,
            total_weight=total_weight,
            weighted_sum=weighted_sum,
            mean=mean,
            scatter=scatter,
            sample=rows,
            sample_weight=row_weights if weighted else None,
            chunk_rows=largest,
            observed_weight=observed_weight,
        ),
        keys,
        indices,
        init_rows,
        weighted,
    )


def _combine_processes(survey: Survey, keys, indices, init_rows: int, weighted: bool) -> Survey:
    """Merge the surveys of all processes (identity with one process)."""
    order = np.argsort(indices, kind="stable")
    if jax.process_count() == 1:
        weights = survey.sample_weight[order] if weighted else None
        return survey._replace(sample=survey.sample[order], sample_weight=weights)
    n_features = survey.n_features
    header = np.array([survey.n_rows, n_features, float(weighted), survey.total_weight], np.float64)
    headers = process_gather(header)
    if np.any(headers[:, 1] != n_features):
        raise ValueError(
            f"The processes hold data with different numbers of features {headers[:, 1]}."
        )
    counts = headers[:, 0].astype(np.int64)
    offset = int(counts[: jax.process_index()].sum())
    weighted = bool(np.any(headers[:, 2]))
    moments = survey.mean is not None
    sums = process_gather(survey.weighted_sum).sum(axis=0)
    observed_weight = survey.observed_weight
    if observed_weight is not None:
        observed_weight = process_gather(observed_weight).sum(axis=0)
    mean, scatter = survey.mean, survey.scatter
    if moments:
        means = process_gather(mean)
        scatters = process_gather(scatter)
        total = counts.sum()
        mean = (counts[:, None] * means).sum(axis=0) / total
        deltas = means - mean
        scatter = scatters.sum(axis=0) + np.einsum("p,pi,pj->ij", counts, deltas, deltas)
    # Pad every process's sample to init_rows with priority +inf, gather, keep the best.
    size = keys.shape[0]
    padded_keys = np.full(init_rows, np.inf)
    padded_keys[:size] = keys
    padded_indices = np.zeros(init_rows, np.int64)
    padded_indices[:size] = indices + offset
    padded_rows = np.zeros((init_rows, n_features), survey.dtype)
    padded_rows[:size] = survey.sample
    padded_weights = np.zeros(init_rows, survey.dtype)
    padded_weights[:size] = survey.sample_weight if survey.sample_weight is not None else 1
    all_keys = process_gather(padded_keys).reshape(-1)
    all_indices = process_gather(padded_indices).reshape(-1)
    all_rows = process_gather(padded_rows).reshape(-1, n_features)
    all_weights = process_gather(padded_weights).reshape(-1)
    keep = np.argsort(all_keys, kind="stable")[: min(init_rows, int(counts.sum()))]
    keep = keep[np.argsort(all_indices[keep], kind="stable")]
    return survey._replace(
        n_rows=int(counts.sum()),
        total_weight=float(headers[:, 3].sum()),
        weighted_sum=sums,
        mean=mean,
        scatter=scatter,
        sample=all_rows[keep],
        sample_weight=all_weights[keep] if weighted else None,
        observed_weight=observed_weight,
    )


def survey_prior_parameters(survey: Survey, covariance_type: str, dtype) -> MixturePriorParameters:
    """The program's default prior for the whole data, from its mean and covariance.

    :func:`gaussmix.models.priors.default_prior_parameters` reads the data only through
    its mean and sample covariance, so it is given 2D points with exactly those moments:
    :math:`m \\pm a L e_i` with :math:`L L^T` the covariance and
    :math:`a^2 = (2D - 1) / 2`.
    """
    if survey.n_rows == 1:
        pseudo = survey.sample.astype(np.float64)
    else:
        covariance = survey.scatter / (survey.n_rows - 1)
        values, vectors = np.linalg.eigh(covariance)
        factor = vectors * np.sqrt(np.clip(values, 0.0, None))
        n_features = covariance.shape[0]
        spread = math.sqrt((2 * n_features - 1) / 2) * factor.T
        pseudo = np.concatenate([survey.mean + spread, survey.mean - spread])
    parameters = default_prior_parameters(pseudo, covariance_type)
    return MixturePriorParameters(*(jnp.asarray(a, dtype) for a in parameters))


def survey_with_rows(source, options: EMOptions, allow_nan: bool = False) -> tuple[Survey, int]:
    """The survey of all processes and the number of rows of this process (``source``
    yields ``(x, w)`` chunks: a ChunkSource or a list); ``allow_nan``: NaN entries are
    missing values (a column without any observed entry is an error)."""
    counting = _Counting(source)
    survey = take_survey(
        counting,
        moments=options.method != "maximum_likelihood",
        init_rows=options.init_rows,
        seed=options.seed,
        allow_nan=allow_nan,
    )
    if survey.observed_weight is not None and np.any(survey.observed_weight <= 0):
        column = int(np.flatnonzero(survey.observed_weight <= 0)[0])
        raise ValueError(
            f"column {column} of the data holds no observed entry of positive weight (all "
            "NaN), so nothing can be estimated for it; drop that column."
        )
    if survey.n_rows < options.n_components:
        raise ValueError(
            "Expected n_samples >= n_components "
            f"but got n_components = {options.n_components}, n_samples = {survey.n_rows}"
        )
    if survey.total_weight <= 0:
        raise ValueError("sample_weight sums to zero; give at least one point a positive weight.")
    return survey, counting.rows


class _Counting:
    """Iterates a ChunkSource and counts the rows it yields."""

    def __init__(self, source):
        self._source, self.rows = source, 0

    def __iter__(self):
        for x, w in self._source:
            self.rows += int(np.shape(x)[0])
            yield x, w


def initial_parameters(survey: Survey, options: EMOptions) -> MixtureParameters:
    """Stacked (R,) starting points on the survey's sample, one per restart, the same on
    every process (process 0's).

    Restart 0 starts where ``fit_em(sample, seed=seed)`` does, so on a sample that is the
    whole data it starts exactly where :func:`gaussmix.inference.em.fit_em` does, and more
    restarts can only raise the lower bound; restart r > 0 is ``fit_em``'s start with the
    seed ``fold_in(key, r)``. The sample's blocks are ``fit_em``'s default ones.
    """
    n_init = options.n_init
    if all(value is not None for value in options.inits):
        n_init = 1
    key = options.key
    seeds = [key] + [jax.random.fold_in(key, restart) for restart in range(1, n_init)]
    sample_options = options._replace(block_rows=None)
    weight = survey.sample_weight
    sample = survey.sample
    if survey.observed_weight is not None:  # missing entries: the column means
        centre = survey.weighted_sum / survey.observed_weight
        sample = np.where(np.isnan(sample), centre, sample).astype(sample.dtype)
    check_range(sample, np.ones(sample.shape[0]) if weight is None else weight)
    starts = [initialize(restart_key(seed), sample, weight, sample_options) for seed in seeds]
    stacked = jax.tree.map(lambda *leaves: jnp.stack(leaves), *starts)
    return broadcast_from_first(stacked)


def survey_context(survey: Survey, options: EMOptions) -> EMContext:
    """The :class:`gaussmix.inference.em.core.EMContext` of the whole data: its weighted
    mean as the centre, the default prior of its moments (MAP)."""
    dtype = survey.dtype
    prior_parameters = None
    if options.method != "maximum_likelihood":
        prior_parameters = survey_prior_parameters(survey, options.covariance_type, dtype)
    weight = survey.total_weight if survey.observed_weight is None else survey.observed_weight
    return make_context(
        StepConfig.from_options(options),
        centre=jnp.asarray(survey.weighted_sum / weight, dtype),
        reg_covar=options.reg_covar,
        tol=options.tol,
        priors=options.priors,
        prior_parameters=prior_parameters,
    )
