"""Exact EM over chunks of data that need not fit in memory (:func:`fit_em_chunked`).

The E-step statistics are sums over rows, so one EM iteration is one pass over the
chunks: one jitted statistics function per chunk shape (chunks are padded with
zero-weight rows to one shape), the statistics added on the host in float64 and summed
over processes, then the one EM step of :mod:`gaussmix.inference.em.core`:

.. math::

    S^{(t)} = \\sum_{c} \\hat S_c(\\theta^{(t)}),\\qquad
    \\theta^{(t+1)} = \\operatorname{M-step}(S^{(t)}),

which is the in-memory EM of :func:`gaussmix.inference.em.fit_em` up to the order of
the floating-point sums (equal to 1e-10 in float64).
"""

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
from jax.typing import ArrayLike

from gaussmix.inference import compilation, native
from gaussmix.inference.em import background, deconvolution, missing
from gaussmix.inference.em.background import BackgroundArguments
from gaussmix.inference.em.core import EMInfo, EMState, StepConfig, init, step
from gaussmix.inference.em.options import DEFAULT_INIT_ROWS, EMOptions, check_options
from gaussmix.inference.em.parameters import MixtureParameters
from gaussmix.inference.em.results import EMResult, best_restart
from gaussmix.inference.em.statistics import SufficientStatistics, sufficient_statistics
from gaussmix.inference.streaming.chunks import ChunkSource, pad_rows, prepare_chunk
from gaussmix.inference.streaming.processes import process_sum
from gaussmix.inference.streaming.survey import (
    Survey,
    initial_parameters,
    survey_context,
    survey_with_rows,
)
from gaussmix.models.priors import covariance_layout

__all__ = ["exact_em", "fit_em_chunked"]


def _chunk_statistics(
    x, weight, parameters, centre, covariance_type, block_rows, use_kernel, background_density=None
):
    """(R,) statistics of one chunk for stacked parameters of R restarts;
    ``background_density``: :math:`-\\log V` of a uniform background, else None."""

    def one(parameters):
        return sufficient_statistics(
            x,
            parameters,
            covariance_type=covariance_type,
            centre=centre,
            sample_weight=weight,
            block_rows=block_rows,
            use_kernel=use_kernel,
            background_log_density=background_density,
        )

    return jax.vmap(one)(parameters)


_chunk_statistics_jit = compilation.jit(
    _chunk_statistics, static_argnames=("covariance_type", "block_rows", "use_kernel")
)


def _chunk_missing_statistics(blocks, parameters, centre, covariance_type, sides=None):
    """(R,) expected statistics of one chunk with missing entries (its
    :class:`gaussmix.inference.em.missing.PatternBlocks`), R stacked restarts; ``sides``:
    the (D,) log side lengths of a uniform background's box, else None."""

    def one(parameters):
        return missing.sufficient_statistics(
            blocks,
            parameters,
            covariance_type=covariance_type,
            centre=centre,
            background_log_sides=sides,
        )

    return jax.vmap(one)(parameters)


_chunk_missing_statistics_jit = compilation.jit(
    _chunk_missing_statistics, static_argnames=("covariance_type",)
)


def _chunk_error_statistics(
    x, weight, observed, noise, parameters, centre, covariance_type, block_rows, density, sides
):
    """(R,) statistics of one chunk observed with measurement errors (extreme
    deconvolution, :func:`gaussmix.inference.em.deconvolution.block_statistics`), R
    stacked restarts; ``density``, ``sides``: a uniform background's :math:`-\\log V`
    and (D,) log side lengths, else None."""
    measurements = deconvolution.Measurements(observed, noise)

    def one(parameters):
        return deconvolution.block_statistics(
            parameters, x, weight, measurements, centre, covariance_type, block_rows, density, sides
        )

    return jax.vmap(one)(parameters)


_chunk_error_statistics_jit = compilation.jit(
    _chunk_error_statistics, static_argnames=("covariance_type", "block_rows")
)


