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
  "fitted": {name: value}}`` for every attribute that is not a hyperparameter: the
  fitted attributes of :data:`FITTED_ATTRIBUTES` (``weights_``, ``means_``, ... and
  private state such as ``_scales``). A ``random_state`` that is not an int or None is
  stored as None (it only seeds fits).
* ``PeakFit`` (a fit result): its fields (dataclass or NamedTuple fields), except
  ``posterior``: a posterior is saved on its own as NetCDF
  (``fit.posterior.to_netcdf(path)``), and ``load`` returns the fit with
  ``posterior=None``.

Loading builds only the classes listed in :data:`CLASSES` and the distributions of
:mod:`numpyro.distributions`; nothing else is imported and no code in the file runs.
Arrays keep their dtype; JAX arrays come back as JAX arrays, so a loaded model predicts
exactly what the saved one did in the same JAX configuration (loading a float64 model
with ``jax_enable_x64`` off gives float32 arrays).

What :func:`load` accepts
-------------------------
A file is data from outside, so :func:`load` checks all of it before it builds anything,
and answers anything else with a ``ValueError`` that names the file and the problem:

* the path: a regular file (``os.stat`` before opening; a folder, FIFO or device is
  refused, never opened), a zip archive (not a ``.npy``, a text file or an empty file)
  whose members are stored or deflated (as NumPy writes them), not encrypted, and
  decompress to at most :data:`MAX_COMPRESSION_RATIO` times their stored size;
* the members: ``header.npy`` plus exactly the arrays the header names. A member the
  header does not name is refused rather than ignored, since ``save`` writes none (the
  file was changed after saving); only the named members are read. Each is a ``.npy`` of
  booleans, integers, floats (at most 64 bits) or unicode text whose declared shape and
  dtype match its size;
* the header: JSON without NaN, infinities or duplicate keys, nested at most
  :data:`MAX_DEPTH` levels, with exactly the keys above and a known ``format_version``
  and class; markers (``__array__`` ...) of the forms above only;
* the state: for an estimator, hyperparameters among its ``get_params`` names (missing
  ones take their defaults) checked by the estimator's own parameter checks, and fitted
  attributes among :data:`FITTED_ATTRIBUTES` (no other name is ever set), each of the
  type, dtype and shape its role needs and consistent with the others: for
  ``GaussianMixture`` ``means_`` (K, D) with K = ``n_components`` and D =
  ``n_features_in_``, ``weights_`` (K,) non-negative and summing to 1, covariances
  finite and positive definite for the ``covariance_type``, precision factors with a
  positive diagonal, ``precisions_`` equal to the factors' product, and the online EM
  state of :meth:`~gaussmix.GaussianMixture.partial_fit` likewise; for ``KMeans``
  ``cluster_centers_`` (K, D) and labels in [0, K); for ``PeakFit`` every field, its
  model rebuilt by :func:`gaussmix.models.peaks.peak_model`, its priors and fixed values
  checked as :func:`gaussmix.fit_peaks` checks them, finite curve parameters of shape ()
  or (B,) and a (P, P) or (B, P, P) covariance. A model that would give NaN later is
  refused now.

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
import numbers
import os
import stat
import struct
import zipfile
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "CLASSES",
    "FITTED_ATTRIBUTES",
    "FORMAT_VERSION",
    "MAX_COMPRESSION_RATIO",
    "MAX_DEPTH",
    "load",
    "save",
]

#: Version of the file format written by :func:`save`.
FORMAT_VERSION = 1

#: Classes that can be saved: name -> (module, kind). ``estimator``: scikit-learn style
#: (``get_params`` + fitted attributes); ``record``: a dataclass or NamedTuple result.
CLASSES = {
    "GaussianMixture": ("gaussmix.mixture", "estimator"),
    "KMeans": ("gaussmix.kmeans", "estimator"),
    "PeakFit": ("gaussmix.peaks", "record"),
}

#: The attributes (besides ``get_params``) that :func:`save` stores and :func:`load`
#: sets, per estimator: name -> whether a file must hold it. These are what ``fit`` and
#: ``partial_fit`` set; :func:`save` refuses an estimator with any other attribute, so
#: every file it writes loads.
FITTED_ATTRIBUTES = {
    "GaussianMixture": {
        "weights_": True,
        "means_": True,
        "covariances_": True,
        "precisions_": True,
        "precisions_cholesky_": True,
        "converged_": True,
        "n_iter_": True,
        "lower_bound_": True,
        "lower_bounds_": True,
        "method_": True,
        "n_features_in_": True,
        "feature_names_in_": False,
        "_scales": False,
        "_online_record": False,
        "_online_bounds": False,
        "_fit_weight": False,
    },
    "KMeans": {
        "cluster_centers_": True,
        "labels_": True,
        "inertia_": True,
        "n_iter_": True,
        "n_features_in_": True,
        "feature_names_in_": False,
    },
}

