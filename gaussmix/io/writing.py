"""Writing: :func:`save` turns a fitted model into the format of :mod:`gaussmix.io`."""

import dataclasses
import importlib
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from gaussmix.io.schema import CLASSES, FITTED_ATTRIBUTES, FORMAT_VERSION, SKIPPED_FIELDS

__all__ = ["save"]


class _Encoder:
    """Turns a value into JSON plus a dict of arrays."""

    def __init__(self) -> None:
        self.arrays: dict[str, np.ndarray] = {}

    def array(self, value: Any, jax_array: bool) -> dict:
        key = f"a{len(self.arrays)}"
        array = np.asarray(value)
        if array.dtype.kind == "O":
            if all(isinstance(item, str) for item in array.ravel()):
                array = array.astype(str)
            else:
                raise ValueError(
                    f"cannot save an array of Python objects (shape {array.shape}); "
                    "only numeric, boolean and string arrays can be saved"
                )
        self.arrays[key] = array
        return {"__array__": key, "jax": jax_array}

    def encode(self, value: Any, where: str) -> Any:
        import jax

        if isinstance(value, np.generic):
            return {**self.array(value, jax_array=False), "scalar": True}
        if value is None or isinstance(value, bool | str | int):
            return value
        if isinstance(value, float):
            return value if math.isfinite(value) else {"__float__": repr(value)}
        if isinstance(value, jax.Array):
            return self.array(value, jax_array=True)
        if isinstance(value, np.ndarray | np.generic):
            return self.array(value, jax_array=False)
        if isinstance(value, tuple) and not hasattr(value, "_fields"):
            return {"__tuple__": [self.encode(v, f"{where}[{i}]") for i, v in enumerate(value)]}
        if isinstance(value, list):
            return [self.encode(v, f"{where}[{i}]") for i, v in enumerate(value)]
        if isinstance(value, dict):
            if not all(isinstance(key, str) for key in value):
                raise ValueError(f"cannot save {where}: its keys must be strings")
            if any(key.startswith("__") for key in value):
                raise ValueError(f"cannot save {where}: keys may not start with '__'")
            return {key: self.encode(v, f"{where}[{key!r}]") for key, v in value.items()}
        distribution = self.distribution(value, where)
        if distribution is not None:
            return distribution
        raise ValueError(
            f"cannot save {where} of type {type(value).__name__}; gaussmix.save stores "
            "numbers, strings, arrays, tuples, lists, dicts and numpyro distributions"
        )

    def distribution(self, value: Any, where: str) -> dict | None:
        import numpyro.distributions as dist

        if not isinstance(value, dist.Distribution):
            return None
        name = type(value).__name__
        if getattr(dist, name, None) is not type(value):
            raise ValueError(
                f"cannot save {where}: {name} is not a distribution of numpyro.distributions"
            )
        arguments = {}
        for argument in value.arg_constraints:
            if argument in value.__dict__:
                arguments[argument] = self.encode(value.__dict__[argument], f"{where}.{argument}")
        problem = (
            f"cannot save {where}: a {name} is not rebuilt from its parameters; give a "
            "distribution with array parameters, such as Normal(loc, scale)"
        )
        try:
            rebuilt = getattr(dist, name)(**_decode_saved(arguments, self.arrays))
        except (TypeError, ValueError):
            raise ValueError(problem) from None
        if rebuilt.batch_shape != value.batch_shape or rebuilt.event_shape != value.event_shape:
            raise ValueError(problem)
        return {"__distribution__": name, "arguments": arguments}


def _decode_saved(value: Any, arrays: dict[str, np.ndarray]) -> Any:
    """Decode what :class:`_Encoder` just wrote (trusted: used by :func:`save` only)."""
    if isinstance(value, dict) and "__array__" in value:
        return arrays[value["__array__"]]
    if isinstance(value, dict) and "__float__" in value:
        return float(value["__float__"])
    if isinstance(value, dict) and "__tuple__" in value:
        return tuple(_decode_saved(v, arrays) for v in value["__tuple__"])
    if isinstance(value, dict):
        return {key: _decode_saved(v, arrays) for key, v in value.items()}
    if isinstance(value, list):
        return [_decode_saved(v, arrays) for v in value]
    return value


def _class_name(obj: Any) -> str:
    name = type(obj).__name__
    if name not in CLASSES:
        raise ValueError(f"cannot save a {name}; gaussmix.save stores {', '.join(sorted(CLASSES))}")
    module, _ = CLASSES[name]
    if type(obj) is not getattr(importlib.import_module(module), name, None):
        raise ValueError(f"cannot save {type(obj)!r}: it is not {module}.{name}")
    return name


def _record_fields(obj: Any) -> dict[str, Any]:
    if dataclasses.is_dataclass(obj):
        return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
    if hasattr(obj, "_fields"):
        return dict(zip(obj._fields, obj, strict=True))
    raise ValueError(f"cannot save a {type(obj).__name__}: it is not a dataclass or NamedTuple")


def _state(obj: Any, name: str, encoder: _Encoder) -> dict[str, Any]:
    _, kind = CLASSES[name]
    if kind == "estimator":
        hyperparameters = dict(obj.get_params(deep=False))
        if not any(key.endswith("_") and not key.startswith("_") for key in vars(obj)):
            raise ValueError(f"this {name} is not fitted yet; call fit before saving it")
        fitted = {key: value for key, value in vars(obj).items() if key not in hyperparameters}
        unknown = sorted(set(fitted) - set(FITTED_ATTRIBUTES[name]))
        if unknown:
            raise ValueError(
                f"cannot save this {name}: its attribute(s) {unknown} are not among those "
                f"gaussmix.load sets ({sorted(FITTED_ATTRIBUTES[name])}); delete them, or "
                "report this to gaussmix if fit set them"
            )
        random_state = hyperparameters.get("random_state")
        if not (random_state is None or isinstance(random_state, int | np.integer)):
            hyperparameters["random_state"] = None
        return {
            "hyperparameters": encoder.encode(hyperparameters, "hyperparameters"),
            "fitted": encoder.encode(fitted, "fitted attributes"),
        }
    fields = _record_fields(obj)
    for skipped in SKIPPED_FIELDS.get(name, ()):
        fields.pop(skipped, None)
    return {"fields": encoder.encode(fields, name)}


def save(obj: Any, path: str | os.PathLike) -> Path:
    """Save a fitted ``GaussianMixture``, ``BayesianGaussianMixture``, ``KMeans`` or a
    ``PeakFit`` to ``path`` (.npz).

    Args:
        obj: the model or fit result.
        path: the file; ``.npz`` is appended when missing. Written through a temporary
            file beside it and renamed, so a failed save leaves no half-written file.

    Returns:
        The path written.

    Raises:
        ValueError: the object is not of a savable class, is not fitted, or holds a value
            the format cannot store (the message names it).
    """
    name = _class_name(obj)
    encoder = _Encoder()
    state = _state(obj, name, encoder)
    from gaussmix import __version__

    header = {
        "format": "gaussmix",
        "format_version": FORMAT_VERSION,
        "class": name,
        "gaussmix_version": __version__,
        "state": state,
    }
    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_name(path.name + ".npz")
    temporary = path.with_name(f".{path.name}.partial")
    try:
        with open(temporary, "wb") as file:
            np.savez_compressed(
                file, header=np.array(json.dumps(header, allow_nan=False)), **encoder.arrays
            )
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path
