"""Loading, layer 1: the file and its members (bytes).

A path is opened only once it is known to be a regular file; a member is decompressed
only once its sizes, compression and declared ``.npy`` shape and dtype agree.
"""

import math
import os
import stat
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np

from gaussmix.io.schema import MAX_COMPRESSION_RATIO, InvalidFile

__all__ = ["open_regular_file", "read_member", "zip_archive"]

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


def open_regular_file(path: Path):
    """The file opened for reading once it is known to be a regular file."""
    try:
        status = os.stat(path)
    except FileNotFoundError:
        raise InvalidFile("no such file", "Check the path.") from None
    except OSError as error:
        raise InvalidFile(f"cannot be read ({error.strerror})", "Check the path.") from None
    if stat.S_ISDIR(status.st_mode):
        raise InvalidFile(
            "it is a folder, not a model file", "Give the .npz file that gaussmix.save wrote."
        )
    if not stat.S_ISREG(status.st_mode):
        raise InvalidFile(
            "it is not a regular file (a FIFO, socket or device)",
            "Give the .npz file that gaussmix.save wrote.",
        )
    try:
        # O_NONBLOCK: were the path swapped for a FIFO after os.stat, opening it would
        # block; fstat below refuses it.
        descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as error:
        raise InvalidFile(
            f"cannot be opened ({error.strerror})", "Check its permissions."
        ) from None
    file = os.fdopen(descriptor, "rb")
    if not stat.S_ISREG(os.fstat(file.fileno()).st_mode):
        file.close()
        raise InvalidFile(
            "it is not a regular file", "Give the .npz file that gaussmix.save wrote."
        )
    return file


def zip_archive(file, size: int) -> zipfile.ZipFile:
    """The zip archive of an opened file of ``size`` bytes, after checking that it is one."""
    start = file.read(6)
    file.seek(0)
    if size == 0:
        raise InvalidFile("the file is empty", "Save the fitted model again.")
    if start.startswith(np.lib.format.MAGIC_PREFIX):
        raise InvalidFile(
            "it is a single NumPy array (.npy), not a gaussmix model file",
            "numpy.load reads it; gaussmix.load reads the .npz files that gaussmix.save writes.",
        )
    if not start.startswith(b"PK"):
        raise InvalidFile(
            "it is not a gaussmix model file (not a zip/.npz archive)",
            "gaussmix.load reads the .npz files that gaussmix.save writes.",
        )
    try:
        return zipfile.ZipFile(file)
    except _READ_ERRORS as error:
        raise InvalidFile(
            f"it is truncated or damaged (not a readable .npz archive: {error})"
        ) from None


def read_member(archive: zipfile.ZipFile, name: str, file_size: int) -> np.ndarray:
    """The array stored in member ``name`` (``key.npy``), after checking that its sizes,
    compression and declared shape and dtype agree, so that nothing is allocated or
    decompressed beyond what the file really holds."""
    info = archive.getinfo(name)
    if info.flag_bits & 0x1:
        raise InvalidFile(f"member {name} is encrypted")
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise InvalidFile(f"member {name} uses a compression NumPy does not write")
    if info.compress_size > file_size or info.file_size > MAX_COMPRESSION_RATIO * max(
        info.compress_size, 1
    ):
        raise InvalidFile(
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
        raise InvalidFile(f"member {name} is damaged ({error})") from None
    if len(data) != expected:
        raise InvalidFile(f"member {name} is truncated ({len(data)} of {expected} bytes)")
    array = np.frombuffer(bytearray(data), dtype=dtype)
    if fortran_order:
        array = array.reshape(shape[::-1]).transpose()
    else:
        array = array.reshape(shape)
    if not array.dtype.isnative:
        array = array.astype(array.dtype.newbyteorder("="))
    return array
