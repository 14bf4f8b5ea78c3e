"""Out-of-core EM for the Gaussian mixture: exact EM over chunks and online EM.

Data that does not fit in memory is read in row chunks: an ``np.memmap``, a ``.npy``
path (opened with ``np.load(mmap_mode="r")``), an iterable of chunks or a callable that
returns a fresh iterator of chunks. Each chunk is an (n, D) array or an ``(x, w)`` tuple
with its (n,) sample weights.

Exact EM (:func:`fit_em_chunked`). The E-step statistics of
:func:`gaussmix.inference.em.sufficient_statistics` are sums over points, so one EM
iteration is one pass over the chunks: one jitted statistics function per chunk shape
(chunks are padded with zero-weight rows to one shape), the statistics added on the host
in float64, then the M-step of :mod:`gaussmix.inference.em`:

.. math::

    S^{(t)} = \\sum_{c} \\hat S_c(\\theta^{(t)}),\\qquad
    \\theta^{(t+1)} = \\operatorname{M-step}(S^{(t)}),

which is the in-memory EM of :func:`gaussmix.inference.em.fit_em` up to the order of
the floating-point sums (equal to 1e-10 in float64). A first pass finds the weighted mean
(the centre of the moments), the moments of the default prior (MAP) and a uniform sample
of at most ``init_rows`` rows on which the initialization runs (``fit_em`` with
``max_iter=0``); with at most ``init_rows`` rows the sample is the whole data in order and
the fit equals ``fit_em``'s, initialization included. Under ``jax.distributed`` each
process passes its own rows and the statistics are summed across processes, so every
process reaches the same answer.

Online EM (:func:`fit_em_online`, :func:`online_em_step`), Cappé and Moulines (2009):
the statistics per unit weight are a running average with a decreasing step size

.. math::

    s_t = (1 - \\rho_t)\\, s_{t-1} + \\rho_t\\, \\hat s(x_{(t)}; \\theta_{t-1}),\\qquad
    \\rho_t = (t + \\tau_0)^{-\\kappa},\\quad \\kappa \\in (0.5, 1],

and :math:`\\theta_t` is the M-step of :math:`W_t s_t` (:math:`W_t` the weight seen so
far), one pass over the data. The start is EM on the first chunk. Continuing a fit
(:func:`online_em_continue`), the fitted data's statistics start the average with its
weight :math:`W_0` and each chunk enters by its share, :math:`\\rho_t = w_t / W_t`
(incremental EM).

Peak memory is one chunk plus the model: pages of a memory-mapped file are released
after each chunk, so a 4 GB file is fitted within a few hundred MB (see BENCHMARKS.md).
"""

import math
import mmap
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
from jax.typing import ArrayLike

from gaussmix.inference import em
from gaussmix.models.priors import (
    COVARIANCE_SITES,
    MixturePriorParameters,
    check_covariance_type,
    default_prior_parameters,
)

__all__ = [
    "DEFAULT_INIT_ROWS",
    "ChunkSource",
    "OnlineEMState",
    "check_schedule",
    "fit_em_chunked",
    "fit_em_online",
    "online_em_continue",
    "online_em_result",
    "online_em_start",
    "online_em_step",
    "step_size",
]

#: Rows of the uniform sample the initialization (k-means, ...) runs on.
DEFAULT_INIT_ROWS = 100_000
#: Bytes of data per chunk read from an array or a file.
_CHUNK_BYTES = 16 * 2**20


# ---------------------------------------------------------------------------------------
# Chunks


def _mapped_buffer(array) -> mmap.mmap | None:
    """The ``mmap.mmap`` under a memory-mapped array (np.memmap, np.load(mmap_mode=...))."""
    base = array
    while base is not None:
        if isinstance(base, mmap.mmap):
            return base
        base = getattr(base, "base", None)
    return None


def _release(buffer: mmap.mmap | None) -> None:
    """Drop the pages of a read-only mapping from this process (they stay in the page
    cache and are read again on the next access), so that the resident set stays at one
    chunk however large the file."""
    if buffer is None or not hasattr(mmap, "MADV_DONTNEED"):
        return
    try:
        buffer.madvise(mmap.MADV_DONTNEED)
    except (OSError, ValueError):
        pass


def _open_array(data, name: str):
    if isinstance(data, str | os.PathLike):
        path = os.fspath(data)
        if not path.endswith(".npy"):
            raise ValueError(
                f"{name} path {path!r} is not a .npy file; save the array with np.save (or "
                "pass an np.memmap or an iterable of chunks)."
            )
        if not os.path.isfile(path):
            raise ValueError(f"{name} file {path!r} does not exist.")
        return np.load(path, mmap_mode="r")
    return data


def _is_array(data) -> bool:
    return isinstance(data, np.ndarray | jax.Array | str | os.PathLike) or (
        hasattr(data, "__array__") and hasattr(data, "shape")
    )


