"""The keys of gaussmix's compiled programs (:mod:`gaussmix.inference.compilation`): the
same call in a fresh process gives the same key; a changed source, version, setting or
machine gives another one.

A key is a SHA-256 over the environment (:func:`environment`: JAX, jaxlib, NumPyro and
NumPy versions, the backend, device kind and count, the host's processor, ``XLA_FLAGS``
and JAX's configuration) and the parts the caller names: a hash of gaussmix's own source
(:func:`source_hash`) and the program's :func:`fingerprint`, or its lowered text.

Example:
    >>> key("parts", "a program") == key("parts", "a program") != key("parts", "another")
    True
"""

import enum
import functools
import hashlib
import importlib.metadata
import importlib.util
import os
import platform
import types
from pathlib import Path
from typing import Any

import jax
import numpy as np

__all__ = [
    "TRUSTED_MODULES",
    "environment",
    "fingerprint",
    "host_processor",
    "key",
    "prepare_to_load",
    "runtime_ready",
    "source_hash",
    "tree_structure",
]

#: Modules whose functions and classes are named rather than hashed: their source is in
#: the key (gaussmix) or their version is (jax, jaxlib, numpyro, numpy).
TRUSTED_MODULES = ("gaussmix", "jax", "jaxlib", "numpyro", "numpy")
# JAX settings that do not change a program (logging, caches, tracebacks).
_IGNORED_SETTINGS = (
    "log_compiles",
    "explain_cache_misses",
    "compilation_cache",
    "persistent_cache",
    "traceback",
    "logging",
)


def _trusted(module: str | None) -> bool:
    return bool(module) and module.split(".")[0] in TRUSTED_MODULES


def fingerprint(value: Any) -> str | None:
    """A text that names ``value`` the same way in every process, or None.

    Plain data (None, booleans, numbers, strings, bytes, tuples, lists, dicts with string
    keys, NumPy dtypes, enums, NamedTuples and frozen dataclasses of those) is written
    out; functions, classes and ``functools.partial`` objects of gaussmix, JAX, NumPyro or
    NumPy are named by module, qualified name and first line, with their closures,
    defaults and arguments. Anything else — a user's function, an object whose only name
    is its address — has no fingerprint: the program is then keyed by its lowered text.

    Example:
        >>> fingerprint(("normal", 3, {"ties": None}))
        "tuple(str:'normal',int:3,dict('ties':NoneType:None),)"
        >>> scale = eval("lambda x: 2 * x", {"__name__": "my_analysis"})  # a user's code
        >>> fingerprint(scale) is None
        True
    """
    try:
        return _fingerprint(value, 0)
    except _NoFingerprint:
        return None


class _NoFingerprint(Exception):
    pass


def _fingerprint(value: Any, depth: int) -> str:
    if depth > 50:
        raise _NoFingerprint
    depth += 1
    if value is None or isinstance(value, bool | int | float | complex | str | bytes):
        return f"{type(value).__name__}:{value!r}"
    if isinstance(value, np.dtype):
        return f"dtype:{value.str}"
    if isinstance(value, type):
        if not _trusted(value.__module__):
            raise _NoFingerprint
        return f"class:{value.__module__}.{value.__qualname__}"
    if isinstance(value, tuple) and hasattr(value, "_fields"):  # a NamedTuple
        cls = type(value)
        fields = ",".join(_fingerprint(item, depth) for item in value)
        return f"{_fingerprint(cls, depth)}({fields})"
    if isinstance(value, tuple | list):
        return f"{type(value).__name__}({','.join(_fingerprint(v, depth) for v in value)},)"
    if isinstance(value, dict):
        if not all(isinstance(key, str) for key in value):
            raise _NoFingerprint
        items = ",".join(f"{key!r}:{_fingerprint(value[key], depth)}" for key in sorted(value))
        return f"dict({items})"
    if isinstance(value, frozenset):
        return f"frozenset({','.join(sorted(_fingerprint(v, depth) for v in value))})"
    if isinstance(value, functools.partial):
        keywords = _fingerprint(dict(value.keywords), depth)
        return f"partial({_fingerprint(value.func, depth)},{_fingerprint(value.args, depth)},{keywords})"
    if isinstance(value, types.FunctionType):
        if not _trusted(value.__module__):
            raise _NoFingerprint
        code = value.__code__
        cells = tuple(cell.cell_contents for cell in value.__closure__ or ())
        parts = (cells, value.__defaults__, value.__kwdefaults__)
        return (
            f"function:{value.__module__}.{value.__qualname__}@{code.co_firstlineno}"
            f"{_fingerprint(parts, depth)}"
        )
    if isinstance(value, types.MethodType):
        return f"method:{_fingerprint(value.__func__, depth)}/{_fingerprint(value.__self__, depth)}"
    if hasattr(value, "__dataclass_fields__") and getattr(
        value.__dataclass_params__, "frozen", False
    ):
        fields = {name: getattr(value, name) for name in value.__dataclass_fields__}
        return f"{_fingerprint(type(value), depth)}{_fingerprint(fields, depth)}"
    if isinstance(value, enum.Enum):
        return f"{_fingerprint(type(value), depth)}.{value.name}"
    if callable(value):
        module = getattr(value, "__module__", None)
        qualname = getattr(value, "__qualname__", None)
        # jax.numpy's functions, builtins and other named callables of trusted modules
        if qualname and _trusted(module) and not getattr(value, "__self__", None):
            return f"callable:{module}.{qualname}"
    raise _NoFingerprint


