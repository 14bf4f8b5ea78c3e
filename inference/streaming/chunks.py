"""Data read in row chunks: arrays, memory-mapped files, iterables, chunk factories.

A chunk is an (n, D) array, an ``(x, w)`` tuple with its (n,) sample weights (or None),
or an ``(x, w, s)`` tuple that adds the measurement covariances of its rows, (n, D, D) or
(n, D) (extreme deconvolution, :mod:`gaussmix.inference.em.deconvolution`). Array data
takes its weights and covariances as arrays of N rows alongside. Pages of a
memory-mapped file are released after each chunk, so the resident set stays at one
chunk however large the file.
"""

import mmap
import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import jax
import numpy as np

__all__ = ["ChunkSource", "chunk_dtype", "pad_rows", "prepare_chunk"]

#: Bytes of data per chunk read from an array or a file.
_CHUNK_BYTES = 16 * 2**20


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
        measurement_covariances: (N, D, D) or (N, D) measurement covariances of the rows
            of array data (an array, ``np.memmap`` or ``.npy`` path), read chunk by chunk
            with them; chunks of an iterable carry their own as ``(x, w, s)`` instead.

    Iterating yields ``(x, w)`` pairs; :meth:`with_errors` yields ``(x, w, s)`` triples
    (``s`` None for a chunk without measurement covariances).

    Attributes:
        reiterable: whether the data can be read more than once (a generator or an
            iterator can be read once only: online EM, not exact EM).

    Example:
        >>> import numpy as np
        >>> source = ChunkSource(np.zeros((10, 2)), chunk_rows=4)
        >>> [x.shape[0] for x, _ in source]
        [4, 4, 2]
    """

    def __init__(
        self,
        data,
        *,
        sample_weight=None,
        chunk_rows: int | None = None,
        measurement_covariances=None,
    ):
        if chunk_rows is not None and (
            not isinstance(chunk_rows, int | np.integer)
            or isinstance(chunk_rows, bool)
            or chunk_rows < 1
        ):
            raise ValueError(f"chunk_rows must be an int >= 1, got {chunk_rows!r}.")
        self._array = None
        self._weight = None
        self._errors = None
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
            if measurement_covariances is not None:
                self._errors = _row_array(
                    measurement_covariances, "measurement_covariances", array.shape
                )
            self.reiterable = True
        elif sample_weight is not None:
            raise ValueError(
                "sample_weight applies to array data; give chunks of an iterable as (x, w) "
                "tuples instead."
            )
        elif measurement_covariances is not None:
            raise ValueError(
                "measurement_covariances applies to array data; give chunks of an iterable "
                "as (x, w, s) tuples instead (w may be None), s the (n, D, D) or (n, D) "
                "measurement covariances of the chunk's n rows."
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

    @property
    def has_errors(self) -> bool | None:
        """Whether array data came with measurement covariances; None for iterables
        (each chunk says, as ``(x, w, s)``)."""
        return None if self._array is None else self._errors is not None

    def __iter__(self) -> Iterator[tuple[Any, Any]]:
        for x, w, _ in self.with_errors():
            yield x, w

    def with_errors(self) -> Iterator[tuple[Any, Any, Any]]:
        """The chunks as ``(x, w, s)``: ``s`` the chunk's measurement covariances, None
        where it has none."""
        if self._array is None:
            for chunk in self._factory():
                if isinstance(chunk, tuple):
                    if len(chunk) not in (2, 3):
                        raise ValueError(
                            "A chunk given as a tuple must be (x, w) or (x, w, s); got a "
                            f"tuple of {len(chunk)}."
                        )
                    yield chunk if len(chunk) == 3 else (*chunk, None)
                else:
                    yield chunk, None, None
            return
        array, weight, errors = self._array, self._weight, self._errors
        n_rows, n_features = array.shape
        itemsize = max(4, np.dtype(getattr(array, "dtype", np.float64)).itemsize)
        rows = self._chunk_rows or max(1024, _CHUNK_BYTES // (max(1, n_features) * itemsize))
        buffers = [_mapped_buffer(array), _mapped_buffer(weight), _mapped_buffer(errors)]
        for start in range(0, n_rows, rows):
            x = np.array(array[start : start + rows])
            w = None if weight is None else np.array(weight[start : start + rows])
            s = None if errors is None else np.array(errors[start : start + rows])
            for buffer in buffers:
                _release(buffer)
            yield x, w, s


def _row_array(value, name: str, shape: tuple):
    """``value`` (an array, ``np.memmap`` or ``.npy`` path) opened lazily: the per-row
    measurement covariances of array data of ``shape`` (N, D), (N, D, D) or (N, D)."""
    array = _open_array(value, name)
    if not hasattr(array, "shape"):
        array = np.asarray(array)
    n_rows, n_features = shape
    expected = [(n_rows, n_features, n_features), (n_rows, n_features)]
    if tuple(array.shape) not in expected:
        raise ValueError(
            f"{name} has shape {tuple(array.shape)}; expected {expected[0]} (one covariance "
            f"per row of X) or {expected[1]} (the error variances of each row), matching X "
            f"of shape {tuple(shape)}."
        )
    return array


def chunk_dtype(x) -> np.dtype:
    """The float dtype JAX computes a chunk like ``x`` in (a ValueError if not numeric)."""
    kind = np.asarray(x[:0]).dtype
    if kind.kind not in "biuf":
        raise ValueError(f"data must be numeric, got dtype {kind}.")
    return np.dtype(jax.dtypes.canonicalize_dtype(kind if kind.kind == "f" else np.float64))


def prepare_chunk(x, w, dtype, n_features, where: str, validate: bool, allow_nan: bool = False):
    """A chunk as (x (n, D) dtype, w (n,) dtype or None), checked when ``validate``;
    ``where`` names it in error messages ("chunk 3"). With ``allow_nan`` NaN entries
    (missing values) pass, but infinity and rows without an observed entry do not."""
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
    if validate and allow_nan and not np.all(np.isfinite(x)):
        if np.isinf(x).any():
            raise ValueError(f"{where} contains infinity; remove those values first.")
        empty = np.flatnonzero(np.isnan(x).all(axis=1))
        if empty.size:
            raise ValueError(
                f"{empty.size} row(s) of {where} have no observed entry (all NaN; first: "
                f"row {int(empty[0])} of the chunk); drop them."
            )
    elif validate and not np.all(np.isfinite(x)):
        raise ValueError(
            f"{where} contains NaN or infinity; remove or impute those values first (NaN "
            "marks a missing entry under nan_policy='marginalize' or 'omit')."
        )
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


def pad_rows(x, w, rows: int, centre: np.ndarray):
    """Pad a chunk to ``rows`` rows with the centre and zero weight (they add nothing)."""
    n = x.shape[0]
    weight = np.ones(n, x.dtype) if w is None else w
    if n == rows:
        return x, weight
    padded = np.empty((rows, x.shape[1]), x.dtype)
    padded[:n] = x
    padded[n:] = centre
    return padded, np.concatenate([weight, np.zeros(rows - n, x.dtype)])