class ChunkSource:
    """Data read in row chunks, possibly several times.

    Args:
        data: an (N, D) array (``np.memmap`` included; slices are read lazily), a path
            to a ``.npy`` file, an iterable of chunks, or a callable returning a fresh
            iterator of chunks. A chunk is an (n, D) array or an ``(x, w)`` tuple with
            (n,) weights.
        sample_weight: (N,) weights (an array, ``np.memmap`` or ``.npy`` path) for array
            data; chunks of an iterable carry their own weights instead.
        chunk_rows: rows per chunk read from an array (default: about 16 MiB).

    Attributes:
        reiterable: whether the data can be read more than once (a generator or an
            iterator can be read once only: online EM, not exact EM).

    Example:
        >>> import numpy as np
        >>> source = ChunkSource(np.zeros((10, 2)), chunk_rows=4)
        >>> [x.shape[0] for x, _ in source]
        [4, 4, 2]
    """

    def __init__(self, data, *, sample_weight=None, chunk_rows: int | None = None):
        if chunk_rows is not None and (
            not isinstance(chunk_rows, int | np.integer)
            or isinstance(chunk_rows, bool)
            or chunk_rows < 1
        ):
            raise ValueError(f"chunk_rows must be an int >= 1, got {chunk_rows!r}.")
        self._array = None
        self._weight = None
        self._factory: Callable[[], Iterator] | None = None
        self._chunk_rows = chunk_rows
        if _is_array(data):
            array = _open_array(data, "data")
            if array.ndim != 2:
                raise ValueError(
                    f"data must have shape (N, D), got shape {tuple(array.shape)}; reshape "
                    "1-D data with x.reshape(-1, 1)."
                )
            self._array = array
            if sample_weight is not None:
                weight = _open_array(sample_weight, "sample_weight")
                if not hasattr(weight, "shape"):
                    weight = np.asarray(weight)
                if tuple(weight.shape) != (array.shape[0],):
                    raise ValueError(
                        f"sample_weight has shape {tuple(weight.shape)}; expected "
                        f"({array.shape[0]},), one weight per row."
                    )
                self._weight = weight
            self.reiterable = True
        elif sample_weight is not None:
            raise ValueError(
                "sample_weight applies to array data; give chunks of an iterable as (x, w) "
                "tuples instead."
            )
        elif callable(data):
            self._factory = data
            self.reiterable = True
        elif isinstance(data, Iterable):
            if iter(data) is data:
                once = [data]
                self._factory = lambda: once.pop() if once else iter(())
                self.reiterable = False
            else:
                self._factory = lambda: iter(data)
                self.reiterable = True
        else:
            raise ValueError(
                "data must be an (N, D) array, an np.memmap, a .npy path, an iterable of "
                f"chunks or a callable returning an iterator of chunks; got {type(data).__name__}."
            )

    @property
    def n_rows(self) -> int | None:
        """N for array data, None for iterables (known after a pass)."""
        return None if self._array is None else int(self._array.shape[0])

    def __iter__(self) -> Iterator[tuple[Any, Any]]:
        if self._array is None:
            for chunk in self._factory():
                if isinstance(chunk, tuple):
                    if len(chunk) != 2:
                        raise ValueError(
                            f"A chunk given as a tuple must be (x, w); got a tuple of {len(chunk)}."
                        )
                    yield chunk
                else:
                    yield chunk, None
            return
        array, weight = self._array, self._weight
        n_rows, n_features = array.shape
        itemsize = max(4, np.dtype(getattr(array, "dtype", np.float64)).itemsize)
        rows = self._chunk_rows or max(1024, _CHUNK_BYTES // (max(1, n_features) * itemsize))
        buffers = [_mapped_buffer(array), _mapped_buffer(weight)]
        for start in range(0, n_rows, rows):
            x = np.array(array[start : start + rows])
            w = None if weight is None else np.array(weight[start : start + rows])
            for buffer in buffers:
                _release(buffer)
            yield x, w


def _chunk_dtype(x) -> np.dtype:
    kind = np.asarray(x[:0]).dtype
    if kind.kind not in "biuf":
        raise ValueError(f"data must be numeric, got dtype {kind}.")
    return np.dtype(jax.dtypes.canonicalize_dtype(kind if kind.kind == "f" else np.float64))


def _prepare(x, w, dtype, n_features, where: str, validate: bool):
    """A chunk as (x (n, D) dtype, w (n,) dtype or None), checked when ``validate``;
    ``where`` names it in error messages ("chunk 3")."""
    x = np.asarray(x)
    if validate:
        if x.dtype.kind not in "biuf":
            raise ValueError(f"{where} must be numeric, got dtype {x.dtype}.")
        if x.ndim != 2 or (n_features is not None and x.shape[1] != n_features):
            expected = "(n, D)" if n_features is None else f"(n, {n_features})"
            raise ValueError(
                f"{where} has shape {x.shape}; it must have shape {expected} "
                "(reshape 1-D data with x.reshape(-1, 1))."
            )
    x = x.astype(dtype, copy=False)
    if validate and not np.all(np.isfinite(x)):
        raise ValueError(f"{where} contains NaN or infinity; remove or impute those values first.")
    if w is not None:
        w = np.asarray(w)
        if validate:
            if w.dtype.kind not in "biuf":
                raise ValueError(f"sample_weight must be numeric, got dtype {w.dtype}.")
            if w.shape != (x.shape[0],):
                raise ValueError(
                    f"the weights of {where} have shape {w.shape}; expected "
                    f"({x.shape[0]},), one weight per row."
                )
        w = w.astype(dtype, copy=False)
        if validate and (not np.all(np.isfinite(w)) or np.any(w < 0)):
            raise ValueError(
                f"the weights of {where} must be finite and non-negative; fix sample_weight."
            )
    return x, w


# ---------------------------------------------------------------------------------------
# Across processes (jax.distributed): exact sums of host arrays


def _process_gather(array: np.ndarray) -> np.ndarray:
    """(P, ...) the same-shaped arrays of all processes, bit-exact (float64 included)."""
    array = np.ascontiguousarray(array)
    if jax.process_count() == 1:
        return array[None]
    from jax.experimental import multihost_utils

    raw = array.reshape(-1).view(np.uint8)
    gathered = np.asarray(multihost_utils.process_allgather(raw))
    return gathered.view(array.dtype).reshape(jax.process_count(), *array.shape)


def _process_sum(tree):
    """Sum of a pytree of host arrays over processes, in float64, the same on each."""
    if jax.process_count() == 1:
        return tree
    return jax.tree.map(lambda leaf: _process_gather(np.asarray(leaf)).sum(axis=0), tree)


def _broadcast_from_first(tree):
    """Process 0's pytree of arrays on every process (the initialization)."""
    if jax.process_count() == 1:
        return tree
    from jax.experimental import multihost_utils

    leaves, treedef = jax.tree.flatten(tree)
    host = [np.ascontiguousarray(np.asarray(leaf)) for leaf in leaves]
    raw = multihost_utils.broadcast_one_to_all([leaf.reshape(-1).view(np.uint8) for leaf in host])
    leaves = [
        jnp.asarray(np.asarray(r).view(leaf.dtype).reshape(leaf.shape))
        for r, leaf in zip(raw, host, strict=True)
    ]
    return jax.tree.unflatten(treedef, leaves)


# ---------------------------------------------------------------------------------------
# First pass: size, centre, moments, initialization sample


class _Survey(NamedTuple):
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


def _numpy_seed(seed) -> int:
    if isinstance(seed, jax.Array):
        return int(jax.random.bits(seed, dtype=jnp.uint32))
    return int(seed)


def _survey(source: ChunkSource, *, moments: bool, init_rows: int, seed) -> _Survey:
    """One validating pass: N, total weight, weighted sum, moments, a uniform sample.

    The sample keeps the ``init_rows`` rows of smallest uniform priority (all rows when
    there are not more), sorted by global row index.
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
    for index, (x, w) in enumerate(source):
        if dtype is None:
            dtype = _chunk_dtype(np.asarray(x))
        x, w = _prepare(x, w, dtype, n_features, f"chunk {index}", validate=True)
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
    return _combine_processes(
        _Survey(
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
        ),
        keys,
        indices,
        init_rows,
        weighted,
    )


def _combine_processes(survey: _Survey, keys, indices, init_rows: int, weighted: bool) -> _Survey:
    """Merge the surveys of all processes (identity with one process)."""
    order = np.argsort(indices, kind="stable")
    if jax.process_count() == 1:
        weights = survey.sample_weight[order] if weighted else None
        return survey._replace(sample=survey.sample[order], sample_weight=weights)
    n_features = survey.n_features
    header = np.array([survey.n_rows, n_features, float(weighted), survey.total_weight], np.float64)
    headers = _process_gather(header)
    if np.any(headers[:, 1] != n_features):
        raise ValueError(
            f"The processes hold data with different numbers of features {headers[:, 1]}."
        )
    counts = headers[:, 0].astype(np.int64)
    offset = int(counts[: jax.process_index()].sum())
    weighted = bool(np.any(headers[:, 2]))
    moments = survey.mean is not None
    sums = _process_gather(survey.weighted_sum).sum(axis=0)
    mean, scatter = survey.mean, survey.scatter
    if moments:
        means = _process_gather(mean)
        scatters = _process_gather(scatter)
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
    all_keys = _process_gather(padded_keys).reshape(-1)
    all_indices = _process_gather(padded_indices).reshape(-1)
    all_rows = _process_gather(padded_rows).reshape(-1, n_features)
    all_weights = _process_gather(padded_weights).reshape(-1)
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
    )


def _prior_parameters(survey: _Survey, covariance_type: str, dtype) -> MixturePriorParameters:
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


# ---------------------------------------------------------------------------------------
# Options, initialization and the EM update shared with gaussmix.inference.shard


class _Options(NamedTuple):
    """Checked options of an exact fit."""

    n_components: int
    covariance_type: str
    method: str
    priors: dict
    max_iter: int
    n_init: int
    tol: float
    reg_covar: float
    init_params: str
    init_rows: int


def _check_options(
    n_components, covariance_type, priors, max_iter, n_init, tol, reg_covar, init_params, init_rows
) -> _Options:
    check_covariance_type(covariance_type)
    for name, value, low in (
        ("n_components", n_components, 1),
        ("max_iter", max_iter, 0),
        ("n_init", n_init, 1),
        ("init_rows", init_rows, 1),
    ):
        if not isinstance(value, int | np.integer) or isinstance(value, bool) or value < low:
            raise ValueError(f"Invalid value for '{name}': {value!r}; it must be an int >= {low}.")
    if init_rows < n_components:
        raise ValueError(
            f"init_rows = {init_rows} is below n_components = {n_components}; the "
            "initialization needs at least one row per component."
        )
    for name, value in (("tol", tol), ("reg_covar", reg_covar)):
        if not np.isfinite(value) or value < 0:
            raise ValueError(
                f"Invalid value for '{name}': {value!r}; it must be a finite number >= 0."
            )
    if init_params not in em.INIT_PARAMS:
        raise ValueError(
            f"Invalid value for 'init_params': {init_params!r}; it should be in "
            f"{list(em.INIT_PARAMS)}."
        )
    method, priors = em._check_priors(priors, covariance_type, n_components=n_components)
    return _Options(
        int(n_components),
        covariance_type,
        method,
        priors,
        int(max_iter),
        int(n_init),
        float(tol),
        float(reg_covar),
        init_params,
        int(init_rows),
    )


def _em_config(options: _Options, block_rows: int | None) -> em._Config:
    """em's static configuration; ``block_rows`` (None: sufficient_statistics' default)
    is what the statistics of a chunk or a device's rows are computed with."""
    return em._Config(
        n_components=options.n_components,
        covariance_type=options.covariance_type,
        max_iter=options.max_iter,
        n_init=options.n_init,
        init_params=options.init_params,
        method=options.method,
        block_rows=None if block_rows is None else int(block_rows),
        with_scales="scales" in options.priors,
        batched=False,
    )


