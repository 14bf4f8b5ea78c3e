"""scikit-learn's ``GaussianMixture`` on the JIT-compiled EM back end.

Same parameters, methods, fitted attributes and error messages as
``sklearn.mixture.GaussianMixture``, plus ``sample_weight`` in :meth:`fit`, ``priors``
(``None`` maximum likelihood, ``"default"`` MAP under the program's conjugate prior, or a
dict of NumPyro distributions replacing the program's defaults), the per-iteration
``lower_bounds_`` and the fitted parameters as the NumPyro program's site dict
(:attr:`GaussianMixture.params_`). scikit-learn itself is not needed.

The model is :func:`gaussmix.models.gaussian_mixture`; fitting runs
:func:`gaussmix.inference.em.fit_em` (one compiled program for all iterations and
restarts). Arrays come back as NumPy arrays in the input's precision (float64 needs
JAX's ``jax_enable_x64`` option, which your script sets, never the library).

Past one machine's memory or one device: :meth:`GaussianMixture.fit` reads an
``np.memmap``, a ``.npy`` path or chunks by exact EM over chunks
(:func:`gaussmix.inference.streaming.fit_em_chunked`), :meth:`GaussianMixture.partial_fit`
runs online EM one chunk per call, and ``devices=`` splits the rows over devices
(:func:`gaussmix.inference.shard.fit_em_sharded`).
"""

import inspect
import numbers
import os
import sys
import warnings
from collections.abc import Iterable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from gaussmix.inference import em, shard, streaming
from gaussmix.inference.em import ConvergenceWarning
from gaussmix.models.priors import COVARIANCE_SITES, COVARIANCE_TYPES, MixturePriorParameters

__all__ = ["ConvergenceWarning", "GaussianMixture", "NotFittedError"]


class NotFittedError(ValueError, AttributeError):
    """An estimator was used before ``fit`` (scikit-learn's ``NotFittedError``)."""


# ---------------------------------------------------------------------------------------
# scikit-learn conventions without scikit-learn: parameters, validation, tags


def _is_hardware(value) -> bool:
    """A JAX device, a mesh, or a list or tuple of devices."""
    if isinstance(value, (list, tuple)):
        return bool(value) and all(isinstance(item, jax.Device) for item in value)
    return isinstance(value, (jax.Device, jax.sharding.Mesh))