#: Deepest nesting of the header's JSON that :func:`load` reads (files written by
#: :func:`save` nest 8 levels at most).
MAX_DEPTH = 32

#: Largest ratio of a member's size to its stored (compressed) size that :func:`load`
#: decompresses: deflate cannot compress more than 1032 to 1, so a larger claim is a
#: damaged or crafted file (a "zip bomb"), refused before any decompression.
MAX_COMPRESSION_RATIO = 1100

_SKIPPED_FIELDS = {"PeakFit": ("posterior",)}

_HEADER_KEYS = {"format", "format_version", "class", "gaussmix_version", "state"}
_ARRAY_KEYS = {"__array__", "jax", "scalar"}
_NON_FINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}
_DAMAGED = (
    "The file is damaged or was changed after gaussmix.save wrote it: save the fitted model again."
)


class _Invalid(ValueError):
    """What is wrong with a file (and what to do); :func:`load` adds the file's name."""

    def __init__(self, problem: str, hint: str = _DAMAGED) -> None:
        super().__init__(f"{problem}. {hint}" if hint else problem)


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


# ---------------------------------------------------------------------------------------
# Loading, layer 1: the file and its members (bytes)

#: What reading a damaged zip member or ``.npy`` header can raise.
_READ_ERRORS = (
    zipfile.BadZipFile,
    zlib.error,
    struct.error,
    EOFError,
    OSError,
    ValueError,
    TypeError,
    SyntaxError,
    RecursionError,
    OverflowError,
)
_ALLOWED_DTYPE_KINDS = "biufU"


def _open(path: Path):
    """The file opened for reading once it is known to be a regular file."""
    try:
        status = os.stat(path)
    except FileNotFoundError:
        raise _Invalid("no such file", "Check the path.") from None
    except OSError as error:
        raise _Invalid(f"cannot be read ({error.strerror})", "Check the path.") from None
    if stat.S_ISDIR(status.st_mode):
        raise _Invalid(
            "it is a folder, not a model file", "Give the .npz file that gaussmix.save wrote."
        )
    if not stat.S_ISREG(status.st_mode):
        raise _Invalid(
            "it is not a regular file (a FIFO, socket or device)",
            "Give the .npz file that gaussmix.save wrote.",
        )
    try:
        # O_NONBLOCK: were the path swapped for a FIFO after os.stat, opening it would
        # block; fstat below refuses it.
        descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as error:
        raise _Invalid(f"cannot be opened ({error.strerror})", "Check its permissions.") from None
    file = os.fdopen(descriptor, "rb")
    if not stat.S_ISREG(os.fstat(file.fileno()).st_mode):
        file.close()
        raise _Invalid("it is not a regular file", "Give the .npz file that gaussmix.save wrote.")
    return file


def _zip_archive(file, size: int) -> zipfile.ZipFile:
    start = file.read(6)
    file.seek(0)
    if size == 0:
        raise _Invalid("the file is empty", "Save the fitted model again.")
    if start.startswith(np.lib.format.MAGIC_PREFIX):
        raise _Invalid(
            "it is a single NumPy array (.npy), not a gaussmix model file",
            "numpy.load reads it; gaussmix.load reads the .npz files that gaussmix.save writes.",
        )
    if not start.startswith(b"PK"):
        raise _Invalid(
            "it is not a gaussmix model file (not a zip/.npz archive)",
            "gaussmix.load reads the .npz files that gaussmix.save writes.",
        )
    try:
        return zipfile.ZipFile(file)
    except _READ_ERRORS as error:
        raise _Invalid(
            f"it is truncated or damaged (not a readable .npz archive: {error})"
        ) from None