def _parameters_of(result: em.EMResult, covariance_type: str) -> em.MixtureParameters:
    params = result.params
    return em.MixtureParameters(
        params["weights"],
        params["means"],
        params[COVARIANCE_SITES[covariance_type]],
        result.precisions_cholesky,
    )


def _initial_parameters(
    survey: _Survey, options: _Options, inits: dict, seed
) -> em.MixtureParameters:
    """Stacked (R,) starting points: ``fit_em(sample, max_iter=0)`` per restart.

    Restart 0 has ``fit_em``'s seed, so on a sample that is the whole data it starts
    exactly where ``fit_em`` does, and more restarts can only raise the lower bound.
    """
    n_init = options.n_init
    if all(inits[name] is not None for name in ("weights_init", "means_init", "precisions_init")):
        n_init = 1
    # Restart 0 uses the seed itself (fit_em's start); restart r > 0 folds r into it.
    key = seed if isinstance(seed, jax.Array) else jax.random.key(int(seed))
    seeds = [seed] + [jax.random.fold_in(key, restart) for restart in range(1, n_init)]
    starts = []
    for restart_seed in seeds:
        result = em.fit_em(
            survey.sample,
            n_components=options.n_components,
            covariance_type=options.covariance_type,
            priors=options.priors if options.method != "maximum_likelihood" else None,
            sample_weight=survey.sample_weight,
            max_iter=0,
            reg_covar=options.reg_covar,
            n_init=1,
            init_params=options.init_params,
            seed=restart_seed,
            **inits,
        )
        starts.append(_parameters_of(result, options.covariance_type))
    stacked = jax.tree.map(lambda *leaves: jnp.stack(leaves), *starts)
    return _broadcast_from_first(stacked)


def _priors_argument(options: _Options):
    """The priors as the EM program takes them ('default' is an empty dict)."""
    return options.priors if options.method != "maximum_likelihood" else {}


def _prior_setup(survey: _Survey, options: _Options):
    """(prior_parameters, conjugate_prior) of the whole data, or (None, None) for ML."""
    if options.method == "maximum_likelihood":
        return None, None
    dtype = survey.dtype
    prior_parameters = _prior_parameters(survey, options.covariance_type, dtype)
    conjugate = None
    if options.method == "conjugate_map":
        conjugate = em._conjugate_prior(
            options.priors, prior_parameters, options.n_components, options.covariance_type, dtype
        )
    return prior_parameters, conjugate


