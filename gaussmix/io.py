"""Save and load fitted models: :func:`save` and :func:`load`, without pickle.

File format (version 1)
-----------------------
A model is one NumPy ``.npz`` archive (``numpy.savez_compressed``; ``numpy.load`` reads it
with ``allow_pickle=False``). It holds:

``header``
    a 0-d unicode array whose text is a JSON object::

        {"format": "gaussmix", "format_version": 1,
         "class": "GaussianMixture",          # one of CLASSES
         "gaussmix_version": "0.1.0",
         "state": {...}}                       # the tree described below

``a0``, ``a1``, ...
    the arrays, each with its own dtype and shape, named by the ``state`` tree.

The ``state`` tree is JSON in which an array, a tuple, a non-finite float or a NumPyro
distribution is a one-key object::

    {"__array__": "a0", "jax": true}          # a NumPy (or JAX, when "jax") array;
                                               # "scalar": true marks a NumPy scalar
    {"__tuple__": [...]}                       # a tuple
    {"__float__": "nan"}                       # nan, inf or -inf
    {"__distribution__": "Normal", "arguments": {"loc": ..., "scale": ...}}

(a distribution of :mod:`numpyro.distributions` rebuilt from its ``arg_constraints``
arguments; other objects cannot be saved). Plain JSON values (``null``, booleans,
numbers, strings, lists, objects with string keys) stand for themselves.

What ``state`` holds per class:

* ``GaussianMixture``, ``KMeans`` (estimators): ``{"hyperparameters": get_params(),
  "fitted": {name: value}}`` for every attribute that is not a hyperparameter (the
  fitted ``weights_``, ``means_``, ... and private state such as ``_scales``). A
  ``random_state`` that is not an int or None is stored as None (it only seeds fits).
* ``PeakFit`` (a fit result): its fields (dataclass or NamedTuple fields), except
  ``posterior``: a posterior is saved on its own as NetCDF
  (``fit.posterior.to_netcdf(path)``), and ``load`` returns the fit with
  ``posterior=None``.

Loading builds only the classes listed in :data:`CLASSES` and the distributions of
:mod:`numpyro.distributions`; nothing else is imported and no code in the file runs.
Arrays keep their dtype; JAX arrays come back as JAX arrays, so a loaded model predicts
exactly what the saved one did in the same JAX configuration (loading a float64 model
with ``jax_enable_x64`` off gives float32 arrays).

Example:
    >>> import numpy as np, tempfile, pathlib
    >>> from gaussmix import GaussianMixture, save, load
    >>> x = np.random.default_rng(0).normal(size=(100, 2))
    >>> model = GaussianMixture(n_components=2, random_state=0).fit(x)
    >>> path = save(model, pathlib.Path(tempfile.mkdtemp()) / "model.npz")
    >>> bool(np.all(load(path).predict(x) == model.predict(x)))
    True
"""

import dataclasses
import importlib
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["CLASSES", "FORMAT_VERSION", "load", "save"]

#: Version of the file format written by :func:`save`.
FORMAT_VERSION = 1

#: Classes that can be saved: name -> (module, kind). ``estimator``: scikit-learn style
#: (``get_params`` + fitted attributes); ``record``: a dataclass or NamedTuple result.
CLASSES = {
    "GaussianMixture": ("gaussmix.mixture", "estimator"),
    "KMeans": ("gaussmix.kmeans", "estimator"),
    "PeakFit": ("gaussmix.peaks", "record"),
}

_SKIPPED_FIELDS = {"PeakFit": ("posterior",)}


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
            rebuilt = getattr(dist, name)(**_decode_plain(arguments, self.arrays))
        except (TypeError, ValueError):
            raise ValueError(problem) from None
        if rebuilt.batch_shape != value.batch_shape or rebuilt.event_shape != value.event_shape:
            raise ValueError(problem)
        return {"__distribution__": name, "arguments": arguments}


def _decode_plain(value: Any, arrays: Any) -> Any:
    """Decode a state tree against ``arrays`` (a dict or an open npz)."""
    import jax.numpy as jnp

    if isinstance(value, list):
        return [_decode_plain(v, arrays) for v in value]
    if not isinstance(value, dict):
        return value
    if "__array__" in value:
        array = np.asarray(arrays[value["__array__"]])
        if value.get("scalar"):
            return array[()]
        return jnp.asarray(array) if value.get("jax") else array
    if "__tuple__" in value:
        return tuple(_decode_plain(v, arrays) for v in value["__tuple__"])
    if "__float__" in value:
        return float(value["__float__"])
    if "__distribution__" in value:
        import numpyro.distributions as dist

        name = value["__distribution__"]
        cls = getattr(dist, name, None)
        if not (isinstance(cls, type) and issubclass(cls, dist.Distribution)):
            raise ValueError(f"unknown numpyro distribution {name!r} in the file")
        return cls(**_decode_plain(value["arguments"], arrays))
    return {key: _decode_plain(v, arrays) for key, v in value.items()}


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
        random_state = hyperparameters.get("random_state")
        if not (random_state is None or isinstance(random_state, int | np.integer)):
            hyperparameters["random_state"] = None
        return {
            "hyperparameters": encoder.encode(hyperparameters, "hyperparameters"),
            "fitted": encoder.encode(fitted, "fitted attributes"),
        }
    fields = _record_fields(obj)
    for skipped in _SKIPPED_FIELDS.get(name, ()):
        fields.pop(skipped, None)
    return {"fields": encoder.encode(fields, name)}


def save(obj: Any, path: str | os.PathLike) -> Path:
    """Save a fitted ``GaussianMixture``, ``KMeans`` or a ``PeakFit`` to ``path`` (.npz).

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


def load(path: str | os.PathLike) -> Any:
    """Load what :func:`save` wrote: the model or fit result, ready to predict.

    Args:
        path: a file written by :func:`save`.

    Raises:
        ValueError: the file is not a gaussmix model file, or of a newer format version.
    """
    path = Path(path)
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as error:
        raise ValueError(f"cannot read {path} as a gaussmix model file: {error}") from None
    with archive:
        if not hasattr(archive, "files") or "header" not in archive.files:
            raise ValueError(f"{path} is not a gaussmix model file (no header)")
        header = json.loads(str(archive["header"]))
        if header.get("format") != "gaussmix":
            raise ValueError(f"{path} is not a gaussmix model file")
        version = header.get("format_version")
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise ValueError(
                f"{path} has format version {version}; this gaussmix reads versions up to "
                f"{FORMAT_VERSION}: upgrade gaussmix"
            )
        name = header.get("class")
        if name not in CLASSES:
            raise ValueError(f"{path} holds an unknown class {name!r}")
        arrays = {key: archive[key] for key in archive.files if key != "header"}
    module, kind = CLASSES[name]
    cls = getattr(importlib.import_module(module), name)
    state = header["state"]
    if kind == "estimator":
        obj = cls(**_decode_plain(state["hyperparameters"], arrays))
        for key, value in _decode_plain(state["fitted"], arrays).items():
            setattr(obj, key, value)
        return obj
    fields = _decode_plain(state["fields"], arrays)
    for skipped in _SKIPPED_FIELDS.get(name, ()):
        if dataclasses.is_dataclass(cls) and skipped in {f.name for f in dataclasses.fields(cls)}:
            fields[skipped] = None
        elif skipped in getattr(cls, "_fields", ()):
            fields[skipped] = None
    return cls(**fields)
