"""Loading, layer 3: each field's type, shape and value, before anything is built.

:func:`check_estimator_keys` and :func:`check_record_keys` check a state tree's names
before any array is read; :data:`ESTIMATOR_CHECKS` and :data:`RECORD_CHECKS` then check
the decoded values, per class, and return those to set.
"""

import dataclasses
import importlib
import math
import numbers
from collections.abc import Mapping
from typing import Any

import numpy as np

from gaussmix.io.schema import FITTED_ATTRIBUTES, SKIPPED_FIELDS, InvalidFile, describe
from gaussmix.models.priors import COVARIANCE_LAYOUTS

__all__ = ["ESTIMATOR_CHECKS", "RECORD_CHECKS", "check_estimator_keys", "check_record_keys"]


def _integer(value: Any, where: str, low: int | None = None) -> int:
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Integral):
        raise InvalidFile(f"{where} must be an integer, not {describe(value)}")
    if low is not None and value < low:
        raise InvalidFile(f"{where} = {value} must be >= {low}")
    return int(value)


def _boolean(value: Any, where: str) -> bool:
    if not isinstance(value, bool | np.bool_):
        raise InvalidFile(f"{where} must be true or false, not {describe(value)}")
    return bool(value)


def _real(value: Any, where: str, *, finite: bool = True, nan: bool = False) -> float:
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Real):
        raise InvalidFile(f"{where} must be a number, not {describe(value)}")
    number = float(value)
    if math.isnan(number) and not nan:
        raise InvalidFile(f"{where} is NaN")
    if finite and math.isinf(number):
        raise InvalidFile(f"{where} = {number} is not finite")
    return number


def _array(
    value: Any, where: str, shape: tuple | None, kinds: str = "f", finite: bool = True
) -> np.ndarray:
    """``value`` (a NumPy or JAX array) as a NumPy array of ``shape`` (None: any) and
    dtype kind."""
    import jax

    if not isinstance(value, np.ndarray | jax.Array):
        raise InvalidFile(f"{where} must be an array of shape {shape}, not {describe(value)}")
    array = np.asarray(value)
    names = {"f": "floats", "b": "booleans", "iu": "integers", "U": "strings"}
    if array.dtype.kind not in kinds:
        raise InvalidFile(f"{where} holds {array.dtype}, not {names.get(kinds, kinds)}")
    if shape is not None and array.shape != tuple(shape):
        raise InvalidFile(f"{where} has shape {array.shape}; it must have shape {tuple(shape)}")
    if finite and array.dtype.kind == "f" and not np.all(np.isfinite(array)):
        raise InvalidFile(f"{where} holds NaN or infinite values")
    return array


def _tolerance(array: np.ndarray) -> float:
    # sqrt(eps) of the dtype: rounding in EM leaves errors of a few eps times K or D
    # (1e-7 to 1e-5 in float32 up to K = 100), far below it; an edited value is far above.
    return float(np.sqrt(np.finfo(array.dtype).eps))


def _covariance_shapes(covariance_type: str, k: int, d: int) -> tuple:
    return {"full": (k, d, d), "tied": (d, d), "diag": (k, d), "spherical": (k,)}[covariance_type]


def _check_weights(weights: np.ndarray, where: str, expected: float = 1.0) -> None:
    if np.any(weights < 0):
        raise InvalidFile(f"{where} has negative weights {weights.tolist()[:10]}")
    total = float(np.sum(weights, dtype=np.float64))
    if abs(total - expected) > _tolerance(weights):
        raise InvalidFile(f"{where} sums to {total!r}, not {expected!r}")


def _check_positive_definite(matrices: np.ndarray, where: str) -> None:
    """Symmetric (to rounding) and positive definite (Cholesky in float64)."""
    scale = float(np.max(np.abs(matrices), initial=0.0))
    asymmetry = float(np.max(np.abs(matrices - np.swapaxes(matrices, -1, -2)), initial=0.0))
    if asymmetry > _tolerance(matrices) * scale:
        raise InvalidFile(f"{where} is not symmetric")
    try:
        np.linalg.cholesky(matrices.astype(np.float64))
    except np.linalg.LinAlgError:
        raise InvalidFile(f"{where} is not positive definite") from None


