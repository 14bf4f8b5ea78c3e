"""A persistent cache of gaussmix's compiled programs: a script's second run compiles
nothing.

gaussmix's fits are a few large XLA programs (an EM loop, a Levenberg-Marquardt batch, a
NUTS chain), compiled on first use. XLA compiles them in seconds; this module keeps the
compiled executables on disk, so that the next process with the same call loads them in
milliseconds. It leaves JAX's global configuration and the user's own programs alone:
only gaussmix's programs go through it, serialized with
:mod:`jax.experimental.serialize_executable` into gaussmix's own cache folder.

Keys (:mod:`gaussmix.inference.program_keys`). A program is found again by a SHA-256 over
the environment (JAX, jaxlib and NumPyro versions, backend, device kind and count, the
host's processor, ``XLA_FLAGS``, JAX's configuration) and either

- its **signature** — the function's module, qualified name and closure, its static
  arguments, the tree structure, shapes and dtypes of its array arguments, and a hash of
  gaussmix's own source — when every static argument is gaussmix's, JAX's or NumPyro's own
  code or plain data (:func:`fingerprint`); found without tracing anything; or
- its **lowered program text** (StableHLO, without source locations) otherwise, e.g. a
  user's own NumPyro program: tracing and lowering run, XLA's compilation does not.

A key never holds an object's address, a per-call constant or data: the same call in a
fresh process gives the same key (tested), and a changed source, version or setting
gives another one.

Where. ``$GAUSSMIX_CACHE_DIR/programs`` (default ``~/.cache/gaussmix/programs``, see
:mod:`gaussmix.inference.cache_folder`): created with mode 0700 and refused, with one
:class:`CompilationCacheWarning`, when it or a cached file is a symbolic link, someone
else's, or writable by group or others — loading a cached executable runs code, so the
folder gets the same checks as the compiled E-step kernel. Files are written under a
temporary name and renamed into place; each holds a header and the SHA-256 of its
payload, so a damaged or foreign file is ignored (and replaced), never loaded; a program
is loaded onto the devices it was compiled for, in their order. The folder is kept under
:data:`MAX_BYTES` by deleting its least recently used programs (only files named as this
module names them).

Off. ``GAUSSMIX_COMPILATION_CACHE=0`` (or ``false``, ``no``, ``off``) or
:func:`set_enabled(False) <set_enabled>` compile in every process as plain ``jax.jit``
does. When the user has configured JAX's own persistent cache
(``jax_compilation_cache_dir``), that one is used and this one stays out of its way.
Programs whose arguments are traced (gaussmix called inside the user's ``jit`` or
``vmap``), live on other devices than the default one, or hold host callbacks (a progress
bar) are compiled as ``jax.jit`` would and kept in memory only.

Memory. A compiled CPU program maps its machine code into the process (an EM fit's about
320 memory mappings), and Linux ends a process that passes ``vm.max_map_count`` with a
crash inside XLA. So :func:`jit` holds :data:`MAX_PROGRAMS` programs at most, least
recently used dropped (and freed) first, to be loaded from the folder again, unchanged;
and before a program is compiled or loaded while the process holds more than
:data:`GUARD_SHARE` of its :func:`mapping_limit`, gaussmix releases every program it
holds (:func:`clear_memory`), then, if that was not enough, JAX's caches
(``jax.clear_caches()``: the user's jitted functions compile again), with a debug log
line. Each program is compiled through a ``jax.jit`` of its own: JAX's caches are keyed
by the function, and would keep the programs of a module-level one for good.

Example:
    >>> import jax.numpy as jnp
    >>> def scaled_sum(values, power):
    ...     return jnp.sum(values**power)
    >>> program = jit(scaled_sum, static_argnames=("power",))
    >>> float(program(jnp.arange(4.0), power=2))
    14.0
"""

import contextlib
import functools
import gc
import hashlib
import inspect
import itertools
import logging
import os
import pickle
import re
import threading
import warnings
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np
from jax.experimental import serialize_executable

from gaussmix.inference import cache_folder, program_keys
from gaussmix.inference.program_keys import fingerprint

