"""GaussianMixture beyond one array in memory: data read by chunks, online EM.

:meth:`gaussmix.GaussianMixture.fit` reads an ``np.memmap``, a ``.npy`` path, a list of
chunks or a callable returning chunks by exact EM over chunks
(:func:`gaussmix.inference.streaming.fit_em_chunked`); :func:`reads_by_chunks` says which
``X`` is read so. :meth:`OnlineFitMixin.partial_fit` runs online EM one chunk per call
(:func:`gaussmix.inference.streaming.online_em_step`); its state lives on the estimator
as nested dicts of arrays (:func:`online_record`), which ``gaussmix.save`` stores.
"""

import os
from collections.abc import Iterable

import jax
import numpy as np

from gaussmix import _background as background
from gaussmix import _measurement as measurement
from gaussmix._base import validate_data
from gaussmix.inference import em, streaming
from gaussmix.models.priors import COVARIANCE_SITES, MixturePriorParameters

__all__ = [
    "ChunkedFitMixin",
    "OnlineFitMixin",
    "check_rereadable",
    "chunk_source",
    "chunk_weight",
    "online_record",
    "online_state",
    "reads_by_chunks",
]

#: NamedTuple fields of the online EM state, rebuilt from the dicts they are kept as.
ONLINE_STATE_PARTS = {
    "parameters": em.MixtureParameters,
    "statistics": em.SufficientStatistics,
    "prior_parameters": MixturePriorParameters,
    "conjugate_prior": em.ConjugatePrior,
}


def online_record(state: streaming.OnlineEMState) -> dict:
    """The online EM state as nested dicts of arrays, which ``gaussmix.save`` stores."""
    return {
        name: value._asdict() if hasattr(value, "_asdict") else value
        for name, value in state._asdict().items()
    }


def online_state(record: dict) -> streaming.OnlineEMState:
    """The inverse of :func:`online_record`."""
    return streaming.OnlineEMState(
        **{
            name: ONLINE_STATE_PARTS[name](**value)
            if name in ONLINE_STATE_PARTS and value is not None
            else value
            for name, value in record.items()
        }
    )


def _is_chunk(item) -> bool:
    """An (n, D) array, or an ``(x, w)`` or ``(x, w, s)`` tuple with an (n, D) array ``x``."""
    if isinstance(item, tuple) and len(item) in (2, 3):
        item = item[0]
    return isinstance(item, np.ndarray | jax.Array) and item.ndim == 2


def reads_by_chunks(X, chunk_size) -> bool:
    """Whether :meth:`gaussmix.GaussianMixture.fit` reads ``X`` chunk by chunk.

    Chunks: an ``np.memmap``, a path (str or ``os.PathLike``), a callable, a list or
    tuple whose items are all (n, D) arrays or ``(x, w)`` / ``(x, w, s)`` tuples, any other iterable
    that is not array-like (a generator, a dataset object), and any array when
    ``chunk_size`` is set. In memory: arrays, nested lists of numbers, data frames.

    Example:
        >>> reads_by_chunks([np.zeros((3, 2)), np.ones((2, 2))], None)
        True
        >>> reads_by_chunks([[0.0, 1.0], [2.0, 3.0]], None)
        False
    """
    if isinstance(X, np.memmap | str | os.PathLike):
        return True
    array_like = (
        isinstance(X, np.ndarray | jax.Array)
        or hasattr(X, "__array__")
        or hasattr(X, "shape")
        or type(X).__module__.startswith("scipy.sparse")
    )
    if array_like:
        return chunk_size is not None and isinstance(X, np.ndarray | jax.Array)
    if isinstance(X, list | tuple):
        return len(X) > 0 and all(_is_chunk(item) for item in X)
    return callable(X) or isinstance(X, Iterable)


def check_rereadable(X) -> None:
    """A ValueError for chunks that can be read only once (exact EM reads them once per
    iteration)."""
    if (
        not callable(X)
        and not isinstance(X, np.ndarray | jax.Array | str | os.PathLike | list | tuple)
        and iter(X) is X
    ):
        raise ValueError(
            f"fit reads the data once per EM iteration, but X ({type(X).__name__}) is an "
            "iterator that can be read only once; pass a list of chunks or a callable "
            "returning a fresh iterator, or call partial_fit on each chunk (online EM)."
        )


def chunk_weight(x, w) -> float:
    """Rows of a chunk, or the sum of its weights (NaN for a chunk fit rejects)."""
    try:
        return float(np.shape(x)[0] if w is None else np.sum(np.asarray(w, np.float64)))
    except (TypeError, ValueError):
        return float("nan")