def _check_covariances(value: Any, where: str, covariance_type: str, k: int, d: int):
    array = _array(value, where, _covariance_shapes(covariance_type, k, d))
    if covariance_type in ("full", "tied"):
        _check_positive_definite(array, where)
    elif np.any(array <= 0):
        raise InvalidFile(f"{where} holds variances <= 0")
    return array


def _check_precision_factor(value: Any, where: str, covariance_type: str, k: int, d: int):
    """scikit-learn's ``precisions_cholesky_``: upper-triangular factors with a positive
    diagonal (full, tied), or positive inverse standard deviations (diag, spherical)."""
    array = _array(value, where, _covariance_shapes(covariance_type, k, d))
    if covariance_type in ("full", "tied"):
        diagonal = np.diagonal(array, axis1=-2, axis2=-1)
        below = np.tril(array, -1)
        scale = float(np.max(np.abs(array), initial=0.0))
        if np.any(diagonal <= 0) or np.max(np.abs(below), initial=0.0) > _tolerance(array) * scale:
            raise InvalidFile(f"{where} is not upper triangular with a positive diagonal")
    elif np.any(array <= 0):
        raise InvalidFile(f"{where} holds values <= 0")
    return array


def _check_mixture_parameters(
    values: Mapping, where: str, names: tuple, covariance_type: str, k: int, d: int
) -> dict:
    """Weights, means, covariances and precision factors of a K-component mixture."""
    weights_name, means_name, covariances_name, factor_name = names
    weights = _array(values[weights_name], f"{where}{weights_name}", (k,))
    _check_weights(weights, f"{where}{weights_name}", 1.0 - values.get("background_weight_", 0.0))
    _array(values[means_name], f"{where}{means_name}", (k, d))
    _check_covariances(
        values[covariances_name], f"{where}{covariances_name}", covariance_type, k, d
    )
    _check_precision_factor(values[factor_name], f"{where}{factor_name}", covariance_type, k, d)
    return dict(values)


def _exact_keys(value: Any, where: str, fields: tuple, optional: Any = ()) -> dict:
    """``value``, an object with the keys ``fields`` (those in ``optional`` may be absent)."""
    if not isinstance(value, dict) or not (
        set(fields) - set(optional) <= set(value) <= set(fields)
    ):
        found = sorted(value) if isinstance(value, dict) else describe(value)
        raise InvalidFile(f"{where} must be an object with keys {sorted(fields)}, not {found}")
    return value


def _named_tuple_keys(value: Any, where: str, cls: type) -> dict:
    """The fields of NamedTuple ``cls`` as a dict (fields with a default may be absent)."""
    return _exact_keys(value, where, cls._fields, cls._field_defaults)


