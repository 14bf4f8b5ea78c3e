"""Variational Bayesian Gaussian mixtures over chunks of data that need not fit in memory.

The variational update (:mod:`gaussmix.inference.em.variational`) reads the data only
through the E-step statistics and :math:`\\sum_n w_n \\log \\sum_k e^{\\ell_{nk}}`, which
are sums over rows; so one iteration is one pass over the chunks, each chunk's statistics
(one jitted function, chunks padded with zero-weight rows to one shape) added on the host
in float64 and summed over processes, then the one variational step:

.. math::

    S^{(t)} = \\sum_c \\hat S_c(q^{(t)}),\\qquad q^{(t+1)} = \\operatorname{update}(S^{(t)}),

the in-memory loop of :func:`gaussmix.inference.em.variational.fit` up to the order of the
floating-point sums (1e-10 in float64). The first pass (:func:`variational_survey`) finds
the weighted mean (the centre of the moments), the weighted covariance of the default
prior and the initialization sample of :func:`gaussmix.inference.streaming.survey.take_survey`
(the whole data, in order, when it has at most ``init_rows`` rows: then the start is the
in-memory one).
"""

from typing import NamedTuple

import jax
import numpy as np

from gaussmix.inference import compilation, native
from gaussmix.inference.em import variational
from gaussmix.inference.em.statistics import SufficientStatistics, sufficient_statistics
from gaussmix.inference.streaming.chunks import pad_rows, prepare_chunk
from gaussmix.inference.streaming.processes import process_gather, process_sum
from gaussmix.inference.streaming.survey import Survey, take_survey

__all__ = ["VariationalSurvey", "fit_variational_chunked", "variational_survey"]


class VariationalSurvey(NamedTuple):
    """The first pass: the :class:`~gaussmix.inference.streaming.survey.Survey` (N, D,
    dtype, the initialization sample), this process's rows, and the weighted moments."""

    survey: Survey
    local_rows: int
    mean: np.ndarray  # (D,) float64, weighted
    covariance: np.ndarray  # (D, D) float64, frequency weights (divided by sum w - 1)

    @property
    def centre(self) -> np.ndarray:
        return self.survey.weighted_sum / self.survey.total_weight


class _Moments:
    """Iterates ``(x, w)`` chunks, merging their weighted means and scatters (Chan et al.)
    after the consumer has validated each chunk, and counting rows."""

    def __init__(self, source):
        self._source = source
        self.rows, self.weight = 0, 0.0
        self.mean, self.scatter = None, None

    def __iter__(self):
        for x, w in self._source:
            yield x, w
            self._add(x, w)  # the consumer's check of this chunk passed

    def _add(self, x, w) -> None:
        x = np.asarray(x, np.float64)
        if x.shape[0] == 0:
            return
        w = np.ones(x.shape[0]) if w is None else np.asarray(w, np.float64)
        self.rows += x.shape[0]
        weight = float(w.sum())
        if weight <= 0:
            return
        mean = w @ x / weight
        centred = x - mean
        scatter = (centred * w[:, None]).T @ centred
        if self.mean is None:
            self.weight, self.mean, self.scatter = weight, mean, scatter
            return
        total = self.weight + weight
        delta = mean - self.mean
        self.scatter = (
            self.scatter + scatter + np.outer(delta, delta) * (self.weight * weight / total)
        )
        self.mean = self.mean + delta * (weight / total)
        self.weight = total


def variational_survey(source, *, n_components: int, init_rows: int, seed) -> VariationalSurvey:
    """One validating pass over ``source`` (``(x, w)`` chunks, all processes): N, D, the
    initialization sample, the weighted mean and covariance of the default prior."""
    moments = _Moments(source)
    survey = take_survey(moments, moments=False, init_rows=init_rows, seed=seed)
    if survey.n_rows < n_components:
        raise ValueError(
            "Expected n_samples >= n_components "
            f"but got n_components = {n_components}, n_samples = {survey.n_rows}"
        )
    if survey.total_weight <= 0:
        raise ValueError("sample_weight sums to zero; give some point a positive weight.")
    n_features = survey.n_features
    mean = np.zeros(n_features) if moments.mean is None else moments.mean
    scatter = np.zeros((n_features, n_features)) if moments.scatter is None else moments.scatter
    weight = moments.weight
    if jax.process_count() > 1:  # merge the processes' moments about the global mean
        weights = process_gather(np.array([weight]))[:, 0]
        means = process_gather(mean)
        total = weights.sum()
        merged = weights @ means / total
        deltas = means - merged
        scatter = process_gather(scatter).sum(axis=0) + np.einsum(
            "p,pi,pj->ij", weights, deltas, deltas
        )
        mean, weight = merged, total
    covariance = scatter / (weight - 1.0)
    return VariationalSurvey(survey, moments.rows, mean, covariance)