def chunk_source(X, sample_weight, measurement_covariances, chunk_rows) -> streaming.ChunkSource:
    """The :class:`gaussmix.inference.streaming.ChunkSource` of chunked ``X`` with its
    weights and measurement covariances: for array-like ``X`` (an ``np.memmap``, a
    ``.npy`` path, an array with ``chunk_size``) an (N, D, D) or (N, D) array, memmap or
    ``.npy`` path read alongside; for a list or tuple of chunks a list or tuple of one
    (n, D, D) or (n, D) array per chunk; other iterables carry theirs as ``(x, w, s)``."""
    if measurement_covariances is None or not isinstance(X, list | tuple):
        return streaming.ChunkSource(
            X,
            sample_weight=sample_weight,
            chunk_rows=chunk_rows,
            measurement_covariances=measurement_covariances,
        )
    if not isinstance(measurement_covariances, list | tuple) or len(measurement_covariances) != len(
        X
    ):
        raise ValueError(
            f"X is a list of {len(X)} chunks, so measurement_covariances must be a list of "
            f"{len(X)} arrays, one (n, D, D) or (n, D) per chunk in the same order; got "
            f"{type(measurement_covariances).__name__}"
            + (
                f" of {len(measurement_covariances)}"
                if isinstance(measurement_covariances, list | tuple)
                else ""
            )
            + " (or give each chunk as (x, w, s))."
        )
    chunks = []
    for index, (chunk, s) in enumerate(zip(X, measurement_covariances, strict=True)):
        x, w = chunk if isinstance(chunk, tuple) else (chunk, None)
        if isinstance(chunk, tuple) and len(chunk) != 2:
            raise ValueError(
                f"chunk {index} is a tuple of {len(chunk)}, and measurement_covariances "
                "is given as a list: give chunks as (x, w), or put each chunk's "
                "covariances in it as (x, w, s) and leave measurement_covariances=None."
            )
        chunks.append((x, w, s))
    return streaming.ChunkSource(chunks, chunk_rows=chunk_rows)


class ChunkedFitMixin:
    """Exact EM and scoring over data read by chunks for
    :class:`gaussmix.GaussianMixture` (an ``np.memmap``, a ``.npy`` path, chunks, a
    callable, ``chunk_size``), measurement errors included.

    The estimator provides ``_em_options()``, ``_finish_fit(result, n_init,
    fit_weight=)``, ``_log_resp(X, measurement_covariances)`` and ``_validate_rows(X)``.
    """

    def _fit_chunks(self, X, sample_weight, measurement_covariances=None) -> None:
        """Exact EM over the chunks of ``X`` (one pass per iteration)."""
        if self.devices is not None:
            raise ValueError(
                f"devices={self.devices!r} splits an in-memory array over devices, but X "
                f"({type(X).__name__}) is read by chunks; load it with np.asarray(X) to "
                "use devices, or leave devices=None to fit it chunk by chunk."
            )
        if em.hierarchical_model(self.init_params) is not None:
            raise ValueError(
                f"init_params={self.init_params!r} needs the data in memory, but X ({type(X).__name__}) "
                "is read by chunks; load it with np.asarray(X), or use init_params="
                "'kmeans' (or 'k-means++', 'random', 'random_from_data') out of core."
            )
        check_rereadable(X)
        options, n_init = self._em_options()
        source = chunk_source(X, sample_weight, measurement_covariances, self.chunk_size)
        extra = background.chunk_arguments(self, source)  # {} without background
        passes = []

        def chunks():
            """The ``(x, w, s)`` chunks of ``source``, adding up each full pass's weight."""
            total = 0.0
            for x, w, s in source.with_errors():
                total += chunk_weight(x, w)
                yield x, w, s
            passes.append(total)

        result = streaming.fit_em_chunked(
            chunks, options=options, nan_policy=self.nan_policy, **extra
        )
        self.n_features_in_ = int(np.shape(result.params["means"])[1])
        if hasattr(self, "feature_names_in_"):
            del self.feature_names_in_
        self._finish_fit(result, n_init, fit_weight=passes[0] if passes else None)

    def _chunked(self, X, pick, measurement_covariances=None) -> np.ndarray:
        """``pick(norm, log_resp)`` of data read chunk by chunk (an ``np.memmap``, a
        ``.npy`` path, chunks), each chunk validated (with its measurement covariances),
        concatenated over rows: memory holds one chunk and the (N, ...) result."""
        source = chunk_source(X, None, measurement_covariances, self.chunk_size)
        dtype = self.means_.dtype
        parts = []
        for index, (x, _, s) in enumerate(source.with_errors()):
            if np.shape(x)[0] == 0:
                continue
            x = self._validate_rows(x).astype(dtype)
            if s is not None and np.shape(s)[:1] != x.shape[:1]:
                raise ValueError(
                    f"the measurement covariances of chunk {index} have shape "
                    f"{np.shape(s)}, but the chunk has {x.shape[0]} row(s); give one per row."
                )
            parts.append(pick(*self._log_resp(x, s)))
        if not parts:
            raise ValueError(
                f"Found array with 0 sample(s) while a minimum of 1 is required by "
                f"{type(self).__name__}."
            )
        return np.concatenate(parts)