__all__ = [
    "GUARD_SHARE",
    "MAPPING_LIMIT",
    "MAX_BYTES",
    "MAX_PROGRAMS",
    "CachedFunction",
    "CompilationCacheWarning",
    "ProgramsByOptimizationLevel",
    "canonical_text",
    "clear_memory",
    "collection_paused",
    "compile_keyed",
    "enabled",
    "fingerprint",
    "jit",
    "mapping_count",
    "mapping_limit",
    "programs_by_optimization_level",
    "register_release",
    "set_enabled",
    "statistics",
    "status",
]

logger = logging.getLogger(__name__)

#: The folder is trimmed to this many bytes of programs (least recently used first).
MAX_BYTES = 2 * 1024**3
#: First bytes of every cached program file (format version included).
MAGIC = b"gaussmix-program-2\n"
SUFFIX = ".gaussmix-program"
_OFF = ("0", "false", "no", "off")

#: Compiled programs of :func:`jit` held in this process at most (least recently used
#: dropped first; about 320 memory mappings each for an EM fit, 64 of them about 20 000).
MAX_PROGRAMS = 64
#: Before compiling or loading a program while the process holds more memory mappings
#: than this share of :func:`mapping_limit`, the programs held in memory are released.
GUARD_SHARE = 0.5
#: The process's limit on memory mappings; None: :func:`mapping_limit` reads Linux's.
MAPPING_LIMIT: int | None = None
# Mappings assumed per program compiled or loaded between two counts (an EM fit's ~320).
_MAPPINGS_PER_PROGRAM = 512

_switch: bool | None = None
_state: dict = {}  # "folder": Path | None once looked up, "reason": why not; "warned"
_programs: OrderedDict = OrderedDict()  # (function's serial, call) -> program, LRU first
_serials = itertools.count()
_held_lock = threading.Lock()
_releases: list[Callable[[], None]] = []  # other holders' caches, see register_release
# mappings at the last count, programs made since, the count that triggers a release
_guard = {"count": float("inf"), "added": 0, "trigger": None}
_counts = {"memory": 0, "disk": 0, "compiled": 0, "stored": 0, "uncacheable": 0}


class CompilationCacheWarning(UserWarning):
    """gaussmix's compilation cache folder is not safe or cannot be written: programs are
    compiled again in every process until it is fixed."""


def set_enabled(value: bool | None) -> None:
    """Turn the persistent cache on or off from Python, over ``GAUSSMIX_COMPILATION_CACHE``.

    Args:
        value: True, False, or None (follow ``GAUSSMIX_COMPILATION_CACHE`` again).

    Example:
        >>> set_enabled(False)
        >>> status()
        'off: gaussmix.inference.compilation.set_enabled(False)'
        >>> set_enabled(None)
    """
    global _switch
    if value is not None and not isinstance(value, bool):
        raise ValueError(
            "set_enabled takes True, False or None (follow GAUSSMIX_COMPILATION_CACHE), "
            f"not {value!r}"
        )
    _switch = value


def enabled() -> bool:
    """Whether gaussmix's persistent cache is used: :func:`set_enabled`'s choice, else
    ``GAUSSMIX_COMPILATION_CACHE``, and never while JAX's own persistent cache is set."""
    setting = os.environ.get("GAUSSMIX_COMPILATION_CACHE", "1").strip().lower()
    on = _switch if _switch is not None else setting not in _OFF
    return on and not jax.config.jax_compilation_cache_dir


def status() -> str:
    """Where compiled programs are kept, or why they are not.

    Returns:
        ``"on: FOLDER"``, ``"off: HOW"``, ``"jax: FOLDER"`` (JAX's own persistent cache
        is configured and used instead) or ``"unavailable: WHY"``.
    """
    if jax.config.jax_compilation_cache_dir:
        return f"jax: {jax.config.jax_compilation_cache_dir}"
    if not enabled():
        if _switch is False:
            return "off: gaussmix.inference.compilation.set_enabled(False)"
        value = os.environ.get("GAUSSMIX_COMPILATION_CACHE", "").strip()
        return f"off: GAUSSMIX_COMPILATION_CACHE={value}"
    folder = _folder()
    return f"on: {folder}" if folder is not None else f"unavailable: {_state['reason']}"