def _chunk_statistics(parameters, x, weight, centre, *, config, block_rows, use_kernel):
    return sufficient_statistics(
        x,
        variational.estep_parameters(parameters, config),
        covariance_type=config.covariance_type,
        centre=centre,
        sample_weight=weight,
        block_rows=block_rows,
        use_kernel=use_kernel,
    )


_chunk_statistics_jit = compilation.jit(
    _chunk_statistics, static_argnames=("config", "block_rows", "use_kernel")
)


def _step(state, statistics, prior, centre, reg_covar, tol, *, config):
    return variational.step(state, statistics, prior, centre, reg_covar, tol, config)


_step_jit = compilation.jit(_step, static_argnames=("config",))


def _statistics_pass(source, first: VariationalSurvey, parameters, config, block_rows):
    """The statistics of all rows (all processes) under ``parameters``, float64."""
    survey = first.survey
    rows = max(1, survey.chunk_rows)
    centre = np.asarray(first.centre, survey.dtype)
    use_kernel = config.covariance_type == "full" and native.usable(survey.dtype)
    totals, seen = None, 0
    for x, w in source:
        x, w = prepare_chunk(x, w, survey.dtype, survey.n_features, "chunk", validate=False)
        for start in range(0, x.shape[0], rows):
            piece_x = x[start : start + rows]
            piece_w = None if w is None else w[start : start + rows]
            seen += piece_x.shape[0]
            padded_x, padded_w = pad_rows(piece_x, piece_w, rows, centre)
            statistics = _chunk_statistics_jit(
                parameters,
                padded_x,
                padded_w,
                centre,
                config=config,
                block_rows=block_rows,
                use_kernel=use_kernel,
            )
            statistics = jax.tree.map(lambda leaf: np.asarray(leaf, np.float64), statistics)
            totals = statistics if totals is None else jax.tree.map(np.add, totals, statistics)
    if seen != first.local_rows:
        raise ValueError(
            f"The data changed between passes ({seen} rows now, {first.local_rows} on the "
            "first pass); the chunked fit reads the same rows on every pass."
        )
    if totals is None:  # a process without rows contributes zeros
        shapes = jax.eval_shape(
            _chunk_statistics,
            parameters,
            np.zeros((1, survey.n_features), survey.dtype),
            np.zeros(1, survey.dtype),
            centre,
            config=config,
            block_rows=block_rows,
            use_kernel=False,
        )
        totals = jax.tree.map(lambda leaf: np.zeros(leaf.shape, np.float64), shapes)
    return SufficientStatistics(*process_sum(totals))


def fit_variational_chunked(
    source,
    first: VariationalSurvey,
    start: variational.VariationalParameters,
    prior: variational.VariationalPrior,
    reg_covar: float,
    tol: float,
    config: variational.VariationalConfig,
    *,
    max_iter: int,
    lower_bound0: float = -np.inf,
    block_rows: int | None = None,
) -> tuple[variational.VariationalParameters, list[float], bool]:
    """Variational steps from ``start`` over the chunks of ``source`` (one pass each)
    until the lower bound changes by less than ``tol`` or ``max_iter`` steps.

    Args:
        source: re-readable ``(x, w)`` chunks (a
            :class:`~gaussmix.inference.streaming.ChunkSource`), those
            :func:`variational_survey` read as ``first``.
        start, prior, reg_covar, tol, config, lower_bound0: as in
            :func:`gaussmix.inference.em.variational.fit`.
        block_rows: rows per matrix product inside a chunk (None: the default).

    Returns:
        (the posterior, the lower bound after each step, converged).
    """
    dtype = first.survey.dtype
    centre = np.asarray(first.centre, dtype)
    state = variational.VariationalState(
        start, np.asarray(lower_bound0, dtype), np.zeros((), np.int32)
    )
    constants = (np.asarray(reg_covar, dtype), np.asarray(tol, dtype))
    bounds, converged = [], False
    while len(bounds) < max_iter and not converged:
        totals = _statistics_pass(source, first, state.parameters, config, block_rows)
        statistics = jax.tree.map(lambda leaf: np.asarray(leaf, dtype), totals)
        state, info = _step_jit(state, statistics, prior, centre, *constants, config=config)
        bounds.append(float(state.lower_bound))
        converged = bool(info.converged)
    return state.parameters, bounds, converged
