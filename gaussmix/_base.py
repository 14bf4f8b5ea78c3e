"""What every gaussmix estimator shares: scikit-learn's conventions without scikit-learn.

As scikit-learn's ``sklearn/base.py`` and ``sklearn/utils/validation.py``: the estimator
base class (``get_params`` / ``set_params`` / ``repr`` / ``clone``), parameter checks with
scikit-learn's messages, input validation (:func:`validate_data`), the fitted check
(:func:`check_is_fitted`), ``random_state`` handling and the exception and warning
classes, which become scikit-learn's own when scikit-learn is loaded (so that its tools
and ``pytest.warns(sklearn.exceptions.ConvergenceWarning)`` recognize them) without ever
importing it (that costs 1.5 s).

The module is private; its names are public to gaussmix's estimators
(:class:`gaussmix.GaussianMixture`, :class:`gaussmix.KMeans`) and model selection.
"""

import functools
import inspect
import numbers
import sys
import warnings

import jax
import numpy as np

from gaussmix.inference import em

__all__ = [
    "EstimatorBase",
    "NotFittedError",
    "check_is_fitted",
    "check_mixture_parameters",
    "check_parameter",
    "convergence_warning_class",
    "feature_names_of",
    "is_hardware",
    "not_fitted_error_class",
    "numpy_random_state",
    "scikit_learn_tags",
    "seed_from_random_state",
    "validate_data",
]


class NotFittedError(ValueError, AttributeError):
    """An estimator was used before ``fit`` (scikit-learn's ``NotFittedError``)."""


def not_fitted_error_class() -> type:
    """scikit-learn's ``NotFittedError`` when scikit-learn is loaded (so its tools
    recognize the error), else :class:`NotFittedError`; both are ValueError and
    AttributeError."""
    sklearn_exceptions = sys.modules.get("sklearn.exceptions")
    if sklearn_exceptions is not None:
        return sklearn_exceptions.NotFittedError
    return NotFittedError


def convergence_warning_class() -> type:
    """The class of an estimator's convergence warning.

    :class:`gaussmix.inference.em.ConvergenceWarning`; when scikit-learn is loaded
    (``sklearn.exceptions`` in ``sys.modules``, never imported here), a subclass of it
    and of scikit-learn's ``ConvergenceWarning``, so that filters and ``pytest.warns``
    written for either catch it.

    Example:
        >>> issubclass(convergence_warning_class(), em.ConvergenceWarning)
        True
    """
    sklearn_exceptions = sys.modules.get("sklearn.exceptions")
    scikit_learn_class = getattr(sklearn_exceptions, "ConvergenceWarning", None)
    if scikit_learn_class is None:
        return em.ConvergenceWarning
    return _convergence_warning_of(scikit_learn_class)


@functools.cache
def _convergence_warning_of(scikit_learn_class: type) -> type:
    """One class per scikit-learn class (warning filters compare classes)."""
    return type(
        "ConvergenceWarning",
        (em.ConvergenceWarning, scikit_learn_class),
        {
            "__module__": __name__,
            "__qualname__": "ConvergenceWarning",
            "__doc__": "gaussmix's ConvergenceWarning, also scikit-learn's.",
        },
    )


def __getattr__(name: str):
    """``gaussmix._base.ConvergenceWarning``, the class above, found by its module and
    name as pickle and pytest-xdist find a warning's class in another process (importing
    scikit-learn there: only a process that got such a warning asks)."""
    if name == "ConvergenceWarning":
        import sklearn.exceptions

        return _convergence_warning_of(sklearn.exceptions.ConvergenceWarning)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def is_hardware(value) -> bool:
    """A JAX device, a mesh, or a non-empty list or tuple of devices."""
    if isinstance(value, (list, tuple)):
        return bool(value) and all(isinstance(item, jax.Device) for item in value)
    return isinstance(value, (jax.Device, jax.sharding.Mesh))


def seed_from_random_state(random_state) -> int:
    """An int seed for JAX from scikit-learn's ``random_state``.

    Args:
        random_state: None (NumPy's global random state draws the seed), an int (the
            seed itself), a ``np.random.RandomState`` or ``np.random.Generator`` (one
            draw, so that consecutive fits differ, as in scikit-learn).

    Returns:
        An int in [0, 2**31 - 1).

    Raises:
        ValueError: any other value.

    Example:
        >>> seed_from_random_state(7)
        7
    """
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