def _em_update(
    statistics, parameters, centre, reg_covar, priors, prior_parameters, conjugate_prior, config
):
    """One EM update from summed statistics (pure): the lower bound of ``parameters``
    (scikit-learn's, + log prior / total weight for MAP), the M-step, and the first
    component whose new covariance is not positive definite (-1 if none)."""
    context = em._Context(
        config.n_components, config.covariance_type, priors, prior_parameters, conjugate_prior
    )
    bound = em._lower_bound(statistics, parameters, config, context)
    new = em._m_step(statistics, parameters, centre, reg_covar, config, context)
    collapsed = em._collapsed(new, config.covariance_type)
    component = jnp.where(jnp.any(collapsed), jnp.argmax(collapsed), -1).astype(jnp.int32)
    return bound, new, component


def _finish(
    parameters, lower_bound, lower_bounds, n_iter, converged, collapsed, config, dtype
) -> em.EMResult:
    """Best restart by lower bound, errors as ``fit_em`` raises them, an EMResult."""
    parameters, lower_bound, lower_bounds, n_iter, converged, collapsed = (
        jax.tree.map(np.asarray, value)
        for value in (parameters, lower_bound, lower_bounds, n_iter, converged, collapsed)
    )
    best = int(np.argmax(lower_bound))
    em._raise_on_failure(collapsed[None], n_iter[None], lower_bound[None], False, config, dtype)
    chosen = jax.tree.map(lambda leaf: jnp.asarray(leaf[best]), parameters)
    filled = np.where(
        np.arange(config.max_iter) < n_iter[best], lower_bounds[best], lower_bound[best]
    )
    return em.EMResult(
        params=em.site_values(chosen, config.covariance_type, with_scales=config.with_scales),
        precisions_cholesky=chosen.precisions_cholesky,
        lower_bound=jnp.asarray(lower_bound[best]),
        lower_bounds=jnp.asarray(filled.astype(lower_bounds.dtype)),
        n_iter=jnp.asarray(n_iter[best]),
        converged=jnp.asarray(converged[best]),
        method=config.method,
    )


# ---------------------------------------------------------------------------------------
# Exact EM over chunks


def _chunk_statistics(x, weight, parameters, centre, covariance_type, block_rows):
    """(R,) statistics of one chunk for stacked parameters of R restarts."""

    def one(parameters):
        return em.sufficient_statistics(
            x,
            parameters,
            covariance_type=covariance_type,
            centre=centre,
            sample_weight=weight,
            block_rows=block_rows,
        )

    return jax.vmap(one)(parameters)


_chunk_statistics_jit = jax.jit(
    _chunk_statistics, static_argnames=("covariance_type", "block_rows")
)


def _stacked_update(
    statistics, parameters, centre, reg_covar, priors, prior_parameters, conjugate_prior, config
):
    def one(statistics, parameters):
        return _em_update(
            statistics,
            parameters,
            centre,
            reg_covar,
            priors,
            prior_parameters,
            conjugate_prior,
            config,
        )

    return jax.vmap(one)(statistics, parameters)


_stacked_update_jit = jax.jit(_stacked_update, static_argnames=("config",))


def _pad_rows(x, w, rows: int, centre: np.ndarray):
    """Pad a chunk to ``rows`` rows with the centre and zero weight (they add nothing)."""
    n = x.shape[0]
    weight = np.ones(n, x.dtype) if w is None else w
    if n == rows:
        return x, weight
    padded = np.empty((rows, x.shape[1]), x.dtype)
    padded[:n] = x
    padded[n:] = centre
    return padded, np.concatenate([weight, np.zeros(rows - n, x.dtype)])


def _statistics_pass(
    source, survey, local_rows, parameters, centre, config
) -> em.SufficientStatistics:
    """Statistics of all rows (all processes) for stacked parameters, summed in float64."""
    rows = max(1, survey.chunk_rows)
    totals = None
    seen = 0
    centre_rows = np.asarray(centre)
    for x, w in source:
        x, w = _prepare(x, w, survey.dtype, survey.n_features, "chunk", validate=False)
        for start in range(0, x.shape[0], rows):
            piece_x = x[start : start + rows]
            piece_w = None if w is None else w[start : start + rows]
            seen += piece_x.shape[0]
            padded_x, padded_w = _pad_rows(piece_x, piece_w, rows, centre_rows)
            statistics = _chunk_statistics_jit(
                padded_x,
                padded_w,
                parameters,
                centre,
                covariance_type=config.covariance_type,
                block_rows=config.block_rows,
            )
            statistics = jax.tree.map(lambda leaf: np.asarray(leaf, np.float64), statistics)
            totals = statistics if totals is None else jax.tree.map(np.add, totals, statistics)
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
                config.covariance_type,
                config.block_rows,
            ),
        )
    return _process_sum(totals)