class EstimatorBase:
    """``get_params`` / ``set_params`` / ``repr`` and input validation, scikit-learn style."""

    @classmethod
    def _get_param_names(cls) -> list[str]:
        signature = inspect.signature(cls.__init__)
        return sorted(
            name
            for name, parameter in signature.parameters.items()
            if name != "self" and parameter.kind != parameter.VAR_KEYWORD
        )

    def get_params(self, deep: bool = True) -> dict:
        """Parameters of this estimator (scikit-learn's ``get_params``)."""
        return {name: getattr(self, name) for name in self._get_param_names()}

    def set_params(self, **params):
        """Set parameters (scikit-learn's ``set_params``); returns self."""
        valid = self._get_param_names()
        for name, value in params.items():
            if name not in valid:
                raise ValueError(
                    f"Invalid parameter {name!r} for estimator {self}. Valid parameters are: "
                    f"{valid!r}."
                )
            setattr(self, name, value)
        return self

    def __sklearn_clone__(self):
        """scikit-learn's ``clone``: parameters cloned as scikit-learn does, except JAX
        devices and meshes (handles to hardware, which cannot be deep-copied): the clone
        shares them."""
        from sklearn.base import clone

        params = {
            name: value if _is_hardware(value) else clone(value, safe=False)
            for name, value in self.get_params(deep=False).items()
        }
        return type(self)(**params)

    def __repr__(self) -> str:
        defaults = {
            name: parameter.default
            for name, parameter in inspect.signature(type(self).__init__).parameters.items()
        }
        changed = []
        for name, value in self.get_params().items():
            default = defaults.get(name, inspect.Parameter.empty)
            try:
                same = value is default or bool(value == default)
            except (ValueError, TypeError):
                same = False
            if not same:
                changed.append(f"{name}={value!r}")
        return f"{type(self).__name__}({', '.join(changed)})"

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "n_features_in_")

    def _check_is_fitted(self) -> None:
        if not self.__sklearn_is_fitted__():
            raise _not_fitted_error_class()(
                f"This {type(self).__name__} instance is not fitted yet. Call 'fit' with "
                "appropriate arguments before using this estimator."
            )

    def _validate_data(self, X, *, reset: bool, ensure_min_samples: int = 1) -> np.ndarray:
        """scikit-learn's ``validate_data``: a finite 2-D float32/float64 array."""
        name = type(self).__name__
        feature_names = _feature_names(X)
        if type(X).__module__.startswith("scipy.sparse") or hasattr(X, "tocsr"):
            raise TypeError(
                "Sparse data was passed for X, but dense data is required. Use '.toarray()' "
                "to convert to a dense numpy array."
            )
        array = np.asarray(X)
        if np.iscomplexobj(array):
            raise ValueError(f"Complex data not supported\n{array}\n")
        if array.dtype.kind in "OUSV":
            try:
                array = array.astype(np.float64)
            except TypeError as error:
                raise TypeError(f"{error}; X must contain only numbers.") from error
            except ValueError as error:
                raise ValueError(
                    f"Unable to convert X to numbers with dtype float64 ({error}); "
                    "X must contain only numbers."
                ) from error
        elif array.dtype.kind == "b" or array.dtype.kind in "iu":
            array = array.astype(np.float64)
        elif array.dtype.kind != "f":
            raise ValueError(f"X has dtype {array.dtype}; expected numbers.")
        if array.dtype not in (np.float32, np.float64):
            array = array.astype(np.float64)
        if array.ndim == 0:
            raise ValueError(
                f"Expected 2D array, got scalar array instead:\narray={array}.\n"
                "Reshape your data either using array.reshape(-1, 1) if your data has a "
                "single feature or array.reshape(1, -1) if it contains a single sample."
            )
        if array.ndim == 1:
            raise ValueError(
                f"Expected 2D array, got 1D array instead:\narray={array}.\n"
                "Reshape your data either using array.reshape(-1, 1) if your data has a "
                "single feature or array.reshape(1, -1) if it contains a single sample."
            )
        if array.ndim > 2:
            raise ValueError(f"Found array with dim {array.ndim}. {name} expected <= 2.")
        n_samples, n_features = array.shape
        if n_samples < ensure_min_samples:
            raise ValueError(
                f"Found array with {n_samples} sample(s) (shape={array.shape}) while a "
                f"minimum of {ensure_min_samples} is required by {name}."
            )
        if n_features < 1:
            raise ValueError(
                f"Found array with 0 feature(s) (shape={array.shape}) while a minimum of 1 "
                f"is required by {name}."
            )
        if np.isnan(array).any():
            raise ValueError(
                f"Input X contains NaN.\n{name} does not accept missing values encoded as "
                "NaN; impute them or drop those rows first."
            )
        if not np.isfinite(array).all():
            raise ValueError(
                f"Input X contains infinity or a value too large for {array.dtype!r}; "
                "remove those rows or scale the data."
            )
        if not jax.config.jax_enable_x64 and array.dtype == np.float64:
            # finite float64 values beyond float32's range: an overflow, not the data's fault
            array = em.check_finite_input(array, "X", np.float32)
        if reset:
            self.n_features_in_ = n_features
            if feature_names is not None:
                self.feature_names_in_ = feature_names
            elif hasattr(self, "feature_names_in_"):
                del self.feature_names_in_
        else:
            self._check_feature_names(feature_names)
            if n_features != self.n_features_in_:
                raise ValueError(
                    f"X has {n_features} features, but {name} is expecting "
                    f"{self.n_features_in_} features as input."
                )
        return array

    def _check_feature_names(self, feature_names) -> None:
        fitted = getattr(self, "feature_names_in_", None)
        name = type(self).__name__
        if fitted is None and feature_names is None:
            return
        if fitted is None:
            warnings.warn(
                f"X has feature names, but {name} was fitted without feature names",
                UserWarning,
                stacklevel=3,
            )
            return
        if feature_names is None:
            warnings.warn(
                f"X does not have valid feature names, but {name} was fitted with feature names",
                UserWarning,
                stacklevel=3,
            )
            return
        if len(fitted) != len(feature_names) or np.any(fitted != feature_names):
            unseen = sorted(set(feature_names) - set(fitted))
            missing = sorted(set(fitted) - set(feature_names))
            message = "The feature names should match those that were passed during fit.\n"
            if unseen:
                message += "Feature names unseen at fit time:\n" + "".join(
                    f"- {n}\n" for n in unseen
                )
            if missing:
                message += "Feature names seen at fit time, yet now missing:\n" + "".join(
                    f"- {n}\n" for n in missing
                )
            if not unseen and not missing:
                message += "Feature names must be in the same order as they were in fit.\n"
            raise ValueError(message)

    def _sklearn_tags(self, estimator_type: str):
        """scikit-learn's tags, built only when scikit-learn asks for them."""
        from sklearn.utils import InputTags, Tags, TargetTags

        return Tags(
            estimator_type=estimator_type,
            target_tags=TargetTags(required=False),
            transformer_tags=None,
            regressor_tags=None,
            classifier_tags=None,
            input_tags=InputTags(two_d_array=True),
        )


def _not_fitted_error_class() -> type:
    """scikit-learn's ``NotFittedError`` when scikit-learn is loaded (so its tools
    recognize the error), else ours; both are ValueError and AttributeError."""
    sklearn_exceptions = sys.modules.get("sklearn.exceptions")
    if sklearn_exceptions is not None:
        return sklearn_exceptions.NotFittedError
    return NotFittedError


def _feature_names(X):
    columns = getattr(X, "columns", None)
    if columns is None or not hasattr(X, "iloc"):
        return None
    names = np.asarray(columns, dtype=object)
    are_strings = [isinstance(n, str) for n in names]
    if all(are_strings):
        return names
    if any(are_strings):
        raise TypeError(
            "Feature names are only supported if all input features have string names, "
            f"but your input has {sorted({type(n).__name__ for n in names})} as feature name "
            "/ column name types. If you want feature names to be stored and validated, you "
            "must convert them all to strings, by using X.columns = X.columns.astype(str) "
            "for example. Otherwise you can remove feature / column names from your input "
            "data, or convert them all to a non-string data type."
        )
    return None