def _read_member(archive: zipfile.ZipFile, name: str, file_size: int) -> np.ndarray:
    """The array stored in member ``name`` (``key.npy``), after checking that its sizes,
    compression and declared shape and dtype agree, so that nothing is allocated or
    decompressed beyond what the file really holds."""
    info = archive.getinfo(name)
    if info.flag_bits & 0x1:
        raise _Invalid(f"member {name} is encrypted")
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise _Invalid(f"member {name} uses a compression NumPy does not write")
    if info.compress_size > file_size or info.file_size > MAX_COMPRESSION_RATIO * max(
        info.compress_size, 1
    ):
        raise _Invalid(
            f"member {name} claims {info.file_size} bytes from {info.compress_size} stored "
            f"bytes in a file of {file_size}"
        )
    try:
        with archive.open(info) as member:
            version = np.lib.format.read_magic(member)
            if version == (1, 0):
                shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(member)
            elif version == (2, 0):
                shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(member)
            else:
                raise ValueError(f".npy format version {version} is not one NumPy writes here")
            if dtype.hasobject or dtype.names is not None or dtype.subdtype is not None:
                raise ValueError(f"dtype {dtype} holds objects or fields")
            if (
                dtype.kind not in _ALLOWED_DTYPE_KINDS
                or (dtype.kind in "iuf" and dtype.itemsize > 8)
                or dtype.itemsize == 0
            ):
                raise ValueError(f"dtype {dtype} is not a boolean, integer, float or text")
            header_size = member.tell()
            expected = math.prod(shape) * dtype.itemsize
            if header_size + expected != info.file_size:
                raise ValueError(
                    f"it declares shape {shape} of {dtype} ({expected} bytes) but holds "
                    f"{info.file_size - header_size} bytes"
                )
            data = member.read()  # to the end: zipfile checks the CRC there
    except _READ_ERRORS as error:
        raise _Invalid(f"member {name} is damaged ({error})") from None
    if len(data) != expected:
        raise _Invalid(f"member {name} is truncated ({len(data)} of {expected} bytes)")
    array = np.frombuffer(bytearray(data), dtype=dtype)
    if fortran_order:
        array = array.reshape(shape[::-1]).transpose()
    else:
        array = array.reshape(shape)
    if not array.dtype.isnative:
        array = array.astype(array.dtype.newbyteorder("="))
    return array


# ---------------------------------------------------------------------------------------
# Loading, layer 2: the header (JSON) and the state tree


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict:
    keys = [key for key, _ in pairs]
    if len(set(keys)) != len(keys):
        duplicated = sorted({key for key in keys if keys.count(key) > 1})
        raise _Invalid(f"the header repeats the key(s) {duplicated}")
    return dict(pairs)


def _no_constant(name: str) -> None:
    raise _Invalid(f"the header holds {name}, which gaussmix.save never writes")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _Invalid(f"the header holds the number {text[:40]}, which is not finite")
    return value


def _depth(value: Any) -> int:
    """Nesting depth of a JSON value (iterative: a deep value cannot exhaust the stack)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        if depth > MAX_DEPTH:
            break
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return deepest


def _parse_header(array: np.ndarray) -> dict:
    if array.dtype.kind != "U" or array.shape != ():
        raise _Invalid(f"its header is a {array.dtype} array of shape {array.shape}, not text")
    try:
        header = json.loads(
            str(array[()]),
            object_pairs_hook=_unique_keys,
            parse_constant=_no_constant,
            parse_float=_finite_float,
        )
    except RecursionError:
        raise _Invalid(f"its header nests deeper than {MAX_DEPTH} levels") from None
    except _Invalid:
        raise
    except ValueError as error:
        raise _Invalid(f"its header is not valid JSON ({error})") from None
    if _depth(header) > MAX_DEPTH:
        raise _Invalid(f"its header nests deeper than {MAX_DEPTH} levels")
    if not isinstance(header, dict):
        raise _Invalid(f"its header is a JSON {type(header).__name__}, not an object")
    return header


def _check_header(header: dict) -> str:
    """The class name, once the header's own fields are known to be valid."""
    if header.get("format") != "gaussmix":
        raise _Invalid(
            "it is not a gaussmix model file (its header does not say format 'gaussmix')",
            "gaussmix.load reads the .npz files that gaussmix.save writes.",
        )
    unknown = sorted(set(header) - _HEADER_KEYS)
    missing = sorted(_HEADER_KEYS - set(header) - {"gaussmix_version"})
    if unknown or missing:
        raise _Invalid(f"its header has unknown keys {unknown} or lacks {missing}")
    version = header["format_version"]
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise _Invalid(f"its format_version {version!r} is not a version number")
    if version > FORMAT_VERSION:
        raise _Invalid(
            f"it has format version {version}; this gaussmix reads versions up to {FORMAT_VERSION}",
            "Upgrade gaussmix.",
        )
    if not isinstance(header.get("gaussmix_version", ""), str):
        raise _Invalid("its gaussmix_version is not a string")
    name = header["class"]
    if not isinstance(name, str) or name not in CLASSES:
        raise _Invalid(
            f"it holds an unknown class {str(name)[:80]!r}; gaussmix.load builds "
            f"{', '.join(sorted(CLASSES))}"
        )
    if not isinstance(header["state"], dict):
        raise _Invalid("its header's state is not a JSON object")
    return name


