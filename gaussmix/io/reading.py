"""Reading: :func:`load` checks a file through the three layers, then builds the object."""

import importlib
import os
from pathlib import Path
from typing import Any

from gaussmix.io.archive import open_regular_file, read_member, zip_archive
from gaussmix.io.decoding import Decoder, check_header, parse_header
from gaussmix.io.schema import CLASSES, SKIPPED_FIELDS, InvalidFile
from gaussmix.io.validate import (
    ESTIMATOR_CHECKS,
    RECORD_CHECKS,
    check_estimator_keys,
    check_record_keys,
)

__all__ = ["load"]


def load(path: str | os.PathLike) -> Any:
    """Load what :func:`save` wrote: the model or fit result, ready to predict.

    Reads data, never code (``allow_pickle`` stays off; only the classes of
    :data:`CLASSES` and numpyro distributions are built), and checks every field before
    building anything; see :mod:`gaussmix.io` for what is accepted. Only the
    arrays the header names are read; a member it does not name is refused.

    Args:
        path: a file written by :func:`save`.

    Returns:
        The ``GaussianMixture``, ``BayesianGaussianMixture``, ``KMeans`` or ``PeakFit``
        (with ``posterior=None``).

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
    except InvalidFile as problem:
        raise ValueError(f"cannot load {path}: {problem}") from None


def _load(path: Path) -> Any:
    with open_regular_file(path) as file:
        size = os.fstat(file.fileno()).st_size
        with zip_archive(file, size) as archive:
            members = set(archive.namelist())
            if "header.npy" not in members:
                shown = sorted(name.removesuffix(".npy") for name in members)[:10]
                raise InvalidFile(
                    f"it is not a gaussmix model file: the .npz archive has no header (it "
                    f"holds {shown})",
                    "numpy.load reads it; gaussmix.load reads files that gaussmix.save writes.",
                )
            header = parse_header(read_member(archive, "header.npy", size))
            name = check_header(header)
            module, kind = CLASSES[name]
            cls = getattr(importlib.import_module(module), name)
            if kind == "estimator":
                check_estimator_keys(cls, name, header["state"])
            else:
                check_record_keys(cls, name, header["state"])
            decoder = Decoder(archive, size)
            referenced = decoder.references(header["state"], "state", {})
            missing = sorted(set(referenced) - members)
            if missing:
                where = referenced[missing[0]]
                raise InvalidFile(f"{where} names the array {missing[0]}, which the file lacks")
            extra = sorted(members - set(referenced) - {"header.npy"})
            if extra:
                raise InvalidFile(
                    f"it holds member(s) {extra[:10]} that its header does not name (gaussmix."
                    "save writes none)"
                )
            if kind == "estimator":
                return _load_estimator(cls, name, header["state"], decoder)
            return _load_record(cls, name, header["state"], decoder)


def _load_estimator(cls: type, name: str, state: dict, decoder: Decoder) -> Any:
    hyperparameters, fitted = state["hyperparameters"], state["fitted"]
    model = cls(**decoder.decode(hyperparameters, "hyperparameters"))
    values = ESTIMATOR_CHECKS[name](model, decoder.decode(fitted, "fitted"))
    for key, value in values.items():
        setattr(model, key, value)  # key is one of FITTED_ATTRIBUTES[name]
    return model


def _load_record(cls: type, name: str, state: dict, decoder: Decoder) -> Any:
    fields = RECORD_CHECKS[name](decoder.decode(state["fields"], "fields"))
    return cls(**fields, **dict.fromkeys(SKIPPED_FIELDS.get(name, ())))