def without_nan_rows(source):
    """The ``(x, w, s)`` chunks of ``source`` (a :class:`ChunkSource`) without their rows
    holding NaN (``nan_policy="omit"``), their measurement covariances ``s`` too; a
    generator function, so it can be read again."""

    def chunks():
        for index, (x, w, s) in enumerate(source.with_errors()):
            x = np.asarray(x)
            if x.dtype.kind != "f" or x.ndim != 2:
                yield x, w, s
                continue
            keep = ~np.isnan(x).any(axis=1)
            if s is not None:
                s = _chunk_errors(s, x, index)[keep]
            yield x[keep], None if w is None else np.asarray(w)[keep], s

    return chunks


def _chunk_errors(s, x, index: int) -> np.ndarray:
    """The measurement covariances of chunk ``index``, refused unless they have one entry
    per row of ``x``."""
    s = np.asarray(s)
    if s.ndim not in (2, 3) or s.shape[0] != np.shape(x)[0]:
        raise ValueError(
            f"the measurement covariances of chunk {index} have shape {s.shape}, but the "
            f"chunk has {np.shape(x)[0]} row(s); give one (D, D) covariance or (D,) "
            "variances per row, in the order of the chunk's rows."
        )
    return s


class _ErrorMode:
    """Whether the chunks carry measurement covariances (all or none), fixed by the
    first chunk; their values are validated on the first pass only."""

    def __init__(self):
        self.errors: bool | None = None
        self.validated = False

    def check(self, index: int, s) -> bool:
        has = s is not None
        if self.errors is None:
            self.errors = has
        elif has != self.errors:
            first = "carries" if self.errors else "does not carry"
            raise ValueError(
                f"chunk {index} {'carries' if has else 'does not carry'} measurement "
                f"covariances but the first chunk {first} them; give every chunk as "
                "(x, w, s) with the covariances of its rows, or none."
            )
        return has


def _statistics_pass(
    source,
    survey: Survey,
    local_rows: int,
    parameters,
    centre,
    options: EMOptions,
    background_density=None,
    background_sides=None,
    mode: _ErrorMode | None = None,
) -> SufficientStatistics:
    """Statistics of all rows (all processes) for stacked parameters, summed in float64;
    ``background_density``, ``background_sides``: :math:`-\\log V` of a uniform
    background and its box's (D,) log side lengths (rows with NaN), else None; ``mode``:
    the chunks' :class:`_ErrorMode` (kept between passes)."""
    rows = max(1, survey.chunk_rows)
    totals = None
    seen = 0
    centre_rows = np.asarray(centre)
    mode = _ErrorMode() if mode is None else mode
    use_kernel = (
        covariance_layout(options.covariance_type) == "full"
        and native.usable(survey.dtype)
        and background_density is None
    )
    for index, (x, w, s) in enumerate(source.with_errors()):
        x, w = prepare_chunk(x, w, survey.dtype, survey.n_features, "chunk", validate=False)
        if mode.check(index, s):
            s = deconvolution.as_measurement_covariances(
                _chunk_errors(s, x, index),
                x,
                f"measurement_covariances of chunk {index}",
                validate=not mode.validated,
            )
        for start in range(0, x.shape[0], rows):
            piece_x = x[start : start + rows]
            piece_w = None if w is None else w[start : start + rows]
            seen += piece_x.shape[0]
            padded_x, padded_w = pad_rows(piece_x, piece_w, rows, centre_rows)
            if s is not None:
                statistics = _error_statistics(
                    padded_x,
                    padded_w,
                    s[start : start + rows],
                    parameters,
                    centre,
                    options,
                    background_density,
                    background_sides,
                )
                totals = _add(totals, statistics)
                continue
            if np.isnan(padded_x).any():
                if background_density is not None and background_sides is None:
                    raise NotImplementedError(
                        "a uniform background with missing entries needs "
                        "background_log_sides (its box; a volume alone has no density over "
                        "a row's observed coordinates); pass them, or nan_policy='omit'."
                    )
                blocks = missing.prepare_chunk(
                    padded_x, padded_w, centre_rows, options.n_components, options.covariance_type
                )
                statistics = _chunk_missing_statistics_jit(
                    blocks,
                    parameters,
                    centre,
                    covariance_type=options.covariance_type,
                    sides=background_sides,
                )
                totals = _add(totals, statistics)
                continue
            statistics = _chunk_statistics_jit(
                padded_x,
                padded_w,
                parameters,
                centre,
                covariance_type=options.covariance_type,
                block_rows=options.block_rows,
                use_kernel=use_kernel,
                background_density=background_density,
            )
            totals = _add(totals, statistics)
    mode.validated = True
    if seen != local_rows:
        raise ValueError(
            f"The data changed between passes ({seen} rows now, {local_rows} on the first "
            "pass); exact EM reads the same rows on every pass."
        )
    if totals is None:  # a process without rows contributes zeros
        totals = jax.tree.map(
            lambda leaf: np.zeros(leaf.shape, np.float64),
            jax.eval_shape(
                _chunk_statistics,
                jnp.zeros((1, survey.n_features), survey.dtype),
                jnp.zeros(1, survey.dtype),
                parameters,
                centre,
                options.covariance_type,
                options.block_rows,
            ),
        )
    return process_sum(totals)