def _check_online_record(record: Any, covariance_type: str, k: int, d: int) -> None:
    """The online EM state of ``partial_fit`` (nested dicts of its NamedTuples' fields)."""
    from gaussmix.inference import em, streaming
    from gaussmix.models.priors import MixturePriorParameters

    where = "fitted._online_record"
    record = _named_tuple_keys(record, where, streaming.OnlineEMState)
    parameters = _named_tuple_keys(
        record["parameters"], f"{where}.parameters", em.MixtureParameters
    )
    _check_mixture_parameters(
        parameters, f"{where}.parameters.", em.MixtureParameters._fields, covariance_type, k, d
    )
    statistics = _named_tuple_keys(
        record["statistics"], f"{where}.statistics", em.SufficientStatistics
    )
    second = {"full": (k, d, d), "tied": (d, d), "diag": (k, d), "spherical": (k,)}
    for name, shape in (("counts", (k,)), ("first", (k, d)), ("second", second[covariance_type])):
        _array(statistics[name], f"{where}.statistics.{name}", shape)
    if np.any(np.asarray(statistics["counts"]) < 0):
        raise InvalidFile(f"{where}.statistics.counts holds negative counts")
    _array(statistics["log_likelihood"], f"{where}.statistics.log_likelihood", ())
    for at, holder in ((f"{where}.statistics", statistics), (where, record)):
        total = _array(holder["total_weight"], f"{at}.total_weight", ())
        if not total > 0:
            raise InvalidFile(f"{at}.total_weight = {float(total)} is not positive")
    _array(record["centre"], f"{where}.centre", (d,))
    _integer(np.asarray(_array(record["n_updates"], f"{where}.n_updates", (), "iu"))[()], where, 0)
    _array(record["lower_bound"], f"{where}.lower_bound", ())
    if "incremental" in record:
        _spectrum_values(record["incremental"], f"{where}.incremental", None, "b", True)
    prior_shapes = {
        "prior_parameters": (
            MixturePriorParameters,
            ((), (d,), (), (), {"full": (d, d), "tied": (d, d), "diag": (d,), "spherical": ()}),
        ),
        "conjugate_prior": (
            em.ConjugatePrior,
            (
                (k,),
                (d,),
                (),
                {"full": (k,), "tied": (), "diag": (k, d), "spherical": (k,)},
                _covariance_shapes(covariance_type, k, d),
            ),
        ),
    }
    for part, (cls, shapes) in prior_shapes.items():
        if record[part] is None:
            continue
        values = _named_tuple_keys(record[part], f"{where}.{part}", cls)
        for name, shape in zip(cls._fields, shapes, strict=True):
            if name not in values:
                continue
            shape = shape[covariance_type] if isinstance(shape, dict) else shape
            _array(values[name], f"{where}.{part}.{name}", shape)


def _check_feature_names(value: Any, d: int) -> np.ndarray:
    names = _array(value, "fitted.feature_names_in_", (d,), "U")
    return names.astype(object)  # as fit sets them (scikit-learn's dtype)


def _check_random_state(value: Any) -> None:
    if value is not None and not (
        isinstance(value, numbers.Integral)
        and not isinstance(value, bool | np.bool_)
        and 0 <= value < 2**32
    ):
        raise InvalidFile(
            f"hyperparameters.random_state must be None or an int in [0, 2**32), not "
            f"{describe(value)}"
        )


def _run_check(where: str, check, *arguments) -> Any:
    """Call another module's check, its complaint about the file's values a ValueError."""
    try:
        return check(*arguments)
    except (TypeError, ValueError, KeyError, IndexError, AttributeError) as error:
        raise InvalidFile(f"{where}: {error}") from None


def _check_background(model: Any, fitted: dict, d: int) -> None:
    """A uniform background's fitted attributes: all or none (all exactly when the
    hyperparameter ``background`` names one), a weight in [0, 1], a finite positive
    volume V with log density -log V, and the fitting data's box (D,) lower <= upper."""
    from gaussmix._background import FITTED_NAMES

    present = [name for name in FITTED_NAMES if name in fitted]
    if not present and model.background is None:
        return
    if model.background is None or len(present) != len(FITTED_NAMES):
        raise InvalidFile(
            f"hyperparameters.background is {model.background!r} but the fitted background "
            f"attributes are {present}, not {list(FITTED_NAMES)}"
        )
    weight = _real(fitted["background_weight_"], "fitted.background_weight_")
    if not 0.0 <= weight <= 1.0:
        raise InvalidFile(f"fitted.background_weight_ is {weight!r}, not in [0, 1]")
    volume = _real(fitted["background_volume_"], "fitted.background_volume_")
    log_density = _real(fitted["background_log_density_"], "fitted.background_log_density_")
    if not volume > 0 or abs(log_density + math.log(volume)) > 1e-9 * max(1.0, abs(log_density)):
        raise InvalidFile(
            f"fitted.background_volume_ {volume!r} is not positive or its log density "
            f"{log_density!r} is not -log of it"
        )
    lower = _array(fitted["background_lower_"], "fitted.background_lower_", (d,))
    upper = _array(fitted["background_upper_"], "fitted.background_upper_", (d,))
    if np.any(lower > upper):
        raise InvalidFile("fitted.background_lower_ exceeds fitted.background_upper_")
    fitted["background_weight_"] = weight