def clear_memory() -> None:
    """Release the compiled programs gaussmix holds in this process, and their memory
    mappings (the folder keeps them: the next call loads its program from the folder
    again, or compiles it where the folder is off): those of :func:`jit` and of the
    caches registered with :func:`register_release`. JAX's own caches, and with them
    the user's jitted functions, are left alone (``jax.clear_caches()`` clears those)."""
    with _held_lock:
        _programs.clear()
    for release in list(_releases):
        release()
    gc.collect()  # anything else that held a program in a reference cycle


def register_release(release: Callable[[], None]) -> None:
    """Have :func:`clear_memory` (and so the mapping guard) call ``release()``, which
    drops a cache of compiled programs kept elsewhere (e.g. of :func:`compile_keyed`)."""
    if release not in _releases:
        _releases.append(release)


def mapping_count() -> int | None:
    """Memory mappings this process holds (lines of ``/proc/self/maps``), or None where
    the system does not say (not Linux).

    Example:
        >>> count = mapping_count()
        >>> count is None or count > 0
        True
    """
    try:
        with open("/proc/self/maps", "rb") as handle:
            return handle.read().count(b"\n")
    except OSError:
        return None


@functools.cache
def _system_mapping_limit() -> int | None:
    try:
        return int(Path("/proc/sys/vm/max_map_count").read_text())
    except (OSError, ValueError):
        return None


def mapping_limit() -> int | None:
    """The most memory mappings this process may hold: :data:`MAPPING_LIMIT` when set,
    else Linux's ``vm.max_map_count`` (None where there is none)."""
    return MAPPING_LIMIT if MAPPING_LIMIT is not None else _system_mapping_limit()


def _guard_mappings() -> None:
    """Before a program is compiled or loaded: above :data:`GUARD_SHARE` of the mapping
    limit, release gaussmix's programs, then JAX's caches if that was not enough. Counted
    only when the programs made since the last count could have reached the trigger (a
    count reads every mapping: about 2 us each)."""
    limit = mapping_limit()
    if not limit:
        return
    threshold = GUARD_SHARE * limit
    trigger = _guard["trigger"] or threshold
    if _guard["count"] + _guard["added"] * _MAPPINGS_PER_PROGRAM < trigger:
        _guard["added"] += 1
        return
    count = mapping_count()
    if count is None:
        return
    _guard.update(count=count, added=1)
    if count < threshold:
        _guard["trigger"] = None
    if count < trigger:
        return
    held = len(_programs)
    clear_memory()
    released = mapping_count()
    message = "%d memory mappings of the %d allowed: released %d compiled programs, %d left"
    logger.debug(message, count, limit, held, released)
    if released >= threshold:
        jax.clear_caches()
        gc.collect()
        released = mapping_count()
        logger.debug("and JAX's caches: %d memory mappings left", released)
    # Still above (held by something else): release again only after more programs.
    _guard.update(count=released, trigger=released + limit / 8 if released >= threshold else None)


def statistics() -> dict[str, int]:
    """Counts since the process started: programs found in memory, loaded from disk,
    compiled, stored, and compiled without the persistent cache."""
    return dict(_counts)


# The folder ---------------------------------------------------------------------------


def _warn_once(message: str) -> None:
    if not _state.get("warned"):
        _state["warned"] = True
        warnings.warn(
            f"gaussmix's compilation cache is not used: {message}. Programs are compiled "
            "again in every process (set GAUSSMIX_COMPILATION_CACHE=0 to silence this).",
            CompilationCacheWarning,
            stacklevel=4,
        )


def _folder() -> Path | None:
    """The checked programs folder, or None (``_state["reason"]`` says why)."""
    root = os.environ.get("GAUSSMIX_CACHE_DIR", ""), os.environ.get("XDG_CACHE_HOME", "")
    if _state.get("root") == root and "folder" in _state:
        return _state["folder"]
    _state.update(root=root, folder=None)
    try:
        folder = cache_folder.cache_root() / "programs"
        cache_folder.private_folder(folder)
    except cache_folder.Unavailable as reason:
        _state["reason"] = str(reason)
        return None
    except cache_folder.Refused as reason:
        _state["reason"] = str(reason)
        _warn_once(str(reason))
        return None
    _state["folder"] = folder
    return folder