def fit_em_chunked(
    data: Any,
    *,
    n_components: int,
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
) -> em.EMResult:
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
        n_components, covariance_type, priors, max_iter, tol, reg_covar, n_init,
            init_params, weights_init, means_init, precisions_init, seed,
            start_lower_bound, block_rows: as in :func:`gaussmix.inference.em.fit_em`.
        sample_weight: (N,) weights (array, ``np.memmap`` or ``.npy`` path) for array data.
        chunk_rows: rows per chunk read from array data (default: about 16 MiB).
        init_rows: the initialization runs on a uniform sample of at most this many rows
            (with the sample's own default prior for MAP); restarts of ``n_init`` differ
            by their seeds.

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
    options = _check_options(
        n_components, covariance_type, priors, max_iter, n_init, tol, reg_covar, init_params,
        init_rows,
    )  # fmt: skip
    source = ChunkSource(data, sample_weight=sample_weight, chunk_rows=chunk_rows)
    if not source.reiterable:
        raise ValueError(
            "Exact EM reads the data once per iteration, but this iterator can be read only "
            "once; pass a list of chunks or a callable returning a fresh iterator, or use "
            "fit_em_online (one pass)."
        )
    survey, local_rows = _survey_with_rows(source, options, seed)
    inits = {
        "weights_init": weights_init,
        "means_init": means_init,
        "precisions_init": precisions_init,
    }
    parameters = _initial_parameters(survey, options, inits, seed)
    return _exact_em(
        lambda parameters, centre, config: _statistics_pass(
            source, survey, local_rows, parameters, centre, config
        ),
        survey,
        options,
        parameters,
        start_lower_bound,
        block_rows,
    )


def _survey_with_rows(source: ChunkSource, options: _Options, seed) -> tuple[_Survey, int]:
    """The survey of all processes and the number of rows of this process."""
    counting = _Counting(source)
    survey = _survey(
        counting,
        moments=options.method != "maximum_likelihood",
        init_rows=options.init_rows,
        seed=seed,
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

    def __init__(self, source: ChunkSource):
        self._source, self.rows = source, 0

    def __iter__(self):
        for x, w in self._source:
            self.rows += int(np.shape(x)[0])
            yield x, w


def _select(mask: np.ndarray, new, old):
    """Per restart (leading axis), ``new`` where ``mask`` else ``old``."""
    mask = jnp.asarray(mask)
    return jax.tree.map(
        lambda n, o: jnp.where(mask.reshape((-1,) + (1,) * (n.ndim - 1)), n, o), new, old
    )


def _exact_em(
    statistics_pass, survey: _Survey, options: _Options, parameters, start_lower_bound, block_rows
) -> em.EMResult:
    """The host loop of exact EM; ``statistics_pass(parameters, centre, config)`` returns
    the float64 statistics of all data for stacked parameters."""
    dtype = survey.dtype
    config = _em_config(options, block_rows)
    centre = jnp.asarray(survey.weighted_sum / survey.total_weight, dtype)
    prior_parameters, conjugate_prior = _prior_setup(survey, options)
    priors = _priors_argument(options)
    n_restarts = parameters.weights.shape[0]
    lower_bound = np.full(n_restarts, start_lower_bound, np.float64)
    lower_bounds = np.full((n_restarts, options.max_iter), -np.inf)
    n_iter = np.zeros(n_restarts, np.int32)
    converged = np.zeros(n_restarts, bool)
    collapsed = np.full(n_restarts, -1, np.int32)
    reg_covar = jnp.asarray(options.reg_covar, dtype)
    while True:
        active = (n_iter < options.max_iter) & ~converged & (collapsed < 0)
        if not active.any():
            break
        totals = statistics_pass(parameters, centre, config)
        statistics = jax.tree.map(lambda leaf: jnp.asarray(leaf, dtype), totals)
        bound, new, component = _stacked_update_jit(
            statistics,
            parameters,
            centre,
            reg_covar,
            priors,
            prior_parameters,
            conjugate_prior,
            config=config,
        )
        bound = np.asarray(bound, np.float64)
        parameters = _select(active, new, parameters)
        change = bound - lower_bound
        for restart in np.flatnonzero(active):
            lower_bounds[restart, n_iter[restart]] = bound[restart]
        lower_bound = np.where(active, bound, lower_bound)
        converged = np.where(active, np.abs(change) < options.tol, converged)
        collapsed = np.where(active, np.asarray(component), collapsed)
        n_iter = n_iter + active
    lower_bound = lower_bound.astype(dtype)
    return _finish(
        parameters, lower_bound, lower_bounds.astype(dtype), n_iter, converged, collapsed,
        config, dtype,
    )  # fmt: skip


# ---------------------------------------------------------------------------------------
# Online EM


class OnlineEMState(NamedTuple):
    """State of online EM.

    Attributes:
        parameters: current :class:`gaussmix.inference.em.MixtureParameters`.
        statistics: running average of the statistics per unit weight (moments about
            ``centre``; ``total_weight`` is 1).
        centre: (D,) weighted mean of the first chunk, the centre of all moments.
        n_updates: () online updates done (chunks after the first).
        total_weight: () weight seen so far, :math:`W_t`.
        lower_bound: () running average of the per-sample log-likelihood (+ log prior /
            :math:`W_t` for MAP) of the parameters that entered each update.
        prior_parameters: the default prior of the first chunk (MAP), else None.
        conjugate_prior: the closed-form MAP prior, else None.
        incremental: () False: step sizes :math:`\\rho_t = (t + \\tau_0)^{-\\kappa}`
            (Cappé and Moulines); True: each chunk's share of all weight seen,
            :math:`\\rho_t = w_t / W_t` (incremental EM, the state continues a fit; see
            :func:`online_em_continue`).
    """

    parameters: em.MixtureParameters
    statistics: em.SufficientStatistics
    centre: jax.Array
    n_updates: jax.Array
    total_weight: jax.Array
    lower_bound: jax.Array
    prior_parameters: Any
    conjugate_prior: Any
    incremental: Any = False


def step_size(n_updates: ArrayLike, learning_decay: float, learning_offset: float) -> jax.Array:
    """Step size :math:`\\rho_t = (t + \\tau_0)^{-\\kappa}` of online EM.

    Args:
        n_updates: t >= 1, the index of the update.
        learning_decay: :math:`\\kappa \\in (0.5, 1]` (Robbins-Monro: :math:`\\sum \\rho_t
            = \\infty`, :math:`\\sum \\rho_t^2 < \\infty`).
        learning_offset: :math:`\\tau_0 \\ge 0`; larger values trust early chunks less.

    Example:
        >>> float(step_size(1, 1.0, 0.0))
        1.0
    """
    return (jnp.asarray(n_updates, float) + learning_offset) ** (-learning_decay)


def check_schedule(learning_decay: float, learning_offset: float) -> None:
    """Raise ValueError unless :math:`\\kappa \\in (0.5, 1]` and :math:`\\tau_0 \\ge 0`.

    Example:
        >>> check_schedule(0.7, 10.0)
    """
    if not (0.5 < float(learning_decay) <= 1.0):
        raise ValueError(
            f"learning_decay must be in (0.5, 1] so that the step sizes sum to infinity "
            f"while their squares converge; got {learning_decay!r}."
        )
    if not (np.isfinite(learning_offset) and float(learning_offset) >= 0):
        raise ValueError(f"learning_offset must be a finite number >= 0; got {learning_offset!r}.")


def _normalized(statistics: em.SufficientStatistics) -> em.SufficientStatistics:
    return jax.tree.map(lambda leaf: leaf / statistics.total_weight, statistics)


def _online_start(x, weight, parameters, priors, prior_parameters, conjugate_prior, config):
    centre = weight @ x / jnp.sum(weight)
    statistics = em.sufficient_statistics(
        x,
        parameters,
        covariance_type=config.covariance_type,
        centre=centre,
        sample_weight=weight,
        block_rows=config.block_rows,
    )
    context = em._Context(
        config.n_components, config.covariance_type, priors, prior_parameters, conjugate_prior
    )
    bound = em._lower_bound(statistics, parameters, config, context)
    return OnlineEMState(
        parameters=parameters,
        statistics=_normalized(statistics),
        centre=centre,
        n_updates=jnp.zeros((), jnp.int32),
        total_weight=statistics.total_weight,
        lower_bound=bound,
        prior_parameters=prior_parameters,
        conjugate_prior=conjugate_prior,
    )


def _online_step(
    state: OnlineEMState, x, weight, priors, reg_covar, learning_decay, learning_offset, config
):
    """One online EM update (pure): returns the new state and the collapsed component."""
    n_updates = state.n_updates + 1
    chunk = em.sufficient_statistics(
        x,
        state.parameters,
        covariance_type=config.covariance_type,
        centre=state.centre,
        sample_weight=weight,
        block_rows=config.block_rows,
    )
    share = chunk.total_weight / (state.total_weight + chunk.total_weight)
    rho = jnp.where(
        jnp.asarray(state.incremental),
        share,
        step_size(n_updates, learning_decay, learning_offset).astype(x.dtype),
    ).astype(x.dtype)
    # a chunk of zero weight carries nothing (and its statistics per unit weight are 0/0)
    present = chunk.total_weight > 0
    rho = jnp.where(present, rho, 0.0).astype(x.dtype)
    normalized = jax.tree.map(
        lambda leaf: jnp.where(present, leaf / jnp.where(present, chunk.total_weight, 1), 0),
        chunk,
    )
    running = jax.tree.map(
        lambda old, new: (1 - rho) * old + rho * new, state.statistics, normalized
    )
    total_weight = state.total_weight + chunk.total_weight
    scaled = jax.tree.map(lambda leaf: leaf * total_weight, running)
    bound, new, collapsed = _em_update(
        scaled,
        state.parameters,
        state.centre,
        reg_covar,
        priors,
        state.prior_parameters,
        state.conjugate_prior,
        config,
    )
    state = state._replace(
        parameters=new,
        statistics=running,
        n_updates=n_updates,
        total_weight=total_weight,
        lower_bound=bound,
    )
    return state, collapsed


_online_start_jit = jax.jit(_online_start, static_argnames=("config",))
_online_step_jit = jax.jit(_online_step, static_argnames=("config",))


def _online_config(options: _Options) -> em._Config:
    return _em_config(options, None)


def _padded_chunk(x, w, dtype, n_features, index):
    """A validated chunk padded to a power of two of rows (few compiled shapes)."""
    x, w = _prepare(x, w, dtype, n_features, f"chunk {index}", validate=True)
    n = x.shape[0]
    rows = 1 << max(0, n - 1).bit_length()
    weight = np.ones(n, dtype) if w is None else w
    centre = (weight @ x / weight.sum()) if weight.sum() > 0 else np.zeros(x.shape[1], dtype)
    return _pad_rows(x, weight, rows, centre.astype(dtype))


def online_em_start(
    x: ArrayLike,
    parameters: em.MixtureParameters,
    *,
    covariance_type: str = "full",
    priors: str | Mapping[str, dist.Distribution] | None = None,
    sample_weight: ArrayLike | None = None,
    incremental: bool = False,
) -> OnlineEMState:
    """Online EM state that starts from ``parameters`` with the statistics of chunk ``x``.

    Args:
        x: (n, D) the first chunk (its weighted mean becomes the centre of the moments;
            for MAP, the default prior is scaled from it).
        parameters: starting :class:`gaussmix.inference.em.MixtureParameters`, e.g. EM
            on ``x``.
        covariance_type, priors: as in :func:`gaussmix.inference.em.fit_em`.
        sample_weight: (n,) non-negative weights.
        incremental: False: later steps use :func:`step_size` (online EM from a first
            chunk); True: ``x`` is all the data ``parameters`` were fitted to, and each
            later step weighs its chunk by its share of all weight seen (incremental
            EM, as :func:`online_em_continue`, with the statistics of ``x`` under
            ``parameters``: any priors).

    Example:
        >>> import numpy as np
        >>> from gaussmix.inference.em import MixtureParameters, fit_em
        >>> x = np.random.default_rng(0).normal(size=(200, 2))
        >>> r = fit_em(x, n_components=1, covariance_type="diag")
        >>> p = MixtureParameters(r.params["weights"], r.params["means"],
        ...     r.params["variances"], r.precisions_cholesky)
        >>> int(online_em_start(x, p, covariance_type="diag").n_updates)
        0
    """
    options = _check_options(
        int(np.shape(parameters.weights)[-1]), covariance_type, priors, 0, 1, 0.0, 0.0,
        "kmeans", int(np.shape(parameters.weights)[-1]),
    )  # fmt: skip
    dtype = _chunk_dtype(np.asarray(x))
    x, w = _prepare(x, sample_weight, dtype, None, "x", validate=True)
    weight = np.ones(x.shape[0], dtype) if w is None else w
    if weight.sum() <= 0:
        raise ValueError("sample_weight sums to zero; give at least one point a positive weight.")
    prior_parameters, conjugate = None, None
    if options.method != "maximum_likelihood":
        prior_parameters = MixturePriorParameters(
            *(jnp.asarray(a, dtype) for a in default_prior_parameters(x, covariance_type))
        )
        if options.method == "conjugate_map":
            conjugate = em._conjugate_prior(
                options.priors, prior_parameters, options.n_components, covariance_type, dtype
            )
    config = _online_config(options)
    parameters = em.MixtureParameters(*(jnp.asarray(a, dtype) for a in parameters))
    state = _online_start_jit(
        jnp.asarray(x),
        jnp.asarray(weight),
        parameters,
        _priors_argument(options),
        prior_parameters,
        conjugate,
        config=config,
    )
    return state._replace(incremental=jnp.asarray(bool(incremental)))


def _fixed_point_statistics(parameters, total_weight, centre, reg_covar, covariance_type):
    """Statistics per unit weight whose maximum-likelihood M-step is ``parameters``."""
    weights, means, covariances, _ = parameters
    n_features = means.shape[-1]
    offset = means - centre  # (K, D)
    identity = jnp.eye(n_features, dtype=means.dtype)
    if covariance_type == "full":
        second = weights[:, None, None] * (
            covariances - reg_covar * identity + offset[:, :, None] * offset[:, None, :]
        )
    elif covariance_type == "tied":
        second = (
            covariances - reg_covar * identity + jnp.einsum("k,ki,kj->ij", weights, offset, offset)
        )
    elif covariance_type == "diag":
        second = weights[:, None] * (covariances - reg_covar + offset**2)
    else:
        second = weights * (n_features * (covariances - reg_covar) + jnp.sum(offset**2, axis=1))
    return em.SufficientStatistics(
        counts=weights,
        first=weights[:, None] * offset,
        second=second,
        log_likelihood=jnp.zeros((), means.dtype),
        total_weight=jnp.ones((), means.dtype),
    )


def online_em_continue(
    parameters: em.MixtureParameters,
    *,
    total_weight: float,
    covariance_type: str = "full",
    reg_covar: float = 1e-6,
    lower_bound: float = 0.0,
) -> OnlineEMState:
    """Online EM state that continues a maximum-likelihood fit (incremental EM).

    The fitted data, of total weight :math:`W_0`, is carried by the statistics whose
    M-step gives ``parameters`` (no pass over the data): for component :math:`k` with
    weight :math:`\\pi_k`, mean :math:`\\mu_k` and covariance :math:`\\Sigma_k`, about the
    centre :math:`c = \\sum_k \\pi_k \\mu_k`,

    .. math::

        s_0 = \\Big(\\pi_k,\\ \\pi_k (\\mu_k - c),\\
              \\pi_k \\big(\\Sigma_k - \\lambda I + (\\mu_k - c)(\\mu_k - c)^T\\big)\\Big)_k

    per unit weight (:math:`\\lambda` = ``reg_covar``; the other covariance types
    likewise). These are the statistics of the fit's last E-step, equal to those of the
    data under ``parameters`` at a fixed point of EM (to within the fit's ``tol``).
    Each :func:`online_em_step` then adds a chunk of weight :math:`w_t` by its share of
    all weight seen,

    .. math::

        s_t = \\frac{W_{t-1} s_{t-1} + w_t\\, \\hat s(x_{(t)}; \\theta_{t-1})}{W_t},\\quad
        W_t = W_{t-1} + w_t,\\quad \\theta_t = \\operatorname{M-step}(W_t s_t),

    i.e. :math:`\\rho_t = w_t / W_t`: the summed statistics grow by the chunk's, so a
    chunk moves the model by its share of the data, never by a fresh start's step size.

    Args:
        parameters: the fitted :class:`gaussmix.inference.em.MixtureParameters`
            (maximum likelihood, ``reg_covar`` on the diagonal).
        total_weight: :math:`W_0 > 0`, the total sample weight of the fitted data.
        covariance_type: as in :func:`gaussmix.inference.em.fit_em`.
        reg_covar: the fit's ``reg_covar``.
        lower_bound: the fit's per-sample lower bound (starts the running average).

    Example:
        >>> import numpy as np
        >>> from gaussmix.inference.em import MixtureParameters, fit_em
        >>> x = np.random.default_rng(0).normal(size=(200, 1))
        >>> r = fit_em(x, n_components=1, covariance_type="diag")
        >>> p = MixtureParameters(r.params["weights"], r.params["means"],
        ...     r.params["variances"], r.precisions_cholesky)
        >>> state = online_em_continue(p, total_weight=200.0, covariance_type="diag")
        >>> state = online_em_step(state, x[:1], covariance_type="diag")
        >>> float(state.total_weight)
        201.0
    """
    check_covariance_type(covariance_type)
    if not (np.isfinite(total_weight) and total_weight > 0):
        raise ValueError(f"total_weight must be a finite number > 0; got {total_weight!r}.")
    parameters = em.MixtureParameters(*(jnp.asarray(a) for a in parameters))
    dtype = parameters.means.dtype
    centre = parameters.weights @ parameters.means / jnp.sum(parameters.weights)
    statistics = _fixed_point_statistics(
        parameters, total_weight, centre, jnp.asarray(reg_covar, dtype), covariance_type
    )._replace(log_likelihood=jnp.asarray(lower_bound, dtype))
    return OnlineEMState(
        parameters=parameters,
        statistics=statistics,
        centre=centre,
        n_updates=jnp.zeros((), jnp.int32),
        total_weight=jnp.asarray(total_weight, dtype),
        lower_bound=jnp.asarray(lower_bound, dtype),
        prior_parameters=None,
        conjugate_prior=None,
        incremental=jnp.asarray(True),
    )


def online_em_step(
    state: OnlineEMState,
    x: ArrayLike,
    *,
    covariance_type: str = "full",
    priors: str | Mapping[str, dist.Distribution] | None = None,
    reg_covar: float = 1e-6,
    learning_decay: float = 0.7,
    learning_offset: float = 10.0,
    sample_weight: ArrayLike | None = None,
) -> OnlineEMState:
    """One online EM update with chunk ``x`` (validated, then one jitted pure step).

    .. math::

        s_t = (1 - \\rho_t) s_{t-1} + \\rho_t \\hat s(x;\\theta_{t-1}),\\quad
        \\theta_t = \\operatorname{M-step}(W_t s_t),\\quad \\rho_t = (t + \\tau_0)^{-\\kappa}.

    Args:
        state: from :func:`online_em_start` or a previous step.
        x: (n, D) the next chunk; chunks are padded to a power of two of rows with zero
            weights, so few shapes are compiled.
        covariance_type, priors, reg_covar: as in :func:`gaussmix.inference.em.fit_em`
            (the same as for the start).
        learning_decay: :math:`\\kappa \\in (0.5, 1]`.
        learning_offset: :math:`\\tau_0 \\ge 0`.
        sample_weight: (n,) non-negative weights.

    Raises:
        ValueError: bad input or a component whose covariance stops being positive
            definite.

    Example:
        >>> import numpy as np
        >>> from gaussmix.inference.em import MixtureParameters, fit_em
        >>> rng = np.random.default_rng(0)
        >>> x = rng.normal(size=(200, 2))
        >>> r = fit_em(x, n_components=1, covariance_type="diag")
        >>> p = MixtureParameters(r.params["weights"], r.params["means"],
        ...     r.params["variances"], r.precisions_cholesky)
        >>> state = online_em_start(x, p, covariance_type="diag")
        >>> state = online_em_step(state, rng.normal(size=(200, 2)), covariance_type="diag")
        >>> int(state.n_updates)
        1
    """
    check_schedule(learning_decay, learning_offset)
    n_components, n_features = state.parameters.means.shape
    options = _check_options(
        n_components, covariance_type, priors, 0, 1, 0.0, reg_covar, "kmeans", n_components
    )
    dtype = np.dtype(state.centre.dtype)
    x, weight = _padded_chunk(x, sample_weight, dtype, n_features, state.n_updates)
    config = _online_config(options)
    new_state, collapsed = _online_step_jit(
        state,
        jnp.asarray(x),
        jnp.asarray(weight),
        _priors_argument(options),
        jnp.asarray(reg_covar, dtype),
        float(learning_decay),
        float(learning_offset),
        config=config,
    )
    em._raise_on_failure(
        np.asarray(collapsed).reshape(1, 1),
        np.asarray(new_state.n_updates).reshape(1, 1),
        np.asarray(new_state.lower_bound).reshape(1),
        False,
        config,
        dtype,
    )
    return new_state


def fit_em_online(
    data: Any,
    *,
    n_components: int,
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
    learning_decay: float = 0.7,
    learning_offset: float = 10.0,
    chunk_rows: int | None = None,
) -> em.EMResult:
    """Online (stochastic) EM: one pass over the chunks, any size of data.

    EM on the first chunk (:func:`gaussmix.inference.em.fit_em` with ``max_iter``,
    ``n_init`` and the initialization options) gives the start; each further chunk is one
    :func:`online_em_step`. A generator is fine: the data is read once.

    Args:
        data: as in :func:`fit_em_chunked` (a one-shot iterator too).
        learning_decay: :math:`\\kappa \\in (0.5, 1]` of :func:`step_size`.
        learning_offset: :math:`\\tau_0 \\ge 0` of :func:`step_size`.
        Others: as in :func:`fit_em_chunked`.

    Returns:
        :class:`gaussmix.inference.em.EMResult` with ``lower_bound`` the running average
        of :class:`OnlineEMState`, ``lower_bounds`` its value after each update (the EM
        fit of the first chunk when there is no further chunk), ``n_iter`` the number of
        updates and ``converged`` whether the last update changed the running lower bound
        by less than ``tol``.

    Example:
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> chunks = (rng.normal(3.0, 1.0, (1000, 1)) for _ in range(20))
        >>> result = fit_em_online(chunks, n_components=1)
        >>> round(float(result.params["means"][0, 0]), 1)
        3.0
    """
    check_schedule(learning_decay, learning_offset)
    options = _check_options(
        n_components, covariance_type, priors, max_iter, n_init, tol, reg_covar, init_params,
        n_components,
    )  # fmt: skip
    source = ChunkSource(data, sample_weight=sample_weight, chunk_rows=chunk_rows)
    state = None
    bounds = []
    first_result = None
    for index, (x, w) in enumerate(source):
        if np.shape(x)[0] == 0:
            continue
        if state is None:
            dtype = _chunk_dtype(np.asarray(x))
            x, w = _prepare(x, w, dtype, None, f"chunk {index}", validate=True)
            first_result = em.fit_em(
                x,
                n_components=options.n_components,
                covariance_type=covariance_type,
                priors=priors,
                sample_weight=w,
                max_iter=options.max_iter,
                tol=options.tol,
                reg_covar=options.reg_covar,
                n_init=options.n_init,
                init_params=init_params,
                weights_init=weights_init,
                means_init=means_init,
                precisions_init=precisions_init,
                seed=seed,
            )
            state = online_em_start(
                x,
                _parameters_of(first_result, covariance_type),
                covariance_type=covariance_type,
                priors=priors,
                sample_weight=w,
            )
            continue
        state = online_em_step(
            state,
            x,
            covariance_type=covariance_type,
            priors=priors,
            reg_covar=options.reg_covar,
            learning_decay=learning_decay,
            learning_offset=learning_offset,
            sample_weight=w,
        )
        bounds.append(float(state.lower_bound))
    if state is None:
        raise ValueError("data has no rows; pass at least one non-empty chunk.")
    if not bounds:
        return first_result
    return online_em_result(
        state, bounds, covariance_type=covariance_type, priors=priors, tol=options.tol
    )


def online_em_result(
    state: OnlineEMState,
    lower_bounds: Sequence[float],
    *,
    covariance_type: str = "full",
    priors: str | Mapping[str, dist.Distribution] | None = None,
    tol: float = 1e-3,
) -> em.EMResult:
    """The :class:`gaussmix.inference.em.EMResult` of online EM after some updates.

    Args:
        state: the state after the last :func:`online_em_step`.
        lower_bounds: ``state.lower_bound`` after each update so far (at least one).
        covariance_type, priors: as given to :func:`online_em_start`.
        tol: ``converged`` is whether the last update changed the running lower bound
            by less than ``tol``.

    Returns:
        An ``EMResult`` with the state's parameters, ``lower_bounds`` as given, ``n_iter``
        the number of updates and ``method`` the M-step of ``priors``.

    Example:
        >>> import numpy as np
        >>> from gaussmix.inference.em import MixtureParameters, fit_em
        >>> rng = np.random.default_rng(0)
        >>> r = fit_em(rng.normal(size=(200, 1)), n_components=1, covariance_type="diag")
        >>> p = MixtureParameters(r.params["weights"], r.params["means"],
        ...     r.params["variances"], r.precisions_cholesky)
        >>> state = online_em_start(rng.normal(size=(200, 1)), p, covariance_type="diag")
        >>> state = online_em_step(state, rng.normal(size=(200, 1)), covariance_type="diag")
        >>> result = online_em_result(state, [float(state.lower_bound)], covariance_type="diag")
        >>> int(result.n_iter), bool(result.converged)
        (1, False)
    """
    if len(lower_bounds) == 0:
        raise ValueError("lower_bounds is empty; online_em_result needs at least one update.")
    method, priors = em._check_priors(priors, covariance_type)
    dtype = np.dtype(state.centre.dtype)
    converged = len(lower_bounds) > 1 and abs(lower_bounds[-1] - lower_bounds[-2]) < tol
    return em.EMResult(
        params=em.site_values(state.parameters, covariance_type, with_scales="scales" in priors),
        precisions_cholesky=state.parameters.precisions_cholesky,
        lower_bound=state.lower_bound,
        lower_bounds=jnp.asarray(lower_bounds, dtype),
        n_iter=jnp.asarray(len(lower_bounds), jnp.int32),
        converged=jnp.asarray(converged),
        method=method,
    )