def _check_gaussian_mixture(model: Any, fitted: dict) -> dict:
    from gaussmix.inference import em

    _run_check("hyperparameters", model._check_parameters)
    _check_random_state(model.random_state)
    if not isinstance(model.verbose, bool):  # verbose=True is scikit-learn's 1
        _integer(model.verbose, "hyperparameters.verbose", 0)
    if model.devices is not None:
        _integer(model.devices, "hyperparameters.devices", 1)
    # mclust's models are stored in one of the four classic layouts (checked by name above).
    covariance_type, k = COVARIANCE_LAYOUTS[model.covariance_type], int(model.n_components)
    d = _integer(fitted["n_features_in_"], "fitted.n_features_in_", 1)
    _check_background(model, fitted, d)
    _check_mixture_parameters(
        fitted,
        "fitted.",
        ("weights_", "means_", "covariances_", "precisions_cholesky_"),
        covariance_type,
        k,
        d,
    )
    factor = np.asarray(fitted["precisions_cholesky_"])
    if covariance_type == "full":
        expected = factor @ np.swapaxes(factor, -1, -2)
    elif covariance_type == "tied":
        expected = factor @ factor.T
    else:
        expected = factor**2
    precisions = _array(fitted["precisions_"], "fitted.precisions_", expected.shape)
    scale = float(np.max(np.abs(expected), initial=0.0))
    if not np.allclose(precisions, expected, rtol=0.0, atol=_tolerance(expected) * scale):
        raise InvalidFile("fitted.precisions_ is not the product of fitted.precisions_cholesky_")
    _boolean(fitted["converged_"], "fitted.converged_")
    n_iter = _integer(fitted["n_iter_"], "fitted.n_iter_", 0)
    lower_bound = _real(fitted["lower_bound_"], "fitted.lower_bound_", finite=False)
    if lower_bound == math.inf:
        raise InvalidFile("fitted.lower_bound_ is +inf")
    bounds = _array(
        fitted["lower_bounds_"],
        "fitted.lower_bounds_",
        None,
        finite=False,
    )
    if bounds.ndim != 1 or bounds.shape[0] > n_iter or np.any(np.isnan(bounds)):
        raise InvalidFile(
            f"fitted.lower_bounds_ must be at most n_iter_ = {n_iter} numbers, not "
            f"{describe(bounds)}"
        )
    if not isinstance(fitted["method_"], str) or fitted["method_"] not in em.METHODS:
        raise InvalidFile(
            f"fitted.method_ is {describe(fitted['method_'])}, not one of {em.METHODS}"
        )
    if "feature_names_in_" in fitted:
        fitted["feature_names_in_"] = _check_feature_names(fitted["feature_names_in_"], d)
    if fitted.get("_scales") is not None:
        scales = _array(
            fitted["_scales"], "fitted._scales", np.asarray(fitted["covariances_"]).shape
        )
        if np.any(scales <= 0):
            raise InvalidFile("fitted._scales holds values <= 0")
    if fitted.get("_online_record") is not None:
        _check_online_record(fitted["_online_record"], covariance_type, k, d)
        bounds = fitted.get("_online_bounds")
        if not isinstance(bounds, list):
            raise InvalidFile("fitted._online_bounds must be a list next to _online_record")
    if fitted.get("_fit_weight") is not None:
        if not _real(fitted["_fit_weight"], "fitted._fit_weight") > 0:
            raise InvalidFile("fitted._fit_weight is not positive")
    for index, bound in enumerate(fitted.get("_online_bounds") or []):
        _real(bound, f"fitted._online_bounds[{index}]", finite=False)
    # The hyperparameters that only matter for the next fit, checked against K and D.
    initial = {
        "weights_init": (k,),
        "means_init": (k, d),
        "precisions_init": _covariance_shapes(covariance_type, k, d),
    }
    for name, shape in initial.items():
        if getattr(model, name) is not None:
            _array(getattr(model, name), f"hyperparameters.{name}", shape)
    import numpyro.distributions as dist

    priors = model.priors
    if isinstance(priors, Mapping):
        _run_check("hyperparameters.priors", _check_mixture_priors, priors, covariance_type)
        for site, prior in priors.items():
            if not isinstance(prior, dist.Distribution):
                raise InvalidFile(
                    f"hyperparameters.priors.{site} is {describe(prior)}, not a distribution"
                )
    return fitted


