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

from gaussmix._base import validate_data
from gaussmix.inference import em, streaming
from gaussmix.models.priors import COVARIANCE_SITES, MixturePriorParameters

__all__ = [
    "OnlineFitMixin",
    "check_rereadable",
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
    """An (n, D) array, or an ``(x, w)`` tuple with an (n, D) array ``x``."""
    if isinstance(item, tuple) and len(item) == 2:
        item = item[0]
    return isinstance(item, np.ndarray | jax.Array) and item.ndim == 2


def reads_by_chunks(X, chunk_size) -> bool:
    """Whether :meth:`gaussmix.GaussianMixture.fit` reads ``X`` chunk by chunk.

    Chunks: an ``np.memmap``, a path (str or ``os.PathLike``), a callable, a list or
    tuple whose items are all (n, D) arrays or ``(x, w)`` tuples, any other iterable
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


class OnlineFitMixin:
    """:meth:`partial_fit` for :class:`gaussmix.GaussianMixture` (online EM).

    The estimator provides ``_check_parameters()``, ``_em_options()``,
    ``_set_result(result)``, ``_fitted_parameters()`` and
    ``_check_sample_weight(sample_weight, n_samples, dtype)``; the online state is kept in
    ``_online_record`` (:func:`online_record`, None when there is none),
    ``_online_bounds`` (the running lower bounds) and ``_fit_weight`` (the total weight
    of the data :meth:`fit` saw, None when unknown).
    """

    def partial_fit(self, X, y=None, sample_weight=None):
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

        Args:
            X: (n, D) the next chunk (the first one needs n >= n_components).
            y: ignored.
            sample_weight: (n,) non-negative weights of the chunk's points.

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
                    X, sample_weight=weight, options=options, nan_policy="marginalize"
                )
                self._set_result(result)
                parameters = em.MixtureParameters(
                    result.params["weights"],
                    result.params["means"],
                    result.params[COVARIANCE_SITES[self.covariance_type]],
                    result.precisions_cholesky,
                )
            state = streaming.online_em_start(
                X, parameters, sample_weight=weight, nan_policy="marginalize", **online
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
            **online,
        )
        self._online_record = online_record(state)
        self._online_bounds = [*self._online_bounds, float(state.lower_bound)]
        self._set_result(
            streaming.online_em_result(state, self._online_bounds, tol=float(self.tol), **online)
        )
        return self

    def _start_online_after_fit(self, X: np.ndarray, weight) -> None:
        """After a MAP fit on in-memory ``X``: the online state holding the data's
        statistics under the fitted parameters (a MAP M-step has no closed-form inverse:
        one pass over the data)."""
        state = streaming.online_em_start(
            X,
            self._fitted_parameters(),
            covariance_type=self.covariance_type,
            priors=self.priors,
            sample_weight=weight,
            incremental=True,
            nan_policy="marginalize",
        )
        self._online_record = online_record(state)