def numpy_random_state(random_state) -> np.random.RandomState:
    """scikit-learn's ``check_random_state``: a ``np.random.RandomState`` for NumPy draws.

    None gives NumPy's global random state, an int a fresh ``RandomState(int)``, a
    ``RandomState`` itself, a ``Generator`` a ``RandomState`` seeded by one draw.

    Example:
        >>> float(numpy_random_state(0).rand()) == float(np.random.RandomState(0).rand())
        True
    """
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


def check_parameter(name: str, value, kind: str, low: float, owner: str) -> None:
    """scikit-learn's ``Interval`` constraint: an int or finite float at least ``low``.

    Args:
        name: the parameter's name, for the message.
        value: its value.
        kind: "int" or "float".
        low: the smallest value allowed.
        owner: the estimator's class name, for the message.

    Raises:
        ValueError: scikit-learn's message, e.g. "The 'tol' parameter of GaussianMixture
            must be a float in the range [0.0, inf). Got -1 instead."

    Example:
        >>> check_parameter("n_init", 0, "int", 1, "GaussianMixture")
        Traceback (most recent call last):
        ...
        ValueError: The 'n_init' parameter of GaussianMixture must be an int in the range [1, inf). Got 0 instead.
    """
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


def check_mixture_parameters(estimator, init_params: tuple[str, ...]) -> None:
    """The constraints scikit-learn's two mixtures share, with scikit-learn's messages:
    ``n_components`` >= 1, ``tol`` >= 0, ``reg_covar`` >= 0, ``max_iter`` >= 0,
    ``n_init`` >= 1, ``verbose`` an int >= 0 or a bool, ``verbose_interval`` >= 1,
    ``init_params`` among ``init_params``, ``warm_start`` a bool, ``chunk_size`` None
    or >= 1.

    Example:
        >>> from gaussmix import GaussianMixture
        >>> check_mixture_parameters(GaussianMixture(tol=-1.0), ("kmeans",))
        Traceback (most recent call last):
        ...
        ValueError: The 'tol' parameter of GaussianMixture must be a float in the range [0.0, inf). Got -1.0 instead.
    """
    name = type(estimator).__name__
    for parameter, kind, low in (
        ("n_components", "int", 1),
        ("tol", "float", 0.0),
        ("reg_covar", "float", 0.0),
        ("max_iter", "int", 0),
        ("n_init", "int", 1),
        ("verbose_interval", "int", 1),
    ):
        check_parameter(parameter, getattr(estimator, parameter), kind, low, name)
    if not isinstance(estimator.verbose, bool | np.bool_):
        check_parameter("verbose", estimator.verbose, "int", 0, name)
    if estimator.chunk_size is not None:
        check_parameter("chunk_size", estimator.chunk_size, "int", 1, name)
    if estimator.init_params not in init_params:
        raise ValueError(
            f"The 'init_params' parameter of {name} must be a str among "
            f"{set(init_params)}. Got {estimator.init_params!r} instead."
        )
    if not isinstance(estimator.warm_start, bool | np.bool_):
        raise ValueError(
            f"The 'warm_start' parameter of {name} must be an instance of 'bool'. "
            f"Got {estimator.warm_start!r} instead."
        )


def scikit_learn_tags(estimator_type: str):
    """scikit-learn's ``Tags`` of a dense 2-D estimator; imports scikit-learn, so it is
    called only from ``__sklearn_tags__`` (when scikit-learn asks)."""
    from sklearn.utils import InputTags, Tags, TargetTags

    return Tags(
        estimator_type=estimator_type,
        target_tags=TargetTags(required=False),
        transformer_tags=None,
        regressor_tags=None,
        classifier_tags=None,
        input_tags=InputTags(two_d_array=True),
    )


class EstimatorBase:
    """``get_params`` / ``set_params`` / ``repr`` / ``clone``, scikit-learn's ``BaseEstimator``.

    Parameters are the keyword arguments of the subclass's ``__init__``, stored unchanged
    as attributes of the same name (checked at ``fit``, as scikit-learn does). An
    estimator is fitted once it has ``n_features_in_``.
    """

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
            name: value if is_hardware(value) else clone(value, safe=False)
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


def check_is_fitted(estimator) -> None:
    """scikit-learn's ``check_is_fitted``.

    Raises:
        NotFittedError: (scikit-learn's class when it is loaded) the estimator was not
            fitted, with scikit-learn's message.
    """
    if not estimator.__sklearn_is_fitted__():
        raise not_fitted_error_class()(
            f"This {type(estimator).__name__} instance is not fitted yet. Call 'fit' with "
            "appropriate arguments before using this estimator."
        )