def _check_mixture_priors(priors: Mapping, covariance_type: str) -> None:
    from gaussmix.models.mixture import prior_site_names

    unknown = sorted(set(priors) - set(prior_site_names(covariance_type)))
    if unknown:
        raise ValueError(f"unknown prior site(s) {unknown} for covariance_type={covariance_type!r}")


def _check_kmeans(model: Any, fitted: dict) -> dict:
    k = _integer(model.n_clusters, "hyperparameters.n_clusters", 1)
    d = _integer(fitted["n_features_in_"], "fitted.n_features_in_", 1)
    _run_check("hyperparameters", model._check_parameters, k, d, np.float64)
    _check_random_state(model.random_state)
    _array(fitted["cluster_centers_"], "fitted.cluster_centers_", (k, d))
    labels = fitted["labels_"]
    labels = _array(labels, "fitted.labels_", None, "iu")
    if labels.ndim != 1 or np.any(labels < 0) or np.any(labels >= k):
        raise InvalidFile(f"fitted.labels_ must be (N,) labels in [0, {k}), not {describe(labels)}")
    inertia = _real(fitted["inertia_"], "fitted.inertia_")
    if inertia < 0:
        raise InvalidFile(f"fitted.inertia_ = {inertia} is negative")
    _integer(fitted["n_iter_"], "fitted.n_iter_", 0)
    if "feature_names_in_" in fitted:
        fitted["feature_names_in_"] = _check_feature_names(fitted["feature_names_in_"], d)
    return fitted


def _check_precisions_product(fitted: dict, covariance_type: str) -> None:
    """``precisions_`` is the product of ``precisions_cholesky_`` (checked already)."""
    factor = np.asarray(fitted["precisions_cholesky_"])
    if covariance_type in ("full", "tied"):
        expected = factor @ np.swapaxes(factor, -1, -2)
    else:
        expected = factor**2
    precisions = _array(fitted["precisions_"], "fitted.precisions_", expected.shape)
    scale = float(np.max(np.abs(expected), initial=0.0))
    if not np.allclose(precisions, expected, rtol=0.0, atol=_tolerance(expected) * scale):
        raise InvalidFile("fitted.precisions_ is not the product of fitted.precisions_cholesky_")


def _positive_array(value: Any, where: str, shape: tuple, above: float = 0.0) -> np.ndarray:
    array = _array(value, where, shape)
    if np.any(array <= above):
        raise InvalidFile(f"{where} holds values <= {above:g}")
    return array


def _positive_number(value: Any, where: str, above: float = 0.0) -> float:
    number = _real(value, where)
    if not number > above:
        raise InvalidFile(f"{where} = {number!r} must be > {above:g}")
    return number


def _check_weight_concentration(model: Any, fitted: dict, k: int) -> None:
    """Dirichlet (K,) or the process's pair of (K,) Beta parameters, positive, whose
    posterior mean weights are ``weights_``."""
    from gaussmix.inference.em import variational

    where = "fitted.weight_concentration_"
    value = fitted["weight_concentration_"]
    if model.weight_concentration_prior_type == "dirichlet_process":
        if not isinstance(value, tuple) or len(value) != 2:
            raise InvalidFile(
                f"{where} must be the pair (a, b) of the Dirichlet process, not {describe(value)}"
            )
        arrays = [_positive_array(part, f"{where}[{i}]", (k,)) for i, part in enumerate(value)]
        concentration = np.stack(arrays)
    else:
        concentration = _positive_array(value, where, (k,))
    weights = np.asarray(fitted["weights_"])
    expected = np.asarray(
        variational.weights_of(
            concentration.astype(np.float64), model.weight_concentration_prior_type
        )
    )
    if np.max(np.abs(weights - expected)) > _tolerance(weights):
        raise InvalidFile(f"fitted.weights_ are not the posterior mean weights of {where}")