def _error_statistics(x, w, s, parameters, centre, options, density, sides):
    """The statistics of a padded piece ``x`` (rows, D) with weights ``w`` whose first
    rows carry the validated measurement covariances ``s`` (padding rows: no error)."""
    rows, n_features = x.shape
    if density is not None and sides is None and np.isnan(x).any():
        raise NotImplementedError(
            "a uniform background with missing entries needs background_log_sides (its "
            "box; a volume alone has no density over a row's observed coordinates); pass "
            "them, or nan_policy='omit'."
        )
    noise = np.zeros((rows, *s.shape[1:]), x.dtype)
    noise[: s.shape[0]] = s
    holes = np.isnan(x)
    observed = (~holes).astype(x.dtype)
    x = np.where(holes, np.asarray(centre, x.dtype), x)  # any finite value where missing
    block_rows = deconvolution.block_rows_for(
        rows, n_features, options.n_components, x.dtype.itemsize
    )
    return _chunk_error_statistics_jit(
        x,
        w,
        observed,
        noise,
        parameters,
        centre,
        covariance_type=options.covariance_type,
        block_rows=block_rows,
        density=density,
        sides=sides,
    )


def _add(totals, statistics):
    """``totals + statistics`` in float64 on the host (``statistics`` when no totals)."""
    statistics = jax.tree.map(lambda leaf: np.asarray(leaf, np.float64), statistics)
    return statistics if totals is None else jax.tree.map(np.add, totals, statistics)