def _describe(value: Any) -> str:
    if hasattr(value, "dtype") and hasattr(value, "shape"):
        return f"a {value.dtype} array of shape {tuple(value.shape)}"
    if isinstance(value, str):
        return f"the string {value[:40]!r}"
    if isinstance(value, bool | numbers.Number) or value is None:
        return repr(value)
    return f"a {type(value).__name__}"


class _Decoder:
    """Decodes a state tree whose markers are checked, reading each array it names."""

    def __init__(self, archive: zipfile.ZipFile, file_size: int) -> None:
        self.archive = archive
        self.file_size = file_size

    def references(self, value: Any, where: str, found: dict[str, str]) -> dict[str, str]:
        """Member name -> where the tree refers to it; checks the markers' forms."""
        stack = [(value, where)]
        while stack:
            item, at = stack.pop()
            if isinstance(item, list):
                stack.extend((v, f"{at}[{i}]") for i, v in enumerate(item))
            elif isinstance(item, dict):
                marker = [key for key in item if key.startswith("__")]
                if not marker:
                    stack.extend((v, f"{at}.{key}") for key, v in item.items())
                elif marker == ["__array__"]:
                    self.check_array_marker(item, at)
                    member = f"{item['__array__']}.npy"
                    if member in found:
                        raise _Invalid(f"{at} and {found[member]} name the same array")
                    found[member] = at
                elif marker == ["__tuple__"] and set(item) == {"__tuple__"}:
                    if not isinstance(item["__tuple__"], list):
                        raise _Invalid(f"{at}: __tuple__ must hold a list")
                    stack.append((item["__tuple__"], at))
                elif marker == ["__float__"] and set(item) == {"__float__"}:
                    if item["__float__"] not in _NON_FINITE:
                        raise _Invalid(f"{at}: __float__ must be 'nan', 'inf' or '-inf'")
                elif marker == ["__distribution__"] and set(item) == {
                    "__distribution__",
                    "arguments",
                }:
                    if not isinstance(item["arguments"], dict):
                        raise _Invalid(f"{at}: a distribution's arguments must be an object")
                    stack.extend((v, f"{at}.{key}") for key, v in item["arguments"].items())
                else:
                    raise _Invalid(f"{at} is an object with unknown markers {marker}")
        return found

    @staticmethod
    def check_array_marker(item: dict, at: str) -> None:
        key = item["__array__"]
        flags_ok = all(isinstance(item.get(flag, False), bool) for flag in ("jax", "scalar"))
        if set(item) - _ARRAY_KEYS or not flags_ok:
            raise _Invalid(f"{at}: an __array__ marker holds only jax and scalar flags")
        if not isinstance(key, str) or key == "header" or not key.isidentifier():
            raise _Invalid(f"{at} names the array {str(key)[:40]!r}, not an array member")

    def decode(self, value: Any, where: str) -> Any:
        if isinstance(value, list):
            return [self.decode(v, f"{where}[{i}]") for i, v in enumerate(value)]
        if not isinstance(value, dict):
            return value
        if "__array__" in value:
            return self.array(value, where)
        if "__tuple__" in value:
            return tuple(self.decode(v, f"{where}[{i}]") for i, v in enumerate(value["__tuple__"]))
        if "__float__" in value:
            return _NON_FINITE[value["__float__"]]
        if "__distribution__" in value:
            return self.distribution(value, where)
        return {key: self.decode(v, f"{where}.{key}") for key, v in value.items()}

    def array(self, value: dict, where: str) -> Any:
        array = _read_member(self.archive, f"{value['__array__']}.npy", self.file_size)
        if value.get("scalar"):
            if array.shape != ():
                raise _Invalid(f"{where} is marked scalar but has shape {array.shape}")
            return array[()]
        if value.get("jax"):
            import jax.numpy as jnp

            if array.dtype.kind not in "biuf":
                raise _Invalid(f"{where} is marked as a JAX array but holds {array.dtype}")
            return jnp.asarray(array)
        return array

    def distribution(self, value: dict, where: str) -> Any:
        import jax
        import numpyro.distributions as dist
        from numpyro.distributions import constraints

        name = value["__distribution__"]
        cls = getattr(dist, name, None) if name in dist.__all__ else None
        if not (isinstance(cls, type) and issubclass(cls, dist.Distribution)):
            raise _Invalid(f"{where} names {str(name)[:40]!r}, not a numpyro distribution")
        arg_constraints = cls.arg_constraints if isinstance(cls.arg_constraints, dict) else {}
        if not arg_constraints:
            raise _Invalid(f"{where}: {name} has no parameters to rebuild it from")
        arguments = self.decode(value["arguments"], f"{where}.arguments")
        unknown = sorted(set(arguments) - set(arg_constraints))
        if unknown:
            raise _Invalid(f"{where}: {name} takes no argument(s) {unknown}")
        for argument, given in arguments.items():
            if isinstance(given, bool) or not isinstance(
                given, numbers.Real | np.ndarray | np.generic | jax.Array
            ):
                raise _Invalid(f"{where}.{argument} is {_describe(given)}, not a number or array")
        try:
            distribution = cls(**arguments)
            for argument, constraint in arg_constraints.items():
                if argument in arguments and not constraints.is_dependent(constraint):
                    if not np.all(np.asarray(constraint(getattr(distribution, argument)))):
                        raise ValueError(f"{argument} lies outside {constraint}")
        except (TypeError, ValueError, AttributeError, IndexError) as error:
            raise _Invalid(
                f"{where}: {name}({', '.join(arguments)}) is not valid: {error}"
            ) from None
        return distribution


