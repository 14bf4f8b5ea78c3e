"""A NumPyro program bound to its arguments, and the cache of its compiled programs.

The NUTS back end (:mod:`gaussmix.inference.mcmc`) compiles three programs per model:
preparation, chains and post-processing. Each takes the array arguments of the model as
traced inputs and closes over everything else, so a later call with data of the same
shapes and dtypes (and the same static arguments) finds them in :data:`COMPILED`, a
least-recently-used cache of :data:`CACHE_SIZE` entries.
"""

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import numpy as np
import numpyro

from gaussmix.inference import compilation, program_keys
from gaussmix.inference.map.trees import canonical, plain

__all__ = [
    "CACHE_SIZE",
    "COMPILED",
    "SMALL_WORK",
    "TRACING_ERRORS",
    "ConcreteProgram",
    "Program",
    "Structure",
    "bind",
    "compiled",
    "compiler_options",
    "signature",
]

#: Compiled programs kept for reuse.
CACHE_SIZE = 32
#: ``(name, program key, extra key) -> (compiled, found)``, least recently used first.
COMPILED: OrderedDict = OrderedDict()
# A sample_posterior shape holds 1 500-1 700 memory mappings here: compilation.clear_memory
# (and its guard near vm.max_map_count) releases these too.
compilation.register_release(COMPILED.clear)

#: Errors of a program that needs concrete argument values (it cannot be traced).
TRACING_ERRORS = (
    jax.errors.ConcretizationTypeError,
    jax.errors.TracerArrayConversionError,
    jax.errors.TracerBoolConversionError,
    jax.errors.TracerIntegerConversionError,
)


class Structure(NamedTuple):
    """What tracing NumPyro's ``initialize_model`` tells about a program.

    Attributes:
        potential_fn_gen: ``potential_fn_gen(*args, **kwargs)`` is the potential
            :math:`U` of a dict of unconstrained site values.
        unravel: flat (P,) unconstrained position -> dict of site values.
        latent: continuous latent sites, in the order of the flat position.
        deterministic: deterministic sites.
        observed: observed sites.
    """

    potential_fn_gen: Callable
    unravel: Callable
    latent: tuple
    deterministic: tuple
    observed: tuple


class Program(NamedTuple):
    """A model bound to its arguments: array leaves are traced, the rest is static.

    Attributes:
        model: the NumPyro program.
        treedef: tree structure of ``(args, kwargs)``.
        static_leaves: every leaf, ``None`` where an array leaf is traced.
        dynamic: the array leaves (numeric or boolean), in order.
        dynamic_index: their positions among all leaves.
        cache_key: hashable key of everything but the array values, or ``None`` when the
            arguments cannot be hashed (nothing is cached then).
    """

    model: Callable
    treedef: Any
    static_leaves: tuple
    dynamic: tuple
    dynamic_index: tuple
    cache_key: Any

    def arguments(self, dynamic=None) -> tuple[tuple, dict]:
        """``(args, kwargs)`` of the model, with ``dynamic`` (traced) arrays if given."""
        leaves = list(self.static_leaves)
        for index, value in zip(
            self.dynamic_index, self.dynamic if dynamic is None else dynamic, strict=True
        ):
            leaves[index] = value
        return plain(jax.tree.unflatten(self.treedef, leaves))


def bind(model: Callable, args: tuple, kwargs: dict) -> Program:
    """Bind ``model`` to ``(args, kwargs)``; NumPy and JAX arrays become traced inputs.

    Example:
        >>> import numpy as np
        >>> program = bind(print, (np.zeros(3),), {"sep": ","})
        >>> [value.shape for value in program.dynamic], program.arguments()[1]
        ([(3,)], {'sep': ','})
    """
    # Distributions flattened sorted by field name: NumPyro's own order changes from one
    # process to the next (gaussmix.inference.map.trees), and so would the programs.
    leaves, treedef = jax.tree.flatten(canonical((tuple(args), dict(kwargs))))
    dynamic_index = tuple(
        i
        for i, leaf in enumerate(leaves)
        if isinstance(leaf, jax.Array | np.ndarray)
        and (np.issubdtype(leaf.dtype, np.number) or leaf.dtype == np.bool_)
    )
    # device_put moves NumPy arrays without compiling (jnp.asarray compiles a copy per shape)
    dynamic = tuple(jax.device_put(leaves[i]) for i in dynamic_index)
    static_leaves = tuple(None if i in dynamic_index else leaf for i, leaf in enumerate(leaves))
    shapes = tuple((value.shape, str(value.dtype)) for value in dynamic)
    cache_key = (model, treedef, static_leaves, dynamic_index, shapes)
    try:
        hash(cache_key)
    except TypeError:
        cache_key = None
    return Program(model, treedef, static_leaves, dynamic, dynamic_index, cache_key)


class ConcreteProgram:
    """A program with its arguments closed over (for programs that need concrete values).

    Binding it (``bind(ConcreteProgram(model, args, kwargs), (), {})``) traces nothing of
    the arguments; nothing is cached across calls, since each instance is a new key.
    """

    def __init__(self, model: Callable, args: tuple, kwargs: dict):
        self.model, self.args, self.kwargs = model, args, kwargs

    def __call__(self):
        return self.model(*self.args, **self.kwargs)