def _check_history(fitted: dict) -> None:
    """``lower_bounds_``: one finite bound per iteration, the last ``lower_bound_``."""
    _boolean(fitted["converged_"], "fitted.converged_")
    n_iter = _integer(fitted["n_iter_"], "fitted.n_iter_", 0)
    bound = _real(fitted["lower_bound_"], "fitted.lower_bound_", finite=False)
    bounds = fitted["lower_bounds_"]
    if not isinstance(bounds, list) or len(bounds) != n_iter:
        raise InvalidFile(
            f"fitted.lower_bounds_ must be a list of n_iter_ = {n_iter} numbers, not "
            f"{describe(bounds)}"
        )
    bounds = [_real(b, f"fitted.lower_bounds_[{i}]") for i, b in enumerate(bounds)]
    if bound == math.inf or (bounds and bound != bounds[-1]):
        raise InvalidFile(
            f"fitted.lower_bound_ = {bound!r} is not the last of fitted.lower_bounds_"
        )
    fitted["lower_bounds_"] = bounds


def _check_variational_priors(fitted: dict, covariance_type: str, d: int) -> None:
    """The ``*_prior_`` hyperparameters the fit used (scikit-learn's constraints)."""
    for name in ("weight_concentration_prior_", "mean_precision_prior_"):
        fitted[name] = _positive_number(fitted[name], f"fitted.{name}")
    fitted["degrees_of_freedom_prior_"] = _positive_number(
        fitted["degrees_of_freedom_prior_"], "fitted.degrees_of_freedom_prior_", d - 1.0
    )
    _array(fitted["mean_prior_"], "fitted.mean_prior_", (d,))
    where = "fitted.covariance_prior_"
    if covariance_type == "spherical":
        fitted["covariance_prior_"] = _positive_number(fitted["covariance_prior_"], where)
    elif covariance_type == "diag":
        _positive_array(fitted["covariance_prior_"], where, (d,))
    else:
        _check_positive_definite(_array(fitted["covariance_prior_"], where, (d, d)), where)


def _check_bayesian_mixture(model: Any, fitted: dict) -> dict:
    """A fitted BayesianGaussianMixture: GaussianMixture's checks of the mixture (shapes,
    weights summing to 1, SPD covariances, the precision factors), positive
    concentrations and mean precisions, degrees of freedom > D - 1, the priors, and one
    lower bound per iteration."""
    from gaussmix.inference.em import variational

    covariance_type = _run_check("hyperparameters", model._check_parameters)
    _check_random_state(model.random_state)
    if model.devices is not None:
        _integer(model.devices, "hyperparameters.devices", 1)
    covariance_type = variational.variational_layout(covariance_type)
    k = int(model.n_components)
    d = _integer(fitted["n_features_in_"], "fitted.n_features_in_", 1)
    names = ("weights_", "means_", "covariances_", "precisions_cholesky_")
    _check_mixture_parameters(fitted, "fitted.", names, covariance_type, k, d)
    _check_precisions_product(fitted, covariance_type)
    _check_weight_concentration(model, fitted, k)
    _positive_array(fitted["mean_precision_"], "fitted.mean_precision_", (k,))
    where = "fitted.degrees_of_freedom_"
    if covariance_type == "tied":
        fitted["degrees_of_freedom_"] = _positive_number(
            fitted["degrees_of_freedom_"], where, d - 1.0
        )
    else:
        _positive_array(fitted["degrees_of_freedom_"], where, (k,), d - 1.0)
    _check_variational_priors(fitted, covariance_type, d)
    _check_history(fitted)
    if "feature_names_in_" in fitted:
        fitted["feature_names_in_"] = _check_feature_names(fitted["feature_names_in_"], d)
    return fitted


