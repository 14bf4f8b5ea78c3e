"""Validation of the data and starting values of an EM fit, with messages that say what
to do (NaN, overflow in the computing dtype, init shapes and ranges)."""

import jax
import numpy as np

from gaussmix.models.priors import covariance_layout

__all__ = [
    "as_float_array",
    "check_finite_input",
    "check_init",
    "check_range",
    "precision_advice",
]


def precision_advice(dtype) -> str:
    """What to do when a computation in ``dtype`` overflows (the end of an error message).

    JAX computes in float32 unless ``jax_enable_x64`` is on, whatever the input's dtype,
    so the advice for float32 depends on that option.

    Example:
        >>> precision_advice(np.float64)
        'rescale the data (e.g. standardize its columns).'
    """
    if np.dtype(dtype) != np.float32:
        return "rescale the data (e.g. standardize its columns)."
    if not jax.config.jax_enable_x64:
        return (
            "JAX computes in float32 unless 64-bit mode is on, even for float64 input: "
            "enable it with jax.config.update('jax_enable_x64', True) before fitting, or "
            "rescale the data (e.g. standardize its columns)."
        )
    return (
        "the data is float32: pass float64 data (x.astype(np.float64)), or rescale the "
        "data (e.g. standardize its columns)."
    )


def check_finite_input(array: np.ndarray, name: str, dtype=None) -> np.ndarray:
    """``array`` cast to ``dtype`` (default its own), or a ValueError naming the cause.

    NaN or infinity in the user's data is reported as such; finite values that do not fit
    ``dtype`` (float64 input computed in float32) are reported as an overflow in that
    dtype, with :func:`precision_advice`.

    Example:
        >>> check_finite_input(np.array([1.0, 2.0]), "x").tolist()
        [1.0, 2.0]
    """
    array = np.asarray(array)
    dtype = array.dtype if dtype is None else np.dtype(dtype)
    if array.dtype.kind == "f":
        if np.isnan(array).any():
            raise ValueError(f"{name} contains NaN; remove or impute those values first.")
        if np.isinf(array).any():
            raise ValueError(f"{name} contains infinity; remove those values first.")
    with np.errstate(over="ignore"):
        cast = array.astype(dtype, copy=False)
    if cast.dtype.kind == "f" and not np.isfinite(cast).all():
        largest = float(np.max(np.abs(array)))
        raise ValueError(
            f"overflow in {dtype}: {name} holds values up to {largest:.3g}, beyond the "
            f"range of {dtype} (largest {float(np.finfo(dtype).max):.3g}); "
            + precision_advice(dtype)
        )
    return cast


def as_float_array(value, name: str, dtype=None) -> np.ndarray:
    """A finite NumPy array of a float dtype JAX can hold (validated on the host, moved to
    the device once, by the compiled fit)."""
    array = np.asarray(value)
    if array.dtype.kind not in "biuf":
        raise ValueError(f"{name} must be numeric, got dtype {array.dtype}.")
    if dtype is None:
        dtype = array.dtype if array.dtype.kind == "f" else np.float64
    return check_finite_input(array, name, jax.dtypes.canonicalize_dtype(dtype))


def check_range(x: np.ndarray, weight: np.ndarray) -> None:
    """A ValueError when the E-step's sums of squares would overflow ``x``'s dtype.

    The E-step sums :math:`w_n (x_n - c)(x_n - c)^T` about the weighted mean :math:`c`;
    their total, computed here in float64, must stay below the dtype's largest value (a
    factor 4 of headroom for the products with responsibilities and precisions).
    """
    dtype = x.dtype
    limit = float(np.finfo(dtype).max) / 4
    data = x.astype(np.float64).reshape(-1, x.shape[-2], x.shape[-1])
    weights = np.broadcast_to(weight, data.shape[:2]).astype(np.float64)
    for rows, row_weight in zip(data, weights, strict=True):
        centre = row_weight @ rows / row_weight.sum()
        spread = np.max(np.abs(rows - centre))
        if spread == 0:
            continue
        # scaled so that squaring cannot overflow float64 either
        total = float(row_weight @ np.sum(((rows - centre) / spread) ** 2, axis=1))
        if not np.log(total) + 2 * np.log(spread) < np.log(limit):
            raise ValueError(
                f"overflow in {dtype}: the data spreads {spread:.3g} from its mean, so its "
                f"sums of squares exceed the range of {dtype}; " + precision_advice(dtype)
            )


def check_init(value, shape, name, covariance_type, dtype, batch):
    """``value`` (weights, means or precisions init) as a checked float array, or None.

    ``shape`` is the expected shape of one dataset; ``(batch, *shape)`` is accepted too.
    """
    if value is None:
        return None
    array = as_float_array(value, name, dtype)
    if array.shape != shape and array.shape != (batch, *shape):
        raise ValueError(
            f"The parameter '{name}' should have the shape of {shape}, but got {array.shape}"
        )
    if name == "weights":
        if np.any(array < 0) or np.any(array > 1):
            raise ValueError(
                "The parameter 'weights' should be in the range [0, 1], but got max value "
                f"{float(array.max()):.5f}, min value {float(array.min()):.5f}"
            )
        atol = 1e-6 if array.dtype == np.float32 else 1e-8
        if not np.allclose(array.sum(axis=-1), 1.0, atol=atol, rtol=0):
            raise ValueError(
                "The parameter 'weights' should be normalized, but got sum(weights) = "
                f"{float(array.sum(axis=-1).ravel()[0]):.5f}"
            )
    if name.endswith("precision"):
        values = array
        if covariance_layout(covariance_type) in ("full", "tied"):
            symmetric = np.allclose(values, np.swapaxes(values, -1, -2))
            if not symmetric or np.any(np.linalg.eigvalsh(values) <= 0):
                raise ValueError(
                    f"'{covariance_type} precision' should be symmetric, positive-definite"
                )
        elif np.any(values <= 0):
            raise ValueError(f"'{covariance_type} precision' should be positive")
    return array