def compiled(
    name: str,
    program: Program,
    extra_key: tuple,
    build: Callable,
    *example,
    needs_found: bool = False,
    compiler_options: dict | None = None,
    refill: Callable | None = None,
):
    """Lower and compile ``build(found)`` for ``(program.dynamic, *example)``, cached.

    Args:
        name: which of the program's compiled functions ("prepare", "nuts", ...).
        program: the bound model.
        extra_key: hashable settings the compiled function depends on.
        build: ``build(found)`` returns the function to compile; it may fill the dict
            ``found`` while being traced (e.g. with the program's :class:`Structure`).
        *example: the arguments after ``program.dynamic`` (their shapes and dtypes).
        needs_found: the caller reads ``found``: a program loaded without tracing is
            traced abstractly (``jax.eval_shape``, nothing compiled) to fill it.
        compiler_options: XLA options (part of the keys), e.g. a lower
            ``xla_backend_optimization_level`` for a small run (:func:`compiler_options`).
        refill: ``refill(found)``, like ``build``, fills ``found`` when traced
            abstractly for a loaded program; a cheaper trace than ``build``'s (default:
            ``build``).

    Returns:
        ``(compiled, found, seconds spent compiling)``; 0 seconds from this process's
        cache (a program loaded from the persistent cache counts its tracing only).

    The program is traced with NumPyro's argument validation off: inside a trace it can
    only check constant parameters, and each of its checks compiles a handful of small
    programs op by op (the sampling hooks and the potential's finiteness catch the rest).
    ``found`` is filled by tracing alone: ``jax.eval_shape(build(found), program.dynamic,
    *example)`` under the same switch refills it without compiling.
    """
    options = dict(compiler_options or {})
    extra_key = (*extra_key, tuple(sorted(options.items())))
    key = None if program.cache_key is None else (name, program.cache_key, extra_key)
    if key is not None and key in COMPILED:
        COMPILED.move_to_end(key)
        function, found = COMPILED[key]
        return function, found, 0.0
    found: dict = {}
    start = time.perf_counter()
    # Through the persistent compilation cache: keyed by what the program depends on when
    # that has a fingerprint (a gaussmix model: a later process traces nothing), else by
    # its lowered text (a user's model: a later process traces but compiles nothing).
    parts = None
    if key is not None:
        shapes = signature((program.dynamic, example))
        structure = program_keys.tree_structure(program.treedef)
        parts = ("gaussmix.inference.mcmc", name, program.model, structure)
        parts += (program.static_leaves, program.dynamic_index, extra_key, shapes)

    def lower() -> jax.stages.Lowered:
        with numpyro.validation_enabled(False):
            return jax.jit(build(found)).lower(program.dynamic, *example)

    function, traced = compilation.compile_keyed(parts, lower, options)
    if not traced and needs_found:  # what tracing records, without compiling
        with numpyro.validation_enabled(False):
            jax.eval_shape((refill or build)(found), program.dynamic, *example)
    seconds = time.perf_counter() - start
    if key is not None:
        COMPILED[key] = (function, found)
        while len(COMPILED) > CACHE_SIZE:
            COMPILED.popitem(last=False)
    return function, found, seconds


#: Below this much work, XLA's compile time dominates a program's: it is compiled with
#: fewer LLVM optimizations (``xla_backend_optimization_level`` 0), as small EM fits are.
#: Work is the number of elements of the program's data arrays times the potential
#: evaluations it makes (a NUTS iteration counted as one), so that the slower code costs
#: at most a few tenths of a second where the compile time saved is about a second
#: (measured on a 2-core CPU: the chains of a 300-point mixture, 400 iterations, compile
#: in 3.4 s instead of 4.4 s of CPU and run in 0.14 s instead of 0.04 s).
SMALL_WORK = 5e5


def compiler_options(program: Program, evaluations: int) -> dict:
    """XLA options of a compiled function of ``program`` that evaluates its potential
    about ``evaluations`` times: ``{"xla_backend_optimization_level": 0}`` below
    :data:`SMALL_WORK`, else none.

    Example:
        >>> import numpy as np
        >>> program = bind(print, (np.zeros((300, 2)),), {})
        >>> compiler_options(program, 400), compiler_options(program, 4 * 1300)
        ({'xla_backend_optimization_level': 0}, {})
    """
    size = sum(int(np.size(value)) for value in program.dynamic)
    if max(size, 1) * evaluations < SMALL_WORK:
        return {"xla_backend_optimization_level": 0}
    return {}


def signature(tree) -> tuple:
    """Hashable (path, shape, dtype) of every leaf; reads attributes, converts nothing.

    Example:
        >>> import numpy as np
        >>> signature({"a": np.zeros((2, 3), np.float32)})
        (("(DictKey(key='a'),)", (2, 3), 'float32'),)
    """

    def describe(path, leaf):
        if not hasattr(leaf, "dtype"):  # a Python scalar or sequence (NumPy: nothing compiled)
            leaf = np.asarray(leaf)
            return str(path), leaf.shape, str(jax.dtypes.canonicalize_dtype(leaf.dtype))
        return str(path), tuple(leaf.shape), str(leaf.dtype)

    return tuple(describe(path, leaf) for path, leaf in jax.tree_util.tree_leaves_with_path(tree))