@functools.cache
def source_hash() -> str:
    """SHA-256 of gaussmix's own source (every .py and .cc file of its packages)."""
    digest = hashlib.sha256()
    roots = {}
    for name in ("gaussmix", "gaussmix.inference", "gaussmix.models"):
        spec = importlib.util.find_spec(name)  # the package's folder, nothing imported
        roots[name] = Path(next(iter(spec.submodule_search_locations)))
    for name, root in sorted(roots.items()):
        for path in sorted(root.rglob("*")):
            if path.suffix in (".py", ".cc") and "__pycache__" not in path.parts:
                relative = path.relative_to(root).as_posix()
                if name == "gaussmix" and relative.split("/")[0] in ("inference", "models"):
                    continue
                digest.update(f"{name}/{relative}\0".encode())
                digest.update(path.read_bytes())
                digest.update(b"\0")
    return digest.hexdigest()


def _settings_text() -> str:
    """JAX's configuration, but for the settings that change no program."""
    items = []
    for name, value in sorted(jax.config.values.items()):
        if any(part in name for part in _IGNORED_SETTINGS):
            continue
        if value is None or isinstance(value, bool | int | float | str):
            items.append(f"{name}={value!r}")
        else:  # enums and other settings objects: their class and value
            items.append(f"{name}={type(value).__name__}:{getattr(value, 'value', value)!s}")
    return ";".join(items)


@functools.cache
def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "?"


@functools.cache
def host_processor() -> str:
    """The host's processor: its model and instruction-set flags (Linux), else what
    Python's ``platform`` module knows. XLA compiles CPU programs for the processor it
    runs on, so a cache folder shared by several machines (a home folder on a cluster)
    keeps one program per kind of processor instead of handing one machine's code to
    another.

    Example:
        >>> host_processor() == host_processor() != ""
        True
    """
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    first = text.split("\n\n", 1)[0].splitlines()
    fields = dict(line.split(":", 1) for line in first if ":" in line)
    fields = {name.strip(): value.strip() for name, value in fields.items()}
    described = [fields.get(name, "") for name in ("model name", "flags", "Features")]
    if not any(described):
        described = [platform.processor()]
    return " ".join([platform.machine(), *described]).strip()


def environment() -> str:
    device = jax.devices()[0]
    return "\n".join(
        [
            f"jax {jax.__version__} jaxlib {_version('jaxlib')} numpyro {_version('numpyro')}",
            f"numpy {np.__version__}",
            f"backend {device.platform} {device.client.platform_version} {device.device_kind}",
            f"host {host_processor()}",
            f"devices {jax.device_count()} local {jax.local_device_count()}",
            f"XLA_FLAGS {os.environ.get('XLA_FLAGS', '')}",
            _settings_text(),
        ]
    )


@functools.cache
def runtime_ready() -> bool:
    """Whether programs may be loaded without being lowered first in this process: a
    program that calls LAPACK (Cholesky, triangular solves) needs jaxlib's CPU kernels
    pointed at SciPy's LAPACK first, which lowering such a program does and
    :func:`prepare_to_load` does before loading one (JAX does the same before it runs a
    deserialized program, ``jax.export``); without that set-up in this jaxlib, programs
    are keyed by their lowered text (lowering does it)."""
    try:
        from jax._src.lax.linalg import initialize_lapack  # noqa: F401
    except ImportError:  # another jaxlib: lower before loading
        return False
    return True


#: The prefix of jaxlib's CPU kernels that call SciPy's LAPACK (``lapack_dpotrf_ffi``, ...;
#: ``jaxlib.cpu._lapack.registrations()``): a serialized program names each kernel it calls.
LAPACK_KERNEL_PREFIX = b"lapack_"


def prepare_to_load(serialized: bytes) -> bool:
    """Make this process ready to run the serialized program: when it calls LAPACK, point
    jaxlib's CPU kernels at SciPy's LAPACK (importing ``scipy.linalg``: 0.1 s, only for
    the programs that need it; gaussmix's peak fits do not). False when that set-up
    failed (no SciPy): the program must be compiled again, whose lowering raises JAX's
    own error."""
    if LAPACK_KERNEL_PREFIX not in serialized:
        return True
    try:
        from jax._src.lax.linalg import initialize_lapack

        initialize_lapack()
    except Exception:  # any failure: compile again rather than crash
        return False
    return True


def key(*parts: str) -> str:
    digest = hashlib.sha256()
    for part in (environment(), *parts):
        digest.update(part.encode())
        digest.update(b"\0")
    return digest.hexdigest()


def tree_structure(treedef: Any) -> str:
    """The text of a tree structure for a key: ``str(treedef)``, then, for each node whose
    class orders its children per process, that order.

    A NumPyro distribution flattens its fields in the order of a Python ``set``
    (``gather_pytree_data_fields``), which follows the string hash seed of the process:
    ``Uniform(low, high)`` flattens as ``(_support, high, low)`` in one process and
    ``(_support, low, high)`` in another, with the same ``str(treedef)``. A program
    compiled in the first and loaded by that text in the second would read ``high`` as
    ``low``; the field names in the key make them two programs.

    Example:
        >>> import jax
        >>> tree_structure(jax.tree.structure({"a": (1.0, 2.0)}))
        "PyTreeDef({'a': (*, *)})"
    """
    orders = set()
    pending = [treedef]
    while pending:
        node = pending.pop()
        data = node.node_data()
        gather = getattr(data[0], "gather_pytree_data_fields", None) if data else None
        if callable(gather):
            kind = data[0]
            aux = kind.gather_pytree_aux_fields()
            orders.add(f"{kind.__module__}.{kind.__qualname__}{tuple(gather())}{tuple(aux)}")
        pending.extend(node.children())
    return str(treedef) + "".join(f"|{order}" for order in sorted(orders))