class OnlineFitMixin:
    """:meth:`partial_fit` for :class:`gaussmix.GaussianMixture` (online EM).

    The estimator provides ``_check_parameters()``, ``_em_options()``,
    ``_set_result(result)``, ``_fitted_parameters()`` and
    ``_check_sample_weight(sample_weight, n_samples, dtype)``; the online state is kept in
    ``_online_record`` (:func:`online_record`, None when there is none),
    ``_online_bounds`` (the running lower bounds) and ``_fit_weight`` (the total weight
    of the data :meth:`fit` saw, None when unknown).
    """

    def partial_fit(self, X, y=None, sample_weight=None, measurement_covariances=None):
        """One step of online (stochastic) EM with the chunk ``X``.

        Each call is one update of the running statistics per unit weight
        :math:`s_t` and the M-step of their sum :math:`W_t s_t` (:math:`W_t` the weight
        seen so far, see :func:`gaussmix.inference.streaming.online_em_step`):

        .. math::

            s_t = (1 - \\rho_t)\\, s_{t-1} + \\rho_t\\, \\hat s(X_t; \\theta_{t-1}),\\quad
            \\theta_t = \\operatorname{M-step}(W_t s_t).

        On an unfitted estimator the first call runs EM on the chunk (``n_init``,
        ``init_params`` or the given ``*_init``, ``max_iter``), exactly as :meth:`fit`
        would on that chunk, and that chunk's statistics start the average; further
        calls use the step sizes of Cappé and Moulines (2009),
        :math:`\\rho_t = (t + \\tau_0)^{-\\kappa}`, with :math:`\\kappa` =
        ``learning_decay`` and :math:`\\tau_0` = ``learning_offset``.

        After :meth:`fit` on data of total weight :math:`W_0`, the average starts from
        that data's statistics with weight :math:`W_0` (maximum likelihood: the
        statistics whose M-step is the fitted model, no pass over the data, see
        :func:`gaussmix.inference.streaming.online_em_continue`; MAP on an in-memory
        array: the data's statistics under the fitted parameters, computed at the end
        of :meth:`fit`), and every call, the first included, adds its chunk of weight
        :math:`w_t` by its share of all data seen (incremental EM):
        :math:`\\rho_t = w_t / W_t`, :math:`W_t = W_{t-1} + w_t`, so that
        :math:`W_t s_t = W_{t-1} s_{t-1} + w_t \\hat s_t`. A few rows after a fit on
        thousands move the model by a few thousandths. (A MAP fit read by chunks starts
        the average from the first chunk instead.) :meth:`fit` drops the online state.
        After ``t`` updates,
        ``n_iter_`` is ``t``, ``lower_bounds_`` holds the running per-sample lower bound
        after each update and ``converged_`` says whether the last update changed it by
        less than ``tol``. One pass over shuffled chunks reaches the maximum-likelihood
        answer up to Monte Carlo error; :meth:`fit` gives the exact one.

        With ``measurement_covariances`` each chunk's statistics are those of extreme
        deconvolution (its rows' errors, as in :meth:`fit`). With
        ``background="uniform"`` the background's weight is carried by the running
        counts (:math:`N_0 = W - \\sum_k N_k`), so the same step size blends it; its box
        (and so its volume) is fixed at the first call, the bounding box of the first
        chunk (or of the data :meth:`fit` saw), unless ``background_volume`` gives the
        volume: rows of later chunks outside that box get the same constant density.

        Args:
            X: (n, D) the next chunk (the first one needs n >= n_components).
            y: ignored.
            sample_weight: (n,) non-negative weights of the chunk's points.
            measurement_covariances: (n, D, D) or (n, D) measurement covariances of the
                chunk's rows, else None.

        Returns:
            self.

        Raises:
            ValueError: bad input, e.g. a chunk with another number of features.

        Example:
            >>> import numpy as np
            >>> from gaussmix import GaussianMixture
            >>> rng = np.random.default_rng(0)
            >>> gm = GaussianMixture(n_components=2, covariance_type="diag", random_state=0)
            >>> for _ in range(20):
            ...     labels = rng.integers(2, size=500)
            ...     gm = gm.partial_fit(rng.normal(size=(500, 1)) + 6.0 * labels[:, None])
            >>> sorted(gm.means_[:, 0].round().tolist())
            [0.0, 6.0]
        """
        self._check_parameters()
        record = getattr(self, "_online_record", None)
        fitted = hasattr(self, "weights_")
        # The first chunk of an unfitted estimator starts EM: n_components rows at least.
        X = validate_data(
            self,
            X,
            reset=not fitted,
            ensure_min_samples=1 if fitted else int(self.n_components),
            allow_nan=self.nan_policy != "raise",
        )
        weight = self._check_sample_weight(sample_weight, X.shape[0], X.dtype)
        noise = measurement.kept_rows(measurement_covariances, X, self.nan_policy)
        X, weight = self._apply_nan_policy(X, weight)
        if X.shape[0] < (1 if fitted else int(self.n_components)):
            raise ValueError(
                f"partial_fit got {X.shape[0]} row(s) without NaN (nan_policy='omit' drops "
                "the others); pass more rows, or nan_policy='marginalize'."
            )
        online = {"covariance_type": self.covariance_type, "priors": self.priors}
        if record is None and fitted and getattr(self, "_fit_weight", None) is not None:
            if self.priors is None:
                record = online_record(
                    streaming.online_em_continue(
                        self._fitted_parameters(),
                        total_weight=float(self._fit_weight),
                        covariance_type=self.covariance_type,
                        reg_covar=float(self.reg_covar),
                        lower_bound=float(self.lower_bound_),
                    )
                )
        if record is None:
            if fitted:
                parameters = self._fitted_parameters()
            else:
                options, _ = self._em_options()
                result = em.fit_em(
                    X,
                    sample_weight=weight,
                    options=options,
                    nan_policy="marginalize",
                    measurement_covariances=noise,
                    **background.fit_arguments(self, X),
                )
                self._set_result(result)
                parameters = em.MixtureParameters(
                    result.params["weights"],
                    result.params["means"],
                    result.params[COVARIANCE_SITES[self.covariance_type]],
                    result.precisions_cholesky,
                )
            state = streaming.online_em_start(
                X,
                parameters,
                sample_weight=weight,
                nan_policy="marginalize",
                measurement_covariances=noise,
                **self._online_background(X),
                **online,
            )
            self._online_record, self._online_bounds = online_record(state), []
            return self
        state = streaming.online_em_step(
            online_state(record),
            X,
            reg_covar=float(self.reg_covar),
            learning_decay=float(self.learning_decay),
            learning_offset=float(self.learning_offset),
            sample_weight=weight,
            nan_policy="marginalize",
            measurement_covariances=noise,
            **self._online_background(X),
            **online,
        )
        self._online_record = online_record(state)
        self._online_bounds = [*self._online_bounds, float(state.lower_bound)]
        result = streaming.online_em_result(
            state, self._online_bounds, tol=float(self.tol), **online
        )
        if background.fitted(self):  # the box fixed at the first call
            weight = 1.0 - float(np.sum(result.params["weights"], dtype=np.float64))
            result = result._replace(background_weight=np.asarray(max(weight, 0.0)))
            self._background_box = background.BackgroundBox(
                self.background_lower_, self.background_upper_, -self.background_log_density_
            )
        self._set_result(result)
        return self

    def _online_background(self, X: np.ndarray) -> dict:
        """The online EM keywords of a fitted background (its fixed box), ``{}`` without;
        the box's log side lengths for rows with NaN (a given volume has none)."""
        if not background.fitted(self):
            return {}
        arguments = {"background_log_density": float(self.background_log_density_)}
        if self.background_volume is None:
            with np.errstate(divide="ignore"):
                sides = np.log(self.background_upper_ - self.background_lower_)
            arguments["background_log_sides"] = sides
        return arguments

    def _start_online_after_fit(self, X: np.ndarray, weight, noise=None) -> None:
        """After a MAP fit on in-memory ``X`` (with measurement covariances ``noise``):
        the online state holding the data's statistics under the fitted parameters (a MAP
        M-step has no closed-form inverse: one pass over the data)."""
        state = streaming.online_em_start(
            X,
            self._fitted_parameters(),
            covariance_type=self.covariance_type,
            priors=self.priors,
            sample_weight=weight,
            incremental=True,
            nan_policy="marginalize",
            measurement_covariances=noise,
            **self._online_background(X),
        )
        self._online_record = online_record(state)