# ---------------------------------------------------------------------------------------
# Loading, layer 3: each field's type, shape and value


def _integer(value: Any, where: str, low: int | None = None) -> int:
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Integral):
        raise _Invalid(f"{where} must be an integer, not {_describe(value)}")
    if low is not None and value < low:
        raise _Invalid(f"{where} = {value} must be >= {low}")
    return int(value)


def _boolean(value: Any, where: str) -> bool:
    if not isinstance(value, bool | np.bool_):
        raise _Invalid(f"{where} must be true or false, not {_describe(value)}")
    return bool(value)


def _real(value: Any, where: str, *, finite: bool = True, nan: bool = False) -> float:
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Real):
        raise _Invalid(f"{where} must be a number, not {_describe(value)}")
    number = float(value)
    if math.isnan(number) and not nan:
        raise _Invalid(f"{where} is NaN")
    if finite and math.isinf(number):
        raise _Invalid(f"{where} = {number} is not finite")
    return number


def _array(
    value: Any, where: str, shape: tuple | None, kinds: str = "f", finite: bool = True
) -> np.ndarray:
    """``value`` (a NumPy or JAX array) as a NumPy array of ``shape`` (None: any) and
    dtype kind."""
    import jax

    if not isinstance(value, np.ndarray | jax.Array):
        raise _Invalid(f"{where} must be an array of shape {shape}, not {_describe(value)}")
    array = np.asarray(value)
    names = {"f": "floats", "b": "booleans", "iu": "integers", "U": "strings"}
    if array.dtype.kind not in kinds:
        raise _Invalid(f"{where} holds {array.dtype}, not {names.get(kinds, kinds)}")
    if shape is not None and array.shape != tuple(shape):
        raise _Invalid(f"{where} has shape {array.shape}; it must have shape {tuple(shape)}")
    if finite and array.dtype.kind == "f" and not np.all(np.isfinite(array)):
        raise _Invalid(f"{where} holds NaN or infinite values")
    return array


def _tolerance(array: np.ndarray) -> float:
    # sqrt(eps) of the dtype: rounding in EM leaves errors of a few eps times K or D
    # (1e-7 to 1e-5 in float32 up to K = 100), far below it; an edited value is far above.
    return float(np.sqrt(np.finfo(array.dtype).eps))


def _covariance_shapes(covariance_type: str, k: int, d: int) -> tuple:
    return {"full": (k, d, d), "tied": (d, d), "diag": (k, d), "spherical": (k,)}[covariance_type]


def _check_weights(weights: np.ndarray, where: str) -> None:
    if np.any(weights < 0):
        raise _Invalid(f"{where} has negative weights {weights.tolist()[:10]}")
    total = float(np.sum(weights, dtype=np.float64))
    if abs(total - 1.0) > _tolerance(weights):
        raise _Invalid(f"{where} sums to {total!r}, not 1")


def _check_positive_definite(matrices: np.ndarray, where: str) -> None:
    """Symmetric (to rounding) and positive definite (Cholesky in float64)."""
    scale = float(np.max(np.abs(matrices), initial=0.0))
    asymmetry = float(np.max(np.abs(matrices - np.swapaxes(matrices, -1, -2)), initial=0.0))
    if asymmetry > _tolerance(matrices) * scale:
        raise _Invalid(f"{where} is not symmetric")
    try:
        np.linalg.cholesky(matrices.astype(np.float64))
    except np.linalg.LinAlgError:
        raise _Invalid(f"{where} is not positive definite") from None


def _check_covariances(value: Any, where: str, covariance_type: str, k: int, d: int):
    array = _array(value, where, _covariance_shapes(covariance_type, k, d))
    if covariance_type in ("full", "tied"):
        _check_positive_definite(array, where)
    elif np.any(array <= 0):
        raise _Invalid(f"{where} holds variances <= 0")
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
            raise _Invalid(f"{where} is not upper triangular with a positive diagonal")
    elif np.any(array <= 0):
        raise _Invalid(f"{where} holds values <= 0")
    return array