def _load(path: Path) -> jax.stages.Compiled | None:
    """The program stored at ``path``, or None when there is none or it is damaged."""
    try:
        if not cache_folder.check_file(path, "cached program"):
            return None
        data = path.read_bytes()
    except cache_folder.Refused as reason:
        _warn_once(str(reason))
        return None
    except OSError:
        return None
    header = len(MAGIC) + 32
    payload = data[header:]
    if data[: len(MAGIC)] != MAGIC or hashlib.sha256(payload).digest() != data[len(MAGIC) : header]:
        logger.debug("ignoring damaged cached program %s", path)
        return None
    try:
        serialized, in_tree, out_tree, ids = pickle.loads(payload)
        if not program_keys.prepare_to_load(serialized):
            return None
        local = {device.id: device for device in jax.local_devices()}
        devices = [local[index] for index in ids]  # KeyError: not a device of this process
        compiled = serialize_executable.deserialize_and_load(
            serialized, in_tree, out_tree, execution_devices=devices
        )
    except Exception as error:  # a program this jaxlib cannot load: compile again
        logger.debug("cannot load cached program %s: %s", path, error)
        return None
    try:
        os.utime(path)  # most recently used
    except OSError:
        pass
    return compiled


def _store(path: Path, compiled: jax.stages.Compiled) -> None:
    """Write ``compiled`` to ``path`` (temporary name, then renamed); trim the folder."""
    try:
        serialized, in_tree, out_tree = serialize_executable.serialize(compiled)
        # Its devices, in order: a program is loaded onto them (JAX's default, every
        # device of the process, made a one-device program expect one shard per device).
        devices = [device.id for device in compiled.runtime_executable().local_devices()]
        payload = pickle.dumps((serialized, in_tree, out_tree, devices), protocol=5)
    except Exception as error:  # host callbacks, constants, a backend without support
        logger.debug("program not serializable: %s", error)
        _counts["uncacheable"] += 1
        return
    data = MAGIC + hashlib.sha256(payload).digest() + payload
    try:
        cache_folder.write_private(path, data)
    except OSError as error:
        _warn_once(f"cannot write to {path.parent}: {error}")
        return
    _counts["stored"] += 1
    cache_folder.trim(path.parent, SUFFIX, MAX_BYTES)


_SYMBOL = re.compile(r"@[\w$.\-]+")


def canonical_text(text: str) -> str:
    """The lowered program with its function symbols renumbered in order of first use.

    JAX names the private functions of a lowered program by a per-process counter
    (``@_where_44`` in one process is ``@_where_55`` in a process that lowered other
    programs first); two programs that differ only in those names are the same program.

    Example:
        >>> canonical_text("call @_where_44(%x) ... func.func private @_where_44")
        'call @0(%x) ... func.func private @0'
    """
    symbols: dict[str, str] = {}
    return _SYMBOL.sub(lambda match: symbols.setdefault(match[0], f"@{len(symbols)}"), text)