def fit_em_chunked(
    data: Any,
    *,
    n_components: int | None = None,
    covariance_type: str = "full",
    priors: str | Mapping[str, dist.Distribution] | None = None,
    sample_weight: Any = None,
    max_iter: int = 100,
    tol: float = 1e-3,
    reg_covar: float = 1e-6,
    n_init: int = 1,
    init_params: str = "kmeans",
    weights_init: ArrayLike | None = None,
    means_init: ArrayLike | None = None,
    precisions_init: ArrayLike | None = None,
    seed: int | jax.Array = 0,
    start_lower_bound: float = -np.inf,
    chunk_rows: int | None = None,
    init_rows: int = DEFAULT_INIT_ROWS,
    block_rows: int | None = None,
    options: EMOptions | None = None,
    nan_policy: str = "raise",
    background_log_density: float | None = None,
    background_weight_init: float | None = None,
    background_log_sides: ArrayLike | None = None,
    measurement_covariances: Any = None,
) -> EMResult:
    """Exact EM over chunks of data that need not fit in memory.

    Every iteration is one pass: the statistics of each chunk (one jitted function, chunks
    padded to one shape), summed on the host in float64, then the M-step of
    :mod:`gaussmix.inference.em`. The answer is :func:`gaussmix.inference.em.fit_em`'s up
    to the order of floating-point sums (1e-10 in float64) when the initialization
    sample is the whole data (at most ``init_rows`` rows) or the initialization is given.
    Under ``jax.distributed`` each process passes its own rows; the statistics are summed
    across processes and every process returns the same result.

    Args:
        data: (N, D) ``np.memmap`` or array, a ``.npy`` path, an iterable of chunks that
            can be iterated repeatedly (a list, ...) or a callable returning a fresh
            iterator; a chunk is (n, D) or ``(x, w)`` with (n,) weights.
        n_components, covariance_type, priors, max_iter, tol, reg_covar, n_init: as in
            :func:`gaussmix.inference.em.fit_em`.
        init_params, weights_init, means_init, precisions_init, seed: as in ``fit_em``.
        start_lower_bound, block_rows: as in ``fit_em``.
        sample_weight: (N,) weights (array, ``np.memmap`` or ``.npy`` path) for array data.
        chunk_rows: rows per chunk read from array data (default: about 16 MiB).
        init_rows: the initialization runs on a uniform sample of at most this many rows
            (with the sample's own default prior for MAP); restarts of ``n_init`` differ
            by their seeds.
        options: a prebuilt :class:`gaussmix.inference.em.options.EMOptions`; it replaces
            every option keyword (all but ``data``, ``sample_weight``, ``chunk_rows``
            and ``nan_policy``).
        nan_policy: "raise", "marginalize" or "omit", as in
            :func:`gaussmix.inference.em.fit_em`: chunks with NaN get the expected
            statistics of :mod:`gaussmix.inference.em.missing` (the initialization sample
            sees each NaN as its column's weighted mean), or lose their rows with NaN.
            Maximum likelihood only with NaN (MAP's default prior needs the moments of
            the completed data: fit in memory).
        background_log_density, background_weight_init, background_log_sides: a uniform
            background component of density :math:`1/V`, as in
            :func:`gaussmix.inference.em.fit_em` (:math:`-\\log V` given: the caller
            finds the volume, e.g. the bounding box of all chunks; with NaN under
            "marginalize" the box's log side lengths are needed).
        measurement_covariances: (N, D, D) or (N, D) measurement covariances of the rows
            of array data (array, ``np.memmap`` or ``.npy`` path), read chunk by chunk
            with them: extreme deconvolution, as ``fit_em``'s argument (each chunk's
            statistics from :func:`gaussmix.inference.em.deconvolution.block_statistics`,
            summed). Chunks of an iterable carry theirs as ``(x, w, s)`` (all chunks or
            none; checked against the chunk's rows, validated on the first pass).

    Returns:
        :class:`gaussmix.inference.em.EMResult`.

    Raises:
        ValueError: bad input, data that can be read only once (a generator: use
            :func:`fit_em_online` or pass a callable that returns a fresh iterator), data
            that changes between passes, or a collapsed component.

    Example:
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> x = np.concatenate([rng.normal(m, 1.0, (500, 2)) for m in (-5.0, 5.0)])
        >>> chunks = [x[i : i + 300] for i in range(0, 1000, 300)]
        >>> result = fit_em_chunked(chunks, n_components=2, covariance_type="diag")
        >>> sorted(np.round(np.asarray(result.params["means"][:, 0])).tolist())
        [-5.0, 5.0]
    """
    if options is None:
        options = check_options(
            n_components=n_components,
            covariance_type=covariance_type,
            priors=priors,
            max_iter=max_iter,
            tol=tol,
            reg_covar=reg_covar,
            n_init=n_init,
            init_params=init_params,
            weights_init=weights_init,
            means_init=means_init,
            precisions_init=precisions_init,
            seed=seed,
            start_lower_bound=start_lower_bound,
            block_rows=block_rows,
            init_rows=init_rows,
        )
    if nan_policy not in missing.NAN_POLICIES:
        raise ValueError(
            f"Invalid value for 'nan_policy': {nan_policy!r}; it should be in "
            f"{list(missing.NAN_POLICIES)}."
        )
    source = ChunkSource(
        data,
        sample_weight=sample_weight,
        chunk_rows=chunk_rows,
        measurement_covariances=measurement_covariances,
    )
    if nan_policy == "omit":
        source = ChunkSource(without_nan_rows(source)) if source.reiterable else source
    if not source.reiterable:
        raise ValueError(
            "Exact EM reads the data once per iteration, but this iterator can be read only "
            "once; pass a list of chunks or a callable returning a fresh iterator, or use "
            "fit_em_online (one pass)."
        )
    survey, local_rows = survey_with_rows(source, options, allow_nan=nan_policy == "marginalize")
    arguments = background.streamed_arguments(
        background_log_density,
        background_weight_init,
        options.method,
        survey.dtype,
        background_log_sides,
        survey.n_features,
    )
    density = sides = None
    if arguments is not None:
        density, sides = arguments.log_density, arguments.log_sides
    mode = _ErrorMode()
    return exact_em(
        lambda parameters, centre: _statistics_pass(
            source, survey, local_rows, parameters, centre, options, density, sides, mode
        ),
        survey,
        options,
        initial_parameters(survey, options),
        arguments,
    )