def _check_mixture_parameters(
    values: Mapping, where: str, names: tuple, covariance_type: str, k: int, d: int
) -> dict:
    """Weights, means, covariances and precision factors of a K-component mixture."""
    weights_name, means_name, covariances_name, factor_name = names
    weights = _array(values[weights_name], f"{where}{weights_name}", (k,))
    _check_weights(weights, f"{where}{weights_name}")
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
        found = sorted(value) if isinstance(value, dict) else _describe(value)
        raise _Invalid(f"{where} must be an object with keys {sorted(fields)}, not {found}")
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
        raise _Invalid(f"{where}.statistics.counts holds negative counts")
    _array(statistics["log_likelihood"], f"{where}.statistics.log_likelihood", ())
    for at, holder in ((f"{where}.statistics", statistics), (where, record)):
        total = _array(holder["total_weight"], f"{at}.total_weight", ())
        if not total > 0:
            raise _Invalid(f"{at}.total_weight = {float(total)} is not positive")
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
        raise _Invalid(
            f"hyperparameters.random_state must be None or an int in [0, 2**32), not "
            f"{_describe(value)}"
        )


def _run_check(where: str, check, *arguments) -> Any:
    """Call another module's check, its complaint about the file's values a ValueError."""
    try:
        return check(*arguments)
    except (TypeError, ValueError, KeyError, IndexError, AttributeError) as error:
        raise _Invalid(f"{where}: {error}") from None