def seed_from_random_state(random_state) -> int:
    """An int seed for JAX from scikit-learn's ``random_state`` (None, int, RandomState)."""
    if random_state is None:
        return int(np.random.mtrand._rand.randint(np.iinfo(np.int32).max))
    if isinstance(random_state, numbers.Integral) and not isinstance(random_state, bool):
        return int(random_state)
    if isinstance(random_state, np.random.RandomState):
        return int(random_state.randint(np.iinfo(np.int32).max))
    if isinstance(random_state, np.random.Generator):
        return int(random_state.integers(np.iinfo(np.int32).max))
    raise ValueError(
        f"random_state must be None, an int, a numpy RandomState or Generator; got {random_state!r}."
    )


def _numpy_random_state(random_state) -> np.random.RandomState:
    if random_state is None:
        return np.random.mtrand._rand
    if isinstance(random_state, numbers.Integral) and not isinstance(random_state, bool):
        return np.random.RandomState(int(random_state))
    if isinstance(random_state, np.random.RandomState):
        return random_state
    if isinstance(random_state, np.random.Generator):
        return np.random.RandomState(int(random_state.integers(np.iinfo(np.int32).max)))
    raise ValueError(
        f"random_state must be None, an int, a numpy RandomState or Generator; got {random_state!r}."
    )


def _check_parameter(name, value, kind, low, owner):
    if kind == "int":
        ok = isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= low
        description = f"an int in the range [{low}, inf)"
    else:
        ok = (
            isinstance(value, numbers.Real)
            and not isinstance(value, bool)
            and np.isfinite(value)
            and value >= low
        )
        description = f"a float in the range [{low}, inf)"
    if not ok:
        raise ValueError(
            f"The {name!r} parameter of {owner} must be {description}. Got {value!r} instead."
        )


_log_responsibilities = jax.jit(em.log_responsibilities, static_argnames=("covariance_type",))


#: NamedTuple fields of the online EM state, rebuilt from the dicts they are kept as.
_ONLINE_STATE_PARTS = {
    "parameters": em.MixtureParameters,
    "statistics": em.SufficientStatistics,
    "prior_parameters": MixturePriorParameters,
    "conjugate_prior": em.ConjugatePrior,
}


def _online_record(state: streaming.OnlineEMState) -> dict:
    """The online EM state as nested dicts of arrays, which ``gaussmix.save`` stores."""
    return {
        name: value._asdict() if hasattr(value, "_asdict") else value
        for name, value in state._asdict().items()
    }


def _online_state(record: dict) -> streaming.OnlineEMState:
    """The inverse of :func:`_online_record`."""
    return streaming.OnlineEMState(
        **{
            name: _ONLINE_STATE_PARTS[name](**value)
            if name in _ONLINE_STATE_PARTS and value is not None
            else value
            for name, value in record.items()
        }
    )


def _is_chunk(item) -> bool:
    """An (n, D) array, or an ``(x, w)`` tuple with an (n, D) array ``x``."""
    if isinstance(item, tuple) and len(item) == 2:
        item = item[0]
    return isinstance(item, np.ndarray | jax.Array) and item.ndim == 2


def _reads_by_chunks(X, chunk_size) -> bool:
    """Whether :meth:`GaussianMixture.fit` reads ``X`` chunk by chunk.

    Chunks: an ``np.memmap``, a path (str or ``os.PathLike``), a callable, a list or
    tuple whose items are all (n, D) arrays or ``(x, w)`` tuples, any other iterable
    that is not array-like (a generator, a dataset object), and any array when
    ``chunk_size`` is set. In memory: arrays, nested lists of numbers, data frames.
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


# ---------------------------------------------------------------------------------------
# The estimator


def _labels(norm, log_resp) -> np.ndarray:
    return np.argmax(log_resp, axis=1)


def _chunk_weight(x, w) -> float:
    """Rows of a chunk, or the sum of its weights (NaN for a chunk fit rejects)."""
    try:
        return float(np.shape(x)[0] if w is None else np.sum(np.asarray(w, np.float64)))
    except (TypeError, ValueError):
        return float("nan")


def _overflow_error(X: np.ndarray, rows: np.ndarray, what: str) -> ValueError:
    """The ValueError for rows of finite ``X`` whose computation overflowed its dtype."""
    first = int(np.flatnonzero(rows)[0])
    return ValueError(
        f"overflow in {X.dtype}: {what} {int(rows.sum())} row(s) of X (first: row {first}, "
        f"largest value {float(np.max(np.abs(X[first]))):.3g}) from the fitted components "
        f"is beyond the range of {X.dtype}; " + em.precision_advice(X.dtype)
    )


def _checked_score(norm, log_resp) -> np.ndarray:
    """The log-likelihood, or a ValueError where it is beyond the dtype's range."""
    overflowed = ~np.isfinite(norm)
    if overflowed.any():
        first = int(np.flatnonzero(overflowed)[0])
        raise ValueError(
            f"overflow in {norm.dtype}: the log-likelihood of {int(overflowed.sum())} row(s) "
            f"of X (first: row {first}) is below -{float(np.finfo(norm.dtype).max):.3g}, "
            f"beyond the range of {norm.dtype} (the point lies about 1e19 standard "
            "deviations or more from every component; predict and predict_proba still "
            "answer); " + em.precision_advice(norm.dtype)
        )
    return norm