def validate_data(
    estimator, X, *, reset: bool, ensure_min_samples: int = 1, allow_nan: bool = False
) -> np.ndarray:
    """scikit-learn's ``validate_data``: ``X`` as a finite 2-D float32/float64 array.

    Integers and booleans become float64; float64 beyond float32's range is an error
    when JAX runs in float32.

    Args:
        estimator: the estimator (its class name goes into the messages).
        X: (N, D) array-like; a data frame's string column names are feature names.
        reset: ``fit``: record ``n_features_in_`` (and ``feature_names_in_``) on the
            estimator; else check ``X`` against them.
        ensure_min_samples: rows required.
        allow_nan: keep NaN entries (missing values) instead of refusing them; infinity
            stays an error. An estimator with a ``nan_policy`` names it in the message.

    Returns:
        (N, D) NumPy array.

    Raises:
        TypeError: sparse data, non-numeric objects, mixed column name types.
        ValueError: scikit-learn's messages for the wrong ndim, too few rows or
            features, NaN, infinity, or another number of features than at fit.

    Example:
        >>> class Estimator(EstimatorBase):
        ...     pass
        >>> validate_data(Estimator(), [[1, 2], [3, 4]], reset=True).dtype
        dtype('float64')
    """
    name = type(estimator).__name__
    feature_names = feature_names_of(X)
    if type(X).__module__.startswith("scipy.sparse") or hasattr(X, "tocsr"):
        raise TypeError(
            "Sparse data was passed for X, but dense data is required. Use '.toarray()' "
            "to convert to a dense numpy array."
        )
    array = _as_float_array(X)
    if array.ndim in (0, 1):
        kind = "scalar" if array.ndim == 0 else "1D"
        raise ValueError(
            f"Expected 2D array, got {kind} array instead:\narray={array}.\n"
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
    holes = np.isnan(array)
    if holes.any() and not allow_nan:
        if getattr(estimator, "nan_policy", "raise") != "raise":
            raise ValueError(
                f"Input X contains NaN.\n{name} with nan_policy={estimator.nan_policy!r} "
                "handles missing entries in fit, score_samples, score, predict, "
                "predict_proba, bic, aic and sample_posterior; this step (e.g. "
                "select_components, bootstrap_likelihood_ratio) does not take NaN yet: "
                "drop or impute the rows holding NaN first."
            )
        if hasattr(estimator, "nan_policy"):
            raise ValueError(
                f"Input X contains NaN.\n{name} with nan_policy={estimator.nan_policy!r} "
                "does not accept missing values encoded as NaN; pass "
                "nan_policy='marginalize' (the likelihood of the observed entries) or "
                "nan_policy='omit' (fit without the rows holding NaN), or impute them or "
                "drop those rows first."
            )
        raise ValueError(
            f"Input X contains NaN.\n{name} does not accept missing values encoded as "
            "NaN; impute them or drop those rows first."
        )
    if np.isinf(array).any():
        raise ValueError(
            f"Input X contains infinity or a value too large for {array.dtype!r}; "
            "remove those rows or scale the data."
        )
    if not jax.config.jax_enable_x64 and array.dtype == np.float64:
        # finite float64 values beyond float32's range: an overflow, not the data's fault
        filled = em.check_finite_input(np.where(holes, 0.0, array), "X", np.float32)
        array = np.where(holes, np.float32(np.nan), filled) if holes.any() else filled
    if reset:
        estimator.n_features_in_ = n_features
        if feature_names is not None:
            estimator.feature_names_in_ = feature_names
        elif hasattr(estimator, "feature_names_in_"):
            del estimator.feature_names_in_
    else:
        _check_feature_names(estimator, feature_names)
        if n_features != estimator.n_features_in_:
            raise ValueError(
                f"X has {n_features} features, but {name} is expecting "
                f"{estimator.n_features_in_} features as input."
            )
    return array


def _as_float_array(X) -> np.ndarray:
    """``X`` as a float32 or float64 array (integers, booleans, numeric objects: float64)."""
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
    return array


def _check_feature_names(estimator, feature_names) -> None:
    """scikit-learn's checks of ``X``'s feature names against those seen at fit."""
    fitted = getattr(estimator, "feature_names_in_", None)
    name = type(estimator).__name__
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
            message += "Feature names unseen at fit time:\n" + "".join(f"- {n}\n" for n in unseen)
        if missing:
            message += "Feature names seen at fit time, yet now missing:\n" + "".join(
                f"- {n}\n" for n in missing
            )
        if not unseen and not missing:
            message += "Feature names must be in the same order as they were in fit.\n"
        raise ValueError(message)


def feature_names_of(X) -> np.ndarray | None:
    """A data frame's column names when all are strings, else None.

    Raises:
        TypeError: some column names are strings and others not (scikit-learn's message).
    """
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