def _check_gaussian_mixture(model: Any, fitted: dict) -> dict:
    from gaussmix.inference import em

    _run_check("hyperparameters", model._check_parameters)
    _check_random_state(model.random_state)
    if not isinstance(model.verbose, bool):  # verbose=True is scikit-learn's 1
        _integer(model.verbose, "hyperparameters.verbose", 0)
    if model.devices is not None:
        _integer(model.devices, "hyperparameters.devices", 1)
    covariance_type, k = model.covariance_type, int(model.n_components)
    d = _integer(fitted["n_features_in_"], "fitted.n_features_in_", 1)
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
        raise _Invalid("fitted.precisions_ is not the product of fitted.precisions_cholesky_")
    _boolean(fitted["converged_"], "fitted.converged_")
    n_iter = _integer(fitted["n_iter_"], "fitted.n_iter_", 0)
    lower_bound = _real(fitted["lower_bound_"], "fitted.lower_bound_", finite=False)
    if lower_bound == math.inf:
        raise _Invalid("fitted.lower_bound_ is +inf")
    bounds = _array(
        fitted["lower_bounds_"],
        "fitted.lower_bounds_",
        None,
        finite=False,
    )
    if bounds.ndim != 1 or bounds.shape[0] > n_iter or np.any(np.isnan(bounds)):
        raise _Invalid(
            f"fitted.lower_bounds_ must be at most n_iter_ = {n_iter} numbers, not "
            f"{_describe(bounds)}"
        )
    if not isinstance(fitted["method_"], str) or fitted["method_"] not in em.METHODS:
        raise _Invalid(f"fitted.method_ is {_describe(fitted['method_'])}, not one of {em.METHODS}")
    if "feature_names_in_" in fitted:
        fitted["feature_names_in_"] = _check_feature_names(fitted["feature_names_in_"], d)
    if fitted.get("_scales") is not None:
        scales = _array(
            fitted["_scales"], "fitted._scales", np.asarray(fitted["covariances_"]).shape
        )
        if np.any(scales <= 0):
            raise _Invalid("fitted._scales holds values <= 0")
    if fitted.get("_online_record") is not None:
        _check_online_record(fitted["_online_record"], covariance_type, k, d)
        bounds = fitted.get("_online_bounds")
        if not isinstance(bounds, list):
            raise _Invalid("fitted._online_bounds must be a list next to _online_record")
    if fitted.get("_fit_weight") is not None:
        if not _real(fitted["_fit_weight"], "fitted._fit_weight") > 0:
            raise _Invalid("fitted._fit_weight is not positive")
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
                raise _Invalid(
                    f"hyperparameters.priors.{site} is {_describe(prior)}, not a distribution"
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
        raise _Invalid(f"fitted.labels_ must be (N,) labels in [0, {k}), not {_describe(labels)}")
    inertia = _real(fitted["inertia_"], "fitted.inertia_")
    if inertia < 0:
        raise _Invalid(f"fitted.inertia_ = {inertia} is negative")
    _integer(fitted["n_iter_"], "fitted.n_iter_", 0)
    if "feature_names_in_" in fitted:
        fitted["feature_names_in_"] = _check_feature_names(fitted["feature_names_in_"], d)
    return fitted


_ESTIMATOR_CHECKS = {"GaussianMixture": _check_gaussian_mixture, "KMeans": _check_kmeans}


def _check_estimator_keys(cls: type, name: str, state: dict) -> None:
    """Hyperparameters among ``get_params``'s, fitted attributes among
    :data:`FITTED_ATTRIBUTES` (checked before any array is read)."""
    state = _exact_keys(state, "state", ("hyperparameters", "fitted"))
    hyperparameters, fitted = state["hyperparameters"], state["fitted"]
    if not isinstance(hyperparameters, dict) or not isinstance(fitted, dict):
        raise _Invalid("state.hyperparameters and state.fitted must be objects")
    names = cls._get_param_names()
    unknown = sorted(set(hyperparameters) - set(names))
    if unknown:
        raise _Invalid(f"{name} has no hyperparameter(s) {unknown}; it takes {names}")
    allowed = FITTED_ATTRIBUTES[name]
    unknown = sorted(set(fitted) - set(allowed))
    if unknown:
        raise _Invalid(
            f"state.fitted names attribute(s) {[key[:40] for key in unknown][:10]} that a "
            f"{name} does not have; gaussmix.load sets only {sorted(allowed)}"
        )
    missing = sorted(key for key, required in allowed.items() if required and key not in fitted)
    if missing:
        raise _Invalid(f"state.fitted lacks the fitted attribute(s) {missing}")


def _load_estimator(cls: type, name: str, state: dict, decoder: _Decoder) -> Any:
    hyperparameters, fitted = state["hyperparameters"], state["fitted"]
    model = cls(**decoder.decode(hyperparameters, "hyperparameters"))
    values = _ESTIMATOR_CHECKS[name](model, decoder.decode(fitted, "fitted"))
    for key, value in values.items():
        setattr(model, key, value)  # key is one of FITTED_ATTRIBUTES[name]
    return model


def _spectrum_values(value: Any, where: str, n_spectra: int | None, kinds: str, finite: bool):
    """One number, or for a batch of B spectra a (B,) array, as fit_peaks stores them."""
    import jax

    if isinstance(value, np.ndarray | np.generic | jax.Array):
        shape = np.shape(value)
        if shape != () and (n_spectra is None or shape != (n_spectra,)):
            expected = "one number" if n_spectra is None else f"one number or shape ({n_spectra},)"
            raise _Invalid(f"{where} has shape {shape}; it must be {expected}")
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
        raise _Invalid(f"fields.params is {_describe(params)}, not an object")
    if (
        not isinstance(lineshapes, tuple)
        or not lineshapes
        or len(lineshapes) > len(params)
        or not all(isinstance(shape, str) for shape in lineshapes)
    ):
        raise _Invalid(f"fields.lineshapes is {_describe(lineshapes)}, not a tuple of names")
    if baseline is not None and not isinstance(baseline, str):
        if _integer(baseline, "fields.baseline", 0) >= len(params):
            raise _Invalid(f"fields.baseline = {baseline} has more coefficients than params")
    for name in ("ties", "fixed"):
        if not isinstance(fields[name], dict):
            raise _Invalid(f"fields.{name} is {_describe(fields[name])}, not an object")
    if not all(isinstance(target, str) for target in fields["ties"].values()):
        raise _Invalid("fields.ties must map names to names")
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
            raise _Invalid(f"fields.priors is {_describe(fields['priors'])}, not an object")
        _run_check("fields.priors", peak_models.check_priors, fields["priors"], model)
    _run_check("fields.degrees_of_freedom", _check_degrees, fields["degrees_of_freedom"])
    if not isinstance(fields["backend"], str) or fields["backend"] not in peaks.BACKENDS:
        raise _Invalid(
            f"fields.backend is {_describe(fields['backend'])}, not one of {peaks.BACKENDS}"
        )
    x = _array(fields["x"], "fields.x", None)
    y = fields["y"]
    y = _array(y, "fields.y", None, finite=False)
    if x.ndim != 1 or y.ndim not in (1, 2) or y.shape[-1] != x.shape[0]:
        raise _Invalid(f"fields.x {x.shape} and fields.y {y.shape} must be (M,) and (M,) or (B, M)")
    n_spectra = None if y.ndim == 1 else y.shape[0]
    mask = fields["mask"]
    if mask is not None:
        mask = _array(mask, "fields.mask", y.shape, "b")
    if not np.all(np.isfinite(y[mask] if mask is not None else y)):
        raise _Invalid("fields.y holds NaN or infinite values where it is not masked")
    names = fields["parameter_names"]
    if (
        not isinstance(names, tuple)
        or not all(isinstance(name, str) for name in names)
        or names != model.free_names
    ):
        raise _Invalid(
            f"fields.parameter_names must be the model's free parameters {model.free_names}"
        )
    if _integer(fields["n_parameters"], "fields.n_parameters", 0) != len(names):
        raise _Invalid(f"fields.n_parameters must be {len(names)}")
    known = {*model.parameter_names, *model.derived_names, peak_models.NOISE_SITE}
    missing = sorted(set(model.parameter_names) - set(params))
    if missing:
        raise _Invalid(f"fields.params lacks the curve parameter(s) {missing}")
    for field in ("params", "stderr"):
        values = fields[field]
        if not isinstance(values, dict):
            raise _Invalid(f"fields.{field} is {_describe(values)}, not an object")
        unknown = sorted(set(values) - known)
        if unknown:
            raise _Invalid(f"fields.{field} has unknown parameter(s) {unknown[:10]}")
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
        raise ValueError(f"must be a number, not {_describe(value)}")
    check_degrees_of_freedom(value)


def _check_record_keys(cls: type, name: str, state: dict) -> None:
    """Exactly the dataclass's fields, less those :func:`save` skips."""
    skipped = _SKIPPED_FIELDS.get(name, ())
    names = tuple(f.name for f in dataclasses.fields(cls) if f.name not in skipped)
    state = _exact_keys(state, "state", ("fields",))
    _exact_keys(state["fields"], "state.fields", names)


_RECORD_CHECKS = {"PeakFit": _check_peak_fit}


def _load_record(cls: type, name: str, state: dict, decoder: _Decoder) -> Any:
    fields = _RECORD_CHECKS[name](decoder.decode(state["fields"], "fields"))
    return cls(**fields, **dict.fromkeys(_SKIPPED_FIELDS.get(name, ())))


def load(path: str | os.PathLike) -> Any:
    """Load what :func:`save` wrote: the model or fit result, ready to predict.

    Reads data, never code (``allow_pickle`` stays off; only the classes of
    :data:`CLASSES` and numpyro distributions are built), and checks every field before
    building anything; see the module's documentation for what is accepted. Only the
    arrays the header names are read; a member it does not name is refused.

    Args:
        path: a file written by :func:`save`.

    Returns:
        The ``GaussianMixture``, ``KMeans`` or ``PeakFit`` (with ``posterior=None``).

    Raises:
        ValueError: the path is not a regular file; the file is not a gaussmix model
            file (a ``.npy``, text, an empty file, another ``.npz``), is truncated or
            damaged, is of a newer format version, or holds a field of the wrong type,
            shape or value (the message names the file, the field and what to do).

    Example:
        >>> import tempfile, pathlib
        >>> folder = pathlib.Path(tempfile.mkdtemp())
        >>> (folder / "notes.npz").write_text("not a model")
        11
        >>> load(folder / "notes.npz")
        Traceback (most recent call last):
        ...
        ValueError: cannot load .../notes.npz: it is not a gaussmix model file (not a zip/.npz archive). gaussmix.load reads the .npz files that gaussmix.save writes.
    """
    path = Path(path)
    try:
        return _load(path)
    except _Invalid as problem:
        raise ValueError(f"cannot load {path}: {problem}") from None


def _load(path: Path) -> Any:
    with _open(path) as file:
        size = os.fstat(file.fileno()).st_size
        with _zip_archive(file, size) as archive:
            members = set(archive.namelist())
            if "header.npy" not in members:
                shown = sorted(name.removesuffix(".npy") for name in members)[:10]
                raise _Invalid(
                    f"it is not a gaussmix model file: the .npz archive has no header (it "
                    f"holds {shown})",
                    "numpy.load reads it; gaussmix.load reads files that gaussmix.save writes.",
                )
            header = _parse_header(_read_member(archive, "header.npy", size))
            name = _check_header(header)
            module, kind = CLASSES[name]
            cls = getattr(importlib.import_module(module), name)
            if kind == "estimator":
                _check_estimator_keys(cls, name, header["state"])
            else:
                _check_record_keys(cls, name, header["state"])
            decoder = _Decoder(archive, size)
            referenced = decoder.references(header["state"], "state", {})
            missing = sorted(set(referenced) - members)
            if missing:
                where = referenced[missing[0]]
                raise _Invalid(f"{where} names the array {missing[0]}, which the file lacks")
            extra = sorted(members - set(referenced) - {"header.npy"})
            if extra:
                raise _Invalid(
                    f"it holds member(s) {extra[:10]} that its header does not name (gaussmix."
                    "save writes none)"
                )
            if kind == "estimator":
                return _load_estimator(cls, name, header["state"], decoder)
            return _load_record(cls, name, header["state"], decoder)