def _select(mask: np.ndarray, new, old):
    """Per restart (leading axis), ``new`` where ``mask`` else ``old``."""
    mask = jnp.asarray(mask)
    return jax.tree.map(
        lambda n, o: jnp.where(mask.reshape((-1,) + (1,) * (n.ndim - 1)), n, o), new, old
    )


def _stacked_step(states: EMState, statistics: SufficientStatistics, context, config):
    """:func:`gaussmix.inference.em.core.step` of each restart (leading axis)."""
    return jax.vmap(lambda state, totals: step(state, totals, context, config))(states, statistics)


_stacked_step_jit = compilation.jit(_stacked_step, static_argnames=("config",))


def exact_em(
    statistics_pass: Callable[[MixtureParameters, jax.Array], SufficientStatistics],
    survey: Survey,
    options: EMOptions,
    parameters: MixtureParameters,
    background_arguments: BackgroundArguments | None = None,
) -> EMResult:
    """The host loop of exact EM around the one EM step, restarts stacked.

    Args:
        statistics_pass: ``(parameters (R,), centre) -> statistics (R,)`` of all data (all
            processes), float64 host arrays.
        survey: the first pass (:func:`gaussmix.inference.streaming.survey.take_survey`).
        options: the validated :class:`gaussmix.inference.em.options.EMOptions`.
        parameters: (R,) stacked starts.
        background_arguments: a uniform background's
            :class:`gaussmix.inference.em.background.BackgroundArguments` (the starts'
            weights are scaled by one minus its start weight), else None.

    Returns:
        The best restart's :class:`gaussmix.inference.em.EMResult`.
    """
    dtype = survey.dtype
    config = StepConfig.from_options(options)
    context = survey_context(survey, options)
    if background_arguments is not None:
        config = config._replace(background=True)
        context = context._replace(background_log_density=background_arguments.log_density)
        parameters = background.start_parameters(parameters, background_arguments.start_weight)
    n_restarts = parameters.weights.shape[0]
    states = jax.vmap(lambda start: init(start, options.start_lower_bound))(parameters)
    lower_bounds = np.full((n_restarts, options.max_iter), -np.inf, dtype)
    converged = np.zeros(n_restarts, bool)
    collapsed = np.full(n_restarts, -1, np.int32)
    while True:
        n_iter = np.asarray(states.n_iter)
        active = (n_iter < options.max_iter) & ~converged & (collapsed < 0)
        if not active.any():
            break
        totals = statistics_pass(states.parameters, context.centre)
        statistics = jax.tree.map(lambda leaf: jnp.asarray(leaf, dtype), totals)
        new_states, infos = _stacked_step_jit(states, statistics, context, config=config)
        states = _select(active, new_states, states)
        bound = np.asarray(infos.lower_bound)
        for restart in np.flatnonzero(active):
            lower_bounds[restart, n_iter[restart]] = bound[restart]
        converged = np.where(active, np.asarray(infos.converged), converged)
        collapsed = np.where(active, np.asarray(infos.collapsed_component), collapsed)
    infos = EMInfo(states.lower_bound, np.zeros(n_restarts, dtype), converged, collapsed)
    result = best_restart(states, infos, lower_bounds, config, options.max_iter, dtype)
    if background_arguments is None:
        return result
    weight = background.background_weight(result.params["weights"])
    return result._replace(background_weight=jnp.asarray(weight))