ESTIMATOR_CHECKS = {
    "BayesianGaussianMixture": _check_bayesian_mixture,
    "GaussianMixture": _check_gaussian_mixture,
    "KMeans": _check_kmeans,
}


def check_estimator_keys(cls: type, name: str, state: dict) -> None:
    """Hyperparameters among ``get_params``'s, fitted attributes among
    :data:`~gaussmix.io.FITTED_ATTRIBUTES` (checked before any array is read)."""
    state = _exact_keys(state, "state", ("hyperparameters", "fitted"))
    hyperparameters, fitted = state["hyperparameters"], state["fitted"]
    if not isinstance(hyperparameters, dict) or not isinstance(fitted, dict):
        raise InvalidFile("state.hyperparameters and state.fitted must be objects")
    names = cls._get_param_names()
    unknown = sorted(set(hyperparameters) - set(names))
    if unknown:
        raise InvalidFile(f"{name} has no hyperparameter(s) {unknown}; it takes {names}")
    allowed = FITTED_ATTRIBUTES[name]
    unknown = sorted(set(fitted) - set(allowed))
    if unknown:
        raise InvalidFile(
            f"state.fitted names attribute(s) {[key[:40] for key in unknown][:10]} that a "
            f"{name} does not have; gaussmix.load sets only {sorted(allowed)}"
        )
    missing = sorted(key for key, required in allowed.items() if required and key not in fitted)
    if missing:
        raise InvalidFile(f"state.fitted lacks the fitted attribute(s) {missing}")


def _spectrum_values(value: Any, where: str, n_spectra: int | None, kinds: str, finite: bool):
    """One number, or for a batch of B spectra a (B,) array, as fit_peaks stores them."""
    import jax

    if isinstance(value, np.ndarray | np.generic | jax.Array):
        shape = np.shape(value)
        if shape != () and (n_spectra is None or shape != (n_spectra,)):
            expected = "one number" if n_spectra is None else f"one number or shape ({n_spectra},)"
            raise InvalidFile(f"{where} has shape {shape}; it must be {expected}")
        _array(np.asarray(value), where, shape, kinds, finite)
    elif kinds == "b":
        _boolean(value, where)
    elif kinds == "iu":
        _integer(value, where)
    else:
        _real(value, where, finite=finite, nan=not finite)
    return value