class GaussianMixture(EstimatorBase):
    """Gaussian mixture fitted by JIT-compiled EM; scikit-learn's API and answers.

    Args:
        n_components: number of mixture components K.
        covariance_type: "full", "tied", "diag" or "spherical".
        tol: convergence threshold on the change of the mean per-sample lower bound.
        reg_covar: non-negative value added to the diagonal of the covariances.
        max_iter: EM iterations per initialization (0 keeps the initialization).
        n_init: initializations; the one with the largest lower bound is kept (they run
            together, vmapped).
        init_params: "kmeans", "k-means++", "random" or "random_from_data".
        weights_init: (K,) initial weights. means_init: (K, D) initial means.
        precisions_init: initial precisions, (K, D, D) full, (D, D) tied, (K, D) diag,
            (K,) spherical.
        random_state: None, int or numpy RandomState: seeds the initialization and
            :meth:`sample`.
        warm_start: continue from the last fit on the next call of :meth:`fit`.
        verbose: 1 prints each initialization's outcome, 2 also every
            ``verbose_interval``-th lower-bound change (printed after the compiled fit).
        verbose_interval: iterations between messages.
        priors: ``None`` (maximum likelihood, scikit-learn's answer), ``"default"`` (MAP
            under the program's conjugate default prior) or ``{site: numpyro
            distribution}`` replacing default priors of
            :func:`gaussmix.models.gaussian_mixture`.
        chunk_size: rows per chunk when :meth:`fit` reads an array by chunks (an
            ``np.memmap`` or ``.npy`` file; None: about 16 MiB per chunk). Setting it
            also makes :meth:`fit` read an in-memory array by chunks, so that a device
            holds one chunk at a time. An iterable's chunks are used as given.
        learning_decay: :math:`\\kappa \\in (0.5, 1]` of the step size
            :math:`\\rho_t = (t + \\tau_0)^{-\\kappa}` of :meth:`partial_fit`.
        learning_offset: :math:`\\tau_0 \\ge 0` of that step size; larger values
            trust early chunks less.
        devices: None (one device, the default), an int n (the first n of
            ``jax.devices()``), a list of jax devices or a one-axis ``Mesh``: :meth:`fit`
            splits the rows of an in-memory ``X`` over these devices and sums the
            statistics with a collective. Under ``jax.distributed`` pass
            ``jax.devices()`` and each process's own rows. ``sklearn.base.clone`` gives
            the clone the same devices.

    Which EM :meth:`fit` runs follows from ``X`` and these parameters, never from its
    size: in-memory EM for an array (:func:`gaussmix.inference.em.fit_em`); exact EM
    over chunks for an ``np.memmap``, a ``.npy`` path, a callable returning an iterator
    of chunks, a list of (n, D) chunks or ``(x, w)`` tuples, or when ``chunk_size`` is
    set (:func:`gaussmix.inference.streaming.fit_em_chunked`; equal to in-memory EM up
    to the order of floating-point sums); multi-device EM when ``devices`` is set
    (:func:`gaussmix.inference.shard.fit_em_sharded`). The last two start from
    :func:`gaussmix.inference.em.fit_em`'s initialization on a uniform sample of at most
    :data:`gaussmix.inference.streaming.DEFAULT_INIT_ROWS` rows (all rows, in order, when
    there are not more; further ``n_init`` restarts use their own seeds).

    Attributes:
        weights_, means_, covariances_, precisions_, precisions_cholesky_, converged_,
        n_iter_, lower_bound_, lower_bounds_, n_features_in_, feature_names_in_: as in
        scikit-learn. method_: the M-step that ran ("maximum_likelihood",
        "conjugate_map" or "generalized_em").

    Example:
        >>> import numpy as np
        >>> X = np.array([[1, 2], [1, 4], [1, 0], [10, 2], [10, 4], [10, 0]])
        >>> gm = GaussianMixture(n_components=2, random_state=0).fit(X)
        >>> sorted(gm.means_[:, 0].round(3).tolist())
        [1.0, 10.0]
        >>> int(gm.predict([[0, 0]])[0]) != int(gm.predict([[12, 3]])[0])
        True

        Data on disk, fitted chunk by chunk (the same answer as in memory):

        >>> import tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "X.npy"
        >>> np.save(path, X.astype(float))
        >>> on_disk = GaussianMixture(n_components=2, random_state=0, chunk_size=4).fit(path)
        >>> bool(np.allclose(on_disk.means_, gm.means_))
        True
    """

    def __init__(
        self,
        n_components=1,
        *,
        covariance_type="full",
        tol=1e-3,
        reg_covar=1e-6,
        max_iter=100,
        n_init=1,
        init_params="kmeans",
        weights_init=None,
        means_init=None,
        precisions_init=None,
        random_state=None,
        warm_start=False,
        verbose=0,
        verbose_interval=10,
        priors=None,
        chunk_size=None,
        learning_decay=0.7,
        learning_offset=10.0,
        devices=None,
    ):
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.tol = tol
        self.reg_covar = reg_covar
        self.max_iter = max_iter
        self.n_init = n_init
        self.init_params = init_params
        self.weights_init = weights_init
        self.means_init = means_init
        self.precisions_init = precisions_init
        self.random_state = random_state
        self.warm_start = warm_start
        self.verbose = verbose
        self.verbose_interval = verbose_interval
        self.priors = priors
        self.chunk_size = chunk_size
        self.learning_decay = learning_decay
        self.learning_offset = learning_offset
        self.devices = devices

    def __sklearn_tags__(self):
        tags = self._sklearn_tags("density_estimator")
        tags.non_deterministic = self.random_state is None
        return tags

    # -- fitting -------------------------------------------------------------------------

    def _check_parameters(self) -> None:
        name = type(self).__name__
        _check_parameter("n_components", self.n_components, "int", 1, name)
        _check_parameter("tol", self.tol, "float", 0.0, name)
        _check_parameter("reg_covar", self.reg_covar, "float", 0.0, name)
        _check_parameter("max_iter", self.max_iter, "int", 0, name)
        _check_parameter("n_init", self.n_init, "int", 1, name)
        _check_parameter("verbose_interval", self.verbose_interval, "int", 1, name)
        if self.covariance_type not in COVARIANCE_TYPES:
            raise ValueError(
                f"The 'covariance_type' parameter of {name} must be a str among "
                f"{set(COVARIANCE_TYPES)}. Got {self.covariance_type!r} instead."
            )
        if self.init_params not in em.INIT_PARAMS:
            raise ValueError(
                f"The 'init_params' parameter of {name} must be a str among "
                f"{set(em.INIT_PARAMS)}. Got {self.init_params!r} instead."
            )
        if not isinstance(self.warm_start, bool | np.bool_):
            raise ValueError(
                f"The 'warm_start' parameter of {name} must be an instance of 'bool'. "
                f"Got {self.warm_start!r} instead."
            )
        if not (
            self.priors is None or self.priors == "default" or isinstance(self.priors, Mapping)
        ):
            raise ValueError(
                f"The 'priors' parameter of {name} must be None, 'default' or a dict "
                f"{{site: numpyro distribution}}. Got {self.priors!r} instead."
            )
        if self.chunk_size is not None:
            _check_parameter("chunk_size", self.chunk_size, "int", 1, name)
        streaming.check_schedule(self.learning_decay, self.learning_offset)

    def fit(self, X, y=None, sample_weight=None):
        """Estimate the parameters by EM, keeping the best of ``n_init`` initializations.

        Args:
            X: (N, D) data: an array (in-memory EM, or split over ``devices``), or data
                read chunk by chunk by exact EM: an ``np.memmap``, a path to a ``.npy``
                file, a list of (n, D) chunks or ``(x, w)`` tuples (``w`` the (n,)
                weights of ``x``), or a callable returning a fresh iterator of such
                chunks (each EM iteration reads the data once). ``chunk_size`` also
                sends an in-memory array through the chunks.
            y: ignored.
            sample_weight: (N,) non-negative weights of the points; for an
                ``np.memmap`` or ``.npy`` path also a memmap or ``.npy`` path. Chunks
                of an iterable carry their weights as ``(x, w)`` tuples instead.

        Returns:
            self.

        Raises:
            ValueError: bad input (named, with the fix), e.g. a missing file, chunks of
                different widths, a one-shot iterator (use :meth:`partial_fit`), or more
                ``devices`` than exist.

        Warns:
            ConvergenceWarning: the best initialization reached ``max_iter``.
        """
        self._fit(X, sample_weight)
        return self

    def fit_predict(self, X, y=None, sample_weight=None) -> np.ndarray:
        """Fit, then return the labels of ``X`` under the final parameters (N,).

        ``X`` and ``sample_weight`` as in :meth:`fit`; chunked data is labelled chunk by
        chunk.
        """
        validated = self._fit(X, sample_weight)
        if validated is None:
            return self._chunked(X, _labels)
        return _labels(*self._log_resp(validated))

    def _fit(self, X, sample_weight) -> np.ndarray | None:
        """Fit by the EM that ``X`` and the parameters call for; returns the validated
        in-memory ``X``, or None when it was read by chunks."""
        self._check_parameters()
        if _reads_by_chunks(X, self.chunk_size):
            self._fit_chunks(X, sample_weight)
            return None
        X = self._validate_data(X, reset=True, ensure_min_samples=2)
        n_samples = X.shape[0]
        if n_samples < self.n_components:
            raise ValueError(
                "Expected n_samples >= n_components "
                f"but got n_components = {self.n_components}, n_samples = {n_samples}"
            )
        weight = self._check_sample_weight(sample_weight, n_samples, X.dtype)
        options, n_init = self._em_options()
        if self.devices is None:
            result = em.fit_em(X, sample_weight=weight, **options)
        else:
            result = shard.fit_em_sharded(X, sample_weight=weight, devices=self.devices, **options)
        self._finish_fit(result, n_init, data=(X, weight))
        return X

    def _fit_chunks(self, X, sample_weight) -> None:
        """Exact EM over the chunks of ``X`` (one pass per iteration)."""
        if self.devices is not None:
            raise ValueError(
                f"devices={self.devices!r} splits an in-memory array over devices, but X "
                f"({type(X).__name__}) is read by chunks; load it with np.asarray(X) to "
                "use devices, or leave devices=None to fit it chunk by chunk."
            )
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
        options, n_init = self._em_options()
        source = streaming.ChunkSource(X, sample_weight=sample_weight, chunk_rows=self.chunk_size)
        passes = []

        def chunks():
            """The chunks of ``source``, adding up the weight of each full pass."""
            total = 0.0
            for x, w in source:
                total += _chunk_weight(x, w)
                yield x, w
            passes.append(total)

        result = streaming.fit_em_chunked(chunks, **options)
        self.n_features_in_ = int(np.shape(result.params["means"])[1])
        if hasattr(self, "feature_names_in_"):
            del self.feature_names_in_
        self._finish_fit(result, n_init, fit_weight=passes[0] if passes else None)

    def _em_options(self) -> tuple[dict, int]:
        """Keyword arguments of the EM functions (a warm start continues from the last
        fit) and the number of initializations."""
        if not (self.warm_start and hasattr(self, "converged_")):
            inits = {
                "weights_init": self.weights_init,
                "means_init": self.means_init,
                "precisions_init": self.precisions_init,
            }
            n_init, start = self.n_init, -np.inf
        else:
            inits = {
                "weights_init": self.weights_,
                "means_init": self.means_,
                "precisions_init": self.precisions_,
            }
            n_init, start = 1, self.lower_bound_
        options = {
            "n_components": int(self.n_components),
            "covariance_type": self.covariance_type,
            "priors": self.priors,
            "max_iter": int(self.max_iter),
            "tol": float(self.tol),
            "reg_covar": float(self.reg_covar),
            "n_init": int(n_init),
            "init_params": self.init_params,
            "seed": seed_from_random_state(self.random_state),
            "start_lower_bound": float(start),
            **inits,
        }
        return options, n_init

    def _finish_fit(self, result: em.EMResult, n_init: int, data=None, fit_weight=None) -> None:
        """Fitted attributes, and what :meth:`partial_fit` continues from: the total weight
        of the fitted data (``_fit_weight``) and, for MAP on in-memory ``data`` (``(X,
        weight)``), the online state holding the data's statistics under the fitted
        parameters. Any online state of earlier :meth:`partial_fit` calls is dropped."""
        self._set_result(result)
        self._online_record, self._online_bounds = None, []
        if data is not None:
            X, weight = data
            fit_weight = float(X.shape[0] if weight is None else np.sum(weight, dtype=np.float64))
            if self.priors is not None:
                # a MAP M-step has no closed-form inverse: one pass over the data
                state = streaming.online_em_start(
                    X,
                    self._fitted_parameters(),
                    covariance_type=self.covariance_type,
                    priors=self.priors,
                    sample_weight=weight,
                    incremental=True,
                )
                self._online_record = _online_record(state)
        self._fit_weight = fit_weight
        if not self.converged_ and self.max_iter > 0:
            warnings.warn(
                "Best performing initialization did not converge. Try different init "
                "parameters, or increase max_iter, tol, or check for degenerate data.",
                ConvergenceWarning,
                stacklevel=4,
            )
        self._print_verbose(n_init)

    def _chunked(self, X, pick) -> np.ndarray:
        """``pick(norm, log_resp)`` of data read chunk by chunk (an ``np.memmap``, a
        ``.npy`` path, chunks), each chunk validated, concatenated over rows: memory holds
        one chunk and the (N, ...) result."""
        source = streaming.ChunkSource(X, chunk_rows=self.chunk_size)
        dtype = self.means_.dtype
        parts = [
            pick(*self._log_resp(self._validate_data(x, reset=False).astype(dtype)))
            for x, _ in source
            if np.shape(x)[0] > 0
        ]
        if not parts:
            raise ValueError(
                f"Found array with 0 sample(s) while a minimum of 1 is required by "
                f"{type(self).__name__}."
            )
        return np.concatenate(parts)

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
        X = self._validate_data(
            X, reset=not fitted, ensure_min_samples=1 if fitted else int(self.n_components)
        )
        weight = self._check_sample_weight(sample_weight, X.shape[0], X.dtype)
        online = {"covariance_type": self.covariance_type, "priors": self.priors}
        if record is None and fitted and getattr(self, "_fit_weight", None) is not None:
            if self.priors is None:
                record = _online_record(
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
                parameters = em.MixtureParameters(
                    self.weights_, self.means_, self.covariances_, self.precisions_cholesky_
                )
            else:
                options, _ = self._em_options()
                result = em.fit_em(X, sample_weight=weight, **options)
                self._set_result(result)
                parameters = em.MixtureParameters(
                    result.params["weights"],
                    result.params["means"],
                    result.params[COVARIANCE_SITES[self.covariance_type]],
                    result.precisions_cholesky,
                )
            state = streaming.online_em_start(X, parameters, sample_weight=weight, **online)
            self._online_record, self._online_bounds = _online_record(state), []
            return self
        state = streaming.online_em_step(
            _online_state(record),
            X,
            reg_covar=float(self.reg_covar),
            learning_decay=float(self.learning_decay),
            learning_offset=float(self.learning_offset),
            sample_weight=weight,
            **online,
        )
        self._online_record = _online_record(state)
        self._online_bounds = [*self._online_bounds, float(state.lower_bound)]
        self._set_result(
            streaming.online_em_result(state, self._online_bounds, tol=float(self.tol), **online)
        )
        return self

    def _fitted_parameters(self) -> em.MixtureParameters:
        return em.MixtureParameters(
            self.weights_, self.means_, self.covariances_, self.precisions_cholesky_
        )

    def _check_sample_weight(self, sample_weight, n_samples, dtype):
        if sample_weight is None:
            return None
        weight = np.asarray(sample_weight)
        if weight.ndim == 0:
            weight = np.full(n_samples, float(weight))
        if weight.dtype.kind not in "biuf":
            raise ValueError(f"sample_weight must be numeric, got dtype {weight.dtype}.")
        if weight.ndim != 1 or weight.shape[0] != n_samples:
            raise ValueError(f"sample_weight.shape == {weight.shape}, expected ({n_samples},)!")
        if weight.dtype.kind == "f" and np.isnan(weight).any():
            raise ValueError("sample_weight contains NaN; give every point a finite weight.")
        if weight.dtype.kind == "f" and np.isinf(weight).any():
            raise ValueError("sample_weight contains infinity; give every point a finite weight.")
        weight = em.check_finite_input(weight, "sample_weight", dtype)
        if np.any(weight < 0):
            raise ValueError("Negative values in data passed to `sample_weight`")
        if weight.sum() <= 0:
            raise ValueError("sample_weight sums to zero; give some points a positive weight.")
        return weight

    def _set_result(self, result: em.EMResult) -> None:
        site = COVARIANCE_SITES[self.covariance_type]
        self.method_ = result.method
        self.weights_ = np.asarray(result.params["weights"])
        self.means_ = np.asarray(result.params["means"])
        self.covariances_ = np.asarray(result.params[site])
        self.precisions_cholesky_ = np.asarray(result.precisions_cholesky)
        factor = self.precisions_cholesky_
        if self.covariance_type == "full":
            self.precisions_ = factor @ np.swapaxes(factor, -1, -2)
        elif self.covariance_type == "tied":
            self.precisions_ = factor @ factor.T
        else:
            self.precisions_ = factor**2
        self.converged_ = bool(result.converged)
        self.n_iter_ = int(result.n_iter)
        self.lower_bound_ = float(result.lower_bound)
        self.lower_bounds_ = np.asarray(result.lower_bounds)[: self.n_iter_]
        self._scales = np.asarray(result.params["scales"]) if "scales" in result.params else None

    def _print_verbose(self, n_init: int) -> None:
        if not self.verbose:
            return
        status = "converged" if self.converged_ else "did not converge"
        print("Initialization 0" if n_init == 1 else f"Initializations 0-{n_init - 1} (best kept)")
        if self.verbose >= 2:
            previous = -np.inf
            for iteration, bound in enumerate(self.lower_bounds_, start=1):
                if iteration % self.verbose_interval == 0:
                    print(f"  Iteration {iteration}\t ll change {bound - previous:.5f}")
                previous = bound
        print(f"Initialization {status}. lower bound {self.lower_bound_:.5f}.")

    # -- prediction ----------------------------------------------------------------------

    @property
    def params_(self) -> dict[str, np.ndarray]:
        """Fitted parameters as the program's site dict (NUTS init values).

        Keys: ``weights``, ``means`` and the covariance site of the type
        (``covariances`` | ``covariance`` | ``variances``), plus ``scales`` when the
        priors name it.
        """
        self._check_is_fitted()
        site = COVARIANCE_SITES[self.covariance_type]
        params = {"weights": self.weights_, "means": self.means_, site: self.covariances_}
        if getattr(self, "_scales", None) is not None:
            params["scales"] = self._scales
        return params

    def sample_posterior(
        self,
        X: ArrayLike,
        *,
        num_warmup: int = 1000,
        num_samples: int = 1000,
        num_chains: int = 4,
        random_state=None,
        progress_bar: bool | None = None,
        sample_weight: ArrayLike | None = None,
    ):
        """NUTS posterior of :func:`gaussmix.models.gaussian_mixture` on ``X``.

        The program always carries a proper prior: its conjugate default when
        ``priors`` is ``None`` or ``"default"``, else the user's ``priors``. Chains start
        from this estimator's fitted parameters (fitting first when it is not fitted) and
        the draws are relabeled to its labelling, so ``posterior["means"][..., k, :]``
        matches ``means_[k]``.

        Args:
            X: (N, D) data.
            num_warmup, num_samples, num_chains: NUTS settings.
            random_state: None, int or RandomState seeding the chains (default: the
                estimator's ``random_state``).
            progress_bar: a tqdm bar; default only on a terminal.
            sample_weight: (N,) non-negative weights multiplying each point's
                log-likelihood.

        Returns:
            An ``xarray.DataTree`` with groups ``posterior`` (``weights``, ``means`` and
            the covariance site), ``sample_stats``, ``log_likelihood`` (marginal,
            pointwise), ``observed_data`` and ``mixture`` (posterior-averaged
            ``responsibilities`` (N, K)); see
            :func:`gaussmix.inference.mcmc.sample_mixture`.

        Example:
            >>> import numpy as np
            >>> rng = np.random.default_rng(0)
            >>> X = np.concatenate([rng.normal(-3, 1, (100, 1)), rng.normal(3, 1, (100, 1))])
            >>> gm = GaussianMixture(2, covariance_type="spherical", random_state=0).fit(X)
            >>> tree = gm.sample_posterior(X, num_warmup=200, num_samples=200, num_chains=2,
            ...                            progress_bar=False)
            >>> bool(np.allclose(tree.posterior["means"].mean(("chain", "draw")), gm.means_,
            ...                  atol=0.5))
            True
        """
        from gaussmix.inference.mcmc import sample_mixture

        if not self.__sklearn_is_fitted__():
            self.fit(X, sample_weight=sample_weight)
        X = self._validate_data(X, reset=False)
        seed = seed_from_random_state(self.random_state if random_state is None else random_state)
        init = {name: jnp.asarray(value, X.dtype) for name, value in self.params_.items()}
        return sample_mixture(
            X,
            n_components=self.n_components,
            covariance_type=self.covariance_type,
            priors=None if self.priors in (None, "default") else self.priors,
            sample_weight=sample_weight,
            num_warmup=num_warmup,
            num_samples=num_samples,
            num_chains=num_chains,
            seed=seed,
            progress_bar=progress_bar,
            init=init,
        )

    def _log_resp(self, X: np.ndarray):
        """Log-likelihood (n,) and log responsibilities (n, K) of validated ``X``.

        Rows whose log-likelihood is below the dtype's range keep finite limit
        responsibilities and a log-likelihood of -inf (see
        :func:`gaussmix.inference.em.log_responsibilities`); a row where even ``X - means``
        overflows is a ValueError.
        """
        # NumPy in: the compiled function moves the arrays in one go
        norm, log_resp = _log_responsibilities(
            X,
            self.weights_.astype(X.dtype),
            self.means_.astype(X.dtype),
            self.precisions_cholesky_.astype(X.dtype),
            covariance_type=self.covariance_type,
        )
        norm, log_resp = np.asarray(norm), np.asarray(log_resp)
        broken = np.isnan(log_resp).any(axis=1)
        if broken.any():
            raise _overflow_error(X, broken, "the distance of")
        return norm, log_resp

    def _estimate_weighted_log_prob(self, X: np.ndarray) -> np.ndarray:
        norm, log_resp = self._log_resp(X)
        return log_resp + norm[:, None]

    def _responsibility_output(self, X, pick) -> np.ndarray:
        """``pick(norm, log_resp)`` of ``X``; an ``np.memmap`` or ``.npy`` path is read
        chunk by chunk (``chunk_size`` rows), as :meth:`fit` reads it."""
        self._check_is_fitted()
        if isinstance(X, np.memmap | str | os.PathLike):
            return self._chunked(X, pick)
        return pick(*self._log_resp(self._validate_data(X, reset=False)))

    def score_samples(self, X: ArrayLike) -> np.ndarray:
        """Log-likelihood of each sample, shape (N,).

        Finite for every point whose log-likelihood the dtype can hold (a point 1e18
        standard deviations out scores about -5e35 in float32).

        Raises:
            ValueError: the log-likelihood of a point is beyond the dtype's range ("overflow
                in float32: ..."); :meth:`predict` and :meth:`predict_proba` still answer.
        """
        return self._responsibility_output(X, _checked_score)

    def score(self, X: ArrayLike, y=None) -> float:
        """Mean per-sample log-likelihood of ``X``."""
        return float(np.mean(self.score_samples(X)))

    def predict(self, X: ArrayLike) -> np.ndarray:
        """Most probable component of each sample, shape (N,)."""
        return self._responsibility_output(X, _labels)

    def predict_proba(self, X: ArrayLike) -> np.ndarray:
        """Responsibilities, shape (N, K); rows sum to 1."""
        return self._responsibility_output(X, lambda norm, log_resp: np.exp(log_resp))

    def sample(self, n_samples: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """Draw from the fitted mixture (scikit-learn's algorithm and random stream).

        Returns:
            X (n_samples, D) and the component labels (n_samples,).
        """
        self._check_is_fitted()
        if n_samples < 1:
            raise ValueError(
                f"Invalid value for 'n_samples': {n_samples} . The sampling requires at "
                "least one sample."
            )
        _, n_features = self.means_.shape
        rng = _numpy_random_state(self.random_state)
        counts = rng.multinomial(n_samples, self.weights_.astype(np.float64))
        means = self.means_.astype(np.float64)
        covariances = self.covariances_.astype(np.float64)
        if self.covariance_type == "full":
            X = np.vstack(
                [
                    rng.multivariate_normal(m, c, int(n))
                    for m, c, n in zip(means, covariances, counts, strict=True)
                ]
            )
        elif self.covariance_type == "tied":
            X = np.vstack(
                [
                    rng.multivariate_normal(m, covariances, int(n))
                    for m, n in zip(means, counts, strict=True)
                ]
            )
        else:
            X = np.vstack(
                [
                    m + rng.standard_normal(size=(n, n_features)) * np.sqrt(c)
                    for m, c, n in zip(means, covariances, counts, strict=True)
                ]
            )
        labels = np.concatenate([np.full(int(n), k, dtype=np.int64) for k, n in enumerate(counts)])
        return X.astype(self.means_.dtype), labels

    # -- model selection -----------------------------------------------------------------

    def _n_parameters(self) -> int:
        """Free parameters: covariance + means + K - 1 weights."""
        _, n_features = self.means_.shape
        K = self.n_components
        covariance_parameters = {
            "full": K * n_features * (n_features + 1) / 2.0,
            "diag": K * n_features,
            "tied": n_features * (n_features + 1) / 2.0,
            "spherical": K,
        }[self.covariance_type]
        return int(covariance_parameters + n_features * K + K - 1)

    def bic(self, X: ArrayLike) -> float:
        """Bayesian information criterion :math:`-2 \\log L + p \\log N` (lower is better)."""
        X = np.asarray(X)
        return -2 * self.score(X) * X.shape[0] + self._n_parameters() * np.log(X.shape[0])

    def aic(self, X: ArrayLike) -> float:
        """Akaike information criterion :math:`-2 \\log L + 2 p` (lower is better)."""
        X = np.asarray(X)
        return -2 * self.score(X) * X.shape[0] + 2 * self._n_parameters()