@contextlib.contextmanager
def collection_paused():
    """Python's cyclic garbage collector paused while a program is traced, lowered and
    compiled (and on again after, if it was on): tracing makes millions of short-lived
    objects, which start collections that walk every object of the process, JAX's
    included; none of them frees a cycle worth keeping the compiler waiting for (a cold
    single-spectrum ``fit_peaks``: 62 collections, 0.13 of its 2.0 s)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _load_or_compile(
    lower: Callable[[], jax.stages.Lowered],
    key: str | None,
    compiler_options: dict[str, Any] | None = None,
) -> jax.stages.Compiled:
    """The program under ``key`` (or under the hash of its lowered text and XLA options
    when ``key`` is None), loaded from the folder, else lowered, compiled and stored."""
    options = dict(compiler_options or {})

    def compile_(lowered: jax.stages.Lowered) -> jax.stages.Compiled:
        _counts["compiled"] += 1
        return lowered.compile(options) if options else lowered.compile()

    folder = _folder() if enabled() else None
    _guard_mappings()
    if folder is None:
        with collection_paused():
            return compile_(lower())
    lowered = None
    if key is None:
        with collection_paused():
            lowered = lower()
        text = canonical_text(lowered.as_text())
        key = program_keys.key("lowered", text, repr(sorted(options.items())))
    path = folder / f"{key}{SUFFIX}"
    with cache_folder.claim(path):  # another process or thread on it: wait, then load it
        compiled = _load(path)
        if compiled is not None:
            _counts["disk"] += 1
            return compiled
        with collection_paused():
            lowered = lowered if lowered is not None else lower()
            compiled = compile_(lowered)
        if _host_callbacks(lowered):  # not loadable by another process: kept in memory
            _counts["uncacheable"] += 1
        else:
            _store(path, compiled)
    return compiled


def _host_callbacks(lowered: jax.stages.Lowered) -> bool:
    """Whether the program calls back into this process (a progress bar): not loadable."""
    arguments = getattr(getattr(lowered, "_lowering", None), "compile_args", None)
    if isinstance(arguments, dict) and "host_callbacks" in arguments:
        return bool(arguments["host_callbacks"])
    return "callback" in lowered.as_text()


def compile_keyed(
    parts: Any,
    lower: Callable[[], jax.stages.Lowered],
    compiler_options: dict[str, Any] | None = None,
) -> tuple[jax.stages.Compiled, bool]:
    """Load or compile the program that ``lower()`` lowers, keyed by ``parts`` when they
    have a :func:`fingerprint` (nothing is traced on a hit), else by its lowered text.

    Args:
        parts: everything the program depends on besides gaussmix's source and the
            environment: the functions it runs, static settings, the shapes and dtypes of
            its arguments.
        lower: lowers the program (called only to compile it or to key it by its text).
        compiler_options: XLA options (part of the key).

    Returns:
        The compiled program and whether ``lower`` was called (what tracing records,
        e.g. a program's structure, is then filled).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> compiled, lowered = compile_keyed(
        ...     ("example", (3,), "float32"), lambda: jax.jit(jnp.cumsum).lower(jnp.ones(3))
        ... )
        >>> compiled(jnp.ones(3)).tolist()
        [1.0, 2.0, 3.0]
    """
    calls = []

    def counted() -> jax.stages.Lowered:
        calls.append(True)
        return lower()

    printed = fingerprint(parts) if program_keys.runtime_ready() else None
    key = None
    if printed is not None and " at 0x" not in printed:  # an address is no key
        key = program_keys.key("parts", program_keys.source_hash(), printed)
    return _load_or_compile(counted, key, compiler_options), bool(calls)


# jit ----------------------------------------------------------------------------------


def _leaf_signature(leaf, device) -> tuple | None:
    """(shape, dtype, weak type) of an argument leaf, or None when the program must not be
    cached for it (a tracer, an array on another device or sharded)."""
    if isinstance(leaf, jax.core.Tracer):
        return None
    if isinstance(leaf, jax.Array):
        sharding = leaf.sharding
        if not isinstance(sharding, jax.sharding.SingleDeviceSharding):
            return None
        if next(iter(sharding.device_set)) != device:
            return None
        # str(dtype): a key<fry> dtype has no .str; typed keys have no weak_type
        return leaf.shape, str(leaf.dtype), getattr(leaf, "weak_type", False)
    if isinstance(leaf, np.ndarray | np.generic):
        return leaf.shape, str(leaf.dtype), False
    if isinstance(leaf, bool | int | float | complex):
        return (), type(leaf).__name__, True
    return None


def _positional(fun: Callable, signature: inspect.Signature) -> Callable:
    """``fun`` taking all its parameters by position, in order (``jax.jit`` takes static
    arguments by position; keyword-only parameters cannot be)."""
    parameters = list(signature.parameters.values())
    if all(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in parameters):
        return fun
    positional = [p.name for p in parameters if p.kind != p.KEYWORD_ONLY]
    keywords = [p.name for p in parameters if p.kind == p.KEYWORD_ONLY]
    if len(positional) + len(keywords) != len(parameters):
        raise ValueError(f"{fun.__name__} takes *args or **kwargs: it cannot be cached")

    def call(*values):
        head = values[: len(positional)]
        return fun(*head, **dict(zip(keywords, values[len(positional) :], strict=True)))

    call.__name__, call.__qualname__ = fun.__name__, fun.__qualname__
    return call


class CachedFunction:
    """``jax.jit(fun, static_argnames=...)`` whose compiled programs persist across
    processes (see the module docstring); made by :func:`jit`.

    Called as ``fun`` is; the arguments are bound to ``fun``'s signature, so positional
    and keyword calls share one program.
    """

    def __init__(
        self,
        fun: Callable,
        static_argnames: Sequence[str] = (),
        compiler_options: dict[str, Any] | None = None,
    ):
        self.fun = fun
        self.signature = inspect.signature(fun)
        names = list(self.signature.parameters)
        # Binding by hand is 10x quicker than Signature.bind (which gives the errors).
        self.names = tuple(names)
        parameters = self.signature.parameters
        self.n_positional = sum(p.kind != p.KEYWORD_ONLY for p in parameters.values())
        self.defaults = {
            name: p.default for name, p in parameters.items() if p.default is not p.empty
        }
        unknown = [name for name in static_argnames if name not in names]
        if unknown:
            raise ValueError(f"static_argnames {unknown} are not parameters of {fun.__name__}")
        self.static_positions = tuple(names.index(name) for name in static_argnames)
        self.positional = _positional(fun, self.signature)
        self.jitted = jax.jit(self.positional, static_argnums=self.static_positions)
        self.compiler_options = dict(compiler_options or {})
        self.options_jitted = None
        self.serial = next(_serials)  # its programs' keys in the process's LRU
        # XLA's options are part of the program: in its key beside the function.
        self.function_fingerprint = fingerprint((fun, compiler_options or {}))
        functools.update_wrapper(self, fun)

    def cache_size(self) -> int:
        """Programs of this function held in this process (one per shape and static
        arguments seen, :data:`MAX_PROGRAMS` of all functions at most)."""
        return sum(serial == self.serial for serial, _ in list(_programs))

    def lower(self, *args, **kwargs) -> jax.stages.Lowered:
        """``jax.jit(fun).lower(...)`` for these arguments."""
        return self.jitted.lower(*self._bind(args, kwargs))

    def _bind(self, args, kwargs) -> tuple:
        """The arguments in the order of ``fun``'s parameters, defaults filled in."""
        if len(args) <= self.n_positional:
            values = list(args)
            used = 0
            for name in self.names[len(args) :]:
                if name in kwargs:
                    values.append(kwargs[name])
                    used += 1
                elif name in self.defaults:
                    values.append(self.defaults[name])
                else:
                    break
            else:
                if used == len(kwargs):
                    return tuple(values)
        bound = self.signature.bind(*args, **kwargs)  # raises the usual TypeError
        bound.apply_defaults()
        return tuple(bound.arguments[name] for name in self.names)

    def __call__(self, *args, **kwargs):
        values = self._bind(args, kwargs)
        found = self._program(values)
        if found is None:  # an unhashable static argument: jax.jit says so
            return self.jitted(*values)
        compiled, dynamic = found
        if compiled is None:
            _counts["uncacheable"] += 1
            return self._fallback(values)
        return compiled(*dynamic)

    def preload(self, *args, **kwargs) -> jax.stages.Compiled | None:
        """Load (or compile) and hold, unrun, the program of a call with arguments of these
        shapes, dtypes and static values (array values unread), mostly outside Python's
        lock: a thread can. The program; None for an uncached call (traced, sharded)."""
        found = self._program(self._bind(args, kwargs))
        return None if found is None else found[0]

    def _program(self, values):
        """(program, dynamic arguments), loaded or compiled where not held; (None, dynamic)
        for an uncached call; None for an unhashable static argument."""
        static = tuple(values[i] for i in self.static_positions)
        dynamic = tuple(v for i, v in enumerate(values) if i not in self.static_positions)
        leaves, treedef = jax.tree.flatten(dynamic)
        device = jax.devices()[0]
        shapes = tuple(_leaf_signature(leaf, device) for leaf in leaves)
        try:
            memory_key = (static, treedef, shapes, jax.config.jax_enable_x64)
            hash(memory_key)
        except TypeError:
            return None
        if None in shapes:
            return None, dynamic
        held = (self.serial, memory_key)
        compiled = _programs.get(held)
        if compiled is None:
            compiled = self._compile(values, static, treedef, shapes)
            with _held_lock:
                _programs[held] = compiled
                while len(_programs) > max(MAX_PROGRAMS, 1):
                    _programs.popitem(last=False)  # freed now: nothing else holds it
        else:
            _counts["memory"] += 1
            try:
                _programs.move_to_end(held)
            except KeyError:  # released meanwhile by another thread
                pass
        return compiled, dynamic

    def _compile(self, values, static, treedef, shapes) -> jax.stages.Compiled:
        """Load or compile the program; keyed by its signature when every part of it has a
        fingerprint, else by its lowered text."""
        key = None
        static_fingerprint = fingerprint(static)
        structure = program_keys.tree_structure(treedef)
        if (
            program_keys.runtime_ready()
            and self.function_fingerprint is not None
            and static_fingerprint is not None
            and " at 0x" not in structure  # a node whose text is its address: no key
        ):
            key = program_keys.key(
                "signature",
                program_keys.source_hash(),
                self.function_fingerprint,
                static_fingerprint,
                structure,
                repr(shapes),
            )
        positional = self.positional

        def lower() -> jax.stages.Lowered:
            # Through a jax.jit of a new function: JAX's caches, keyed by the function
            # (weakly), let go of it when gaussmix does (self.jitted's would keep it).
            program = functools.wraps(positional)(lambda *arguments: positional(*arguments))
            return jax.jit(program, static_argnums=self.static_positions).lower(*values)

        return _load_or_compile(lower, key, self.compiler_options)

    def _fallback(self, values: tuple):
        """As ``jax.jit(fun, compiler_options=...)`` would: traced arguments (inlined
        into the caller's program) or arrays on other devices."""
        if not self.compiler_options or any(
            isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(values)
        ):
            return self.jitted(*values)
        if self.options_jitted is None:
            self.options_jitted = jax.jit(self.fun, static_argnums=self.static_positions,
                                          compiler_options=self.compiler_options)  # fmt: skip
        return self.options_jitted(*values)