def _check_peak_fit(fields: dict) -> dict:
    from gaussmix import peaks

    peak_models = importlib.import_module("gaussmix.models.peaks")

    lineshapes, baseline, params = fields["lineshapes"], fields["baseline"], fields["params"]
    if not isinstance(params, dict):
        raise InvalidFile(f"fields.params is {describe(params)}, not an object")
    if (
        not isinstance(lineshapes, tuple)
        or not lineshapes
        or len(lineshapes) > len(params)
        or not all(isinstance(shape, str) for shape in lineshapes)
    ):
        raise InvalidFile(f"fields.lineshapes is {describe(lineshapes)}, not a tuple of names")
    if baseline is not None and not isinstance(baseline, str):
        if _integer(baseline, "fields.baseline", 0) >= len(params):
            raise InvalidFile(f"fields.baseline = {baseline} has more coefficients than params")
    for name in ("ties", "fixed"):
        if not isinstance(fields[name], dict):
            raise InvalidFile(f"fields.{name} is {describe(fields[name])}, not an object")
    if not all(isinstance(target, str) for target in fields["ties"].values()):
        raise InvalidFile("fields.ties must map names to names")
    model = _run_check(
        "fields",
        peak_models.peak_model,
        lineshapes,
        baseline,
        fields["likelihood"],
        fields["ties"],
        fields["fixed"],
    )
    _run_check("fields.fixed", peak_models.check_fixed, model, fields["fixed"])
    if fields["priors"] is not None:
        if not isinstance(fields["priors"], dict):
            raise InvalidFile(f"fields.priors is {describe(fields['priors'])}, not an object")
        _run_check("fields.priors", peak_models.check_priors, fields["priors"], model)
    _run_check("fields.degrees_of_freedom", _check_degrees, fields["degrees_of_freedom"])
    if not isinstance(fields["backend"], str) or fields["backend"] not in peaks.BACKENDS:
        raise InvalidFile(
            f"fields.backend is {describe(fields['backend'])}, not one of {peaks.BACKENDS}"
        )
    x = _array(fields["x"], "fields.x", None)
    y = fields["y"]
    y = _array(y, "fields.y", None, finite=False)
    if x.ndim != 1 or y.ndim not in (1, 2) or y.shape[-1] != x.shape[0]:
        raise InvalidFile(
            f"fields.x {x.shape} and fields.y {y.shape} must be (M,) and (M,) or (B, M)"
        )
    n_spectra = None if y.ndim == 1 else y.shape[0]
    mask = fields["mask"]
    if mask is not None:
        mask = _array(mask, "fields.mask", y.shape, "b")
    if not np.all(np.isfinite(y[mask] if mask is not None else y)):
        raise InvalidFile("fields.y holds NaN or infinite values where it is not masked")
    names = fields["parameter_names"]
    if (
        not isinstance(names, tuple)
        or not all(isinstance(name, str) for name in names)
        or names != model.free_names
    ):
        raise InvalidFile(
            f"fields.parameter_names must be the model's free parameters {model.free_names}"
        )
    if _integer(fields["n_parameters"], "fields.n_parameters", 0) != len(names):
        raise InvalidFile(f"fields.n_parameters must be {len(names)}")
    known = {*model.parameter_names, *model.derived_names, peak_models.NOISE_SITE}
    missing = sorted(set(model.parameter_names) - set(params))
    if missing:
        raise InvalidFile(f"fields.params lacks the curve parameter(s) {missing}")
    for field in ("params", "stderr"):
        values = fields[field]
        if not isinstance(values, dict):
            raise InvalidFile(f"fields.{field} is {describe(values)}, not an object")
        unknown = sorted(set(values) - known)
        if unknown:
            raise InvalidFile(f"fields.{field} has unknown parameter(s) {unknown[:10]}")
        for name, value in values.items():
            finite = field == "params" and name in model.parameter_names
            _spectrum_values(value, f"fields.{field}.{name}", n_spectra, "f", finite)
    p = len(names)
    covariance = fields["covariance"]
    shape = (p, p) if n_spectra is None else (n_spectra, p, p)
    _array(covariance, "fields.covariance", shape, finite=False)  # NaN: a singular fit
    for name in ("rss", "redchi", "aic", "bic", "log_likelihood"):
        if fields[name] is not None:
            _spectrum_values(fields[name], f"fields.{name}", n_spectra, "f", False)
    _spectrum_values(fields["n_points"], "fields.n_points", n_spectra, "f", True)
    _spectrum_values(fields["converged"], "fields.converged", n_spectra, "b", True)
    _spectrum_values(fields["n_iter"], "fields.n_iter", n_spectra, "iu", True)
    return fields


def _check_degrees(value: Any) -> None:
    from gaussmix.models.peaks import check_degrees_of_freedom

    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"must be a number, not {describe(value)}")
    check_degrees_of_freedom(value)


def check_record_keys(cls: type, name: str, state: dict) -> None:
    """Exactly the dataclass's fields, less those :func:`~gaussmix.io.save` skips."""
    skipped = SKIPPED_FIELDS.get(name, ())
    names = tuple(f.name for f in dataclasses.fields(cls) if f.name not in skipped)
    state = _exact_keys(state, "state", ("fields",))
    _exact_keys(state["fields"], "state.fields", names)


RECORD_CHECKS = {"PeakFit": _check_peak_fit}