def jit(
    fun: Callable | None = None,
    *,
    static_argnames: Sequence[str] = (),
    compiler_options: dict[str, Any] | None = None,
):
    """``jax.jit`` with gaussmix's persistent compilation cache (a decorator, too): a
    :class:`CachedFunction`. ``static_argnames`` (hashable) and ``compiler_options``
    (XLA's, as ``jax.jit`` takes them) are part of the key: plain data or gaussmix's own
    functions as static arguments."""
    if fun is None:
        return functools.partial(
            jit, static_argnames=static_argnames, compiler_options=compiler_options
        )
    return CachedFunction(fun, tuple(static_argnames), compiler_options)


class ProgramsByOptimizationLevel(NamedTuple):
    """One function's programs, :func:`jit` with XLA's ``xla_backend_optimization_level``
    0, 1 and XLA's default; ``programs(work)`` is the one for ``work`` (e.g. rows x features
    x components) below 1e6, below 1e8, above: compile time dominates a small problem."""

    programs: tuple[CachedFunction, CachedFunction, CachedFunction]

    def __call__(self, work: float) -> CachedFunction:
        return self.programs[(work >= 1e6) + (work >= 1e8)]

    def cache_size(self) -> int:
        """Programs of the function held in this process, at every level."""
        return sum(program.cache_size() for program in self.programs)


def programs_by_optimization_level(
    fun: Callable, *, static_argnames: Sequence[str] = ()
) -> ProgramsByOptimizationLevel:
    """:class:`ProgramsByOptimizationLevel` of ``fun``."""
    levels = ({"xla_backend_optimization_level": 0}, {"xla_backend_optimization_level": 1}, None)
    program = functools.partial(jit, fun, static_argnames=static_argnames)
    return ProgramsByOptimizationLevel(tuple(program(compiler_options=o) for o in levels))
