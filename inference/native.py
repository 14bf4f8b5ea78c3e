"""The compiled CPU kernel of the full-covariance E-step, called through XLA's FFI.

XLA computes the E-step statistics of a full-covariance mixture block by block
(:func:`gaussmix.inference.em.sufficient_statistics`), but it cannot fuse the per-row
features :math:`\\phi(x) = [\\operatorname{vech}(x x^T), x, 1]` into the two matrix
products that use them: the features go to memory and come back twice, and the narrow
(n x F) @ (F x K) products run at about half of the CPU's matrix-product rate.
``em_full_kernel.cc`` does the whole pass in one kernel: per block of rows small enough
for the core's L2 cache it builds the features, multiplies them by the natural
parameters, takes the softmax with vectorized exponentials and accumulates the weighted
responsibilities times the features, on all of XLA's CPU threads; the result does not
depend on the number of threads. On E1 (N = 100 000, D = 32, K = 16, float64) it is
1.6-2.5x faster than XLA on a 2-core AMD EPYC and 9.4x on a 16-core Xeon (BENCHMARKS.md).

**Many small datasets.** The same library holds :func:`lane_statistics`, the E-step of
``gaussmix.inference.em.pool.pool_fit`` (the bootstrap's replicates): B datasets of a few
hundred rows, each under its own parameters, in one call per EM step; each dataset is one
pass over its rows with the features, K log-probabilities, softmax and K x F sums in
registers (layouts "full", "diag" and "spherical", K up to :data:`LANE_COMPONENTS`). Its
``pool_fit`` runs each dataset's whole maximum-likelihood fit (that E-step, the M-step of
the unconstrained models VVV, VVI and VII, collapse and mclust's stopping rule) in one
thread, one call for all datasets: no XLA loop around the steps.

**Build.** The kernel is compiled from its C++ source on first use with the system's C++
compiler (``$CXX``, else ``c++``, ``g++`` or ``clang++``) against the FFI headers that
jaxlib ships, and cached, named by the hash of source, compiler, flags and jaxlib version,
in the user's cache folder: ``$GAUSSMIX_CACHE_DIR``, default ``$XDG_CACHE_HOME/gaussmix``
or ``~/.cache/gaussmix``. A build takes about 7 seconds, once per machine, compiler and
jaxlib. Without a compiler, with ``GAUSSMIX_NATIVE=0`` or after ``set_enabled(False)``, EM
uses XLA's blocks instead (the same statistics to rounding, slower). Accelerators always
use XLA.

**Safety.** Loading a shared library runs its code, so a library is loaded only from a
folder that the (effective) user owns and no one else can write. Missing folders on the
way to the cache folder are created with mode 0700; that folder, and every folder created
on the way, must be a real folder (not a symbolic link) owned by the user and not
writable by group or others, and the cached library a regular file (not a symbolic link)
owned by the user and not writable by group or others, all checked with ``os.lstat``
before anything is loaded or compiled there. No one else can then add, replace or rename
a file in that folder between the check and the load (the folder itself only someone who
can write the folder above it). A build goes to a private temporary folder inside the
cache folder and is renamed into place, so a half-written library is never loaded. A
cache folder that fails a check is neither read nor written: the kernel is unavailable
and one :class:`NativeBuildWarning` names the folder, what is wrong and the fix
(``chmod 700`` it, or choose another ``GAUSSMIX_CACHE_DIR``). There is no shared fallback
under the temporary directory: with no home folder known and no ``GAUSSMIX_CACHE_DIR``
(or a cache folder that cannot be created or written) the kernel is unavailable,
silently.

**Warnings.** An optional speed-up is silent when it is absent: a machine without a C++
compiler, or without a cache folder, gets no warning. Two things do warn, once per
process, with :class:`NativeBuildWarning`: a compiler that exists (or that ``CXX``
names) but fails to build or load the kernel, and a cache folder or cached library that
fails the safety checks. :func:`status` says whether the kernel is used and why not:

- ``"in use: /home/user/.cache/gaussmix/em_full_kernel-0123456789abcdef.so"``
- ``"off: GAUSSMIX_NATIVE=0"`` (the variable's value as set)
- ``"off: gaussmix.inference.native.set_enabled(False)"``
- ``"unavailable: no C++ compiler found (set CXX, or install g++ or clang++)"``, or
  another reason: no home folder known, a cache folder that is not safe, a failed build,
  JAX's default backend not the CPU.

**Switch.** ``GAUSSMIX_NATIVE`` set to 0, false, no or off turns the kernel off;
:func:`set_enabled` (``True``, ``False``, or ``None`` to follow the variable again)
overrides the variable from Python. Both are read by each fit as it is set up
(:func:`gaussmix.inference.em.fit_em`, and
:func:`gaussmix.inference.em.sufficient_statistics` when it is traced), where the choice
becomes part of the compiled program: a change takes effect on the next fit.

**Why build on first use rather than at install.** The wheel stays pure Python, one wheel
for every platform (``tests/test_packaging.py`` builds it), and installing gaussmix never
needs a compiler: a build step would need per-platform wheels, or a compiler on every
machine that installs from source. The kernel is compiled against the FFI headers of the
jaxlib installed at run time, and for the CPU it runs on (AVX2 and FMA where present): a
library built at install time goes stale when jaxlib is upgraded, and one built for a
wheel would have to target the oldest CPU. Building on first use keys the cache by the
jaxlib version and compiler, so an upgrade rebuilds once. What a build at install time
would avoid, loading code from a writable cache, the checks above make safe: the cache is
as trusted as the user's own files.
"""

import ctypes
import hashlib
import os
import platform
import shlex
import shutil
import subprocess
import tempfile
import threading
import warnings
from importlib import resources
from pathlib import Path

import jax
import jaxlib
import numpy as np

from gaussmix.inference import cache_folder

SOURCE = "em_full_kernel.cc"
_TARGETS = {
    np.dtype(np.float64): ("gaussmix_em_full_statistics_f64", "GaussmixEmFullStatisticsF64"),
    np.dtype(np.float32): ("gaussmix_em_full_statistics_f32", "GaussmixEmFullStatisticsF32"),
}
# the same library's kernel for many small datasets side by side (pool_fit's lanes)
_LANE_TARGETS = {
    np.dtype(np.float64): ("gaussmix_em_lane_statistics_f64", "GaussmixEmLaneStatisticsF64"),
    np.dtype(np.float32): ("gaussmix_em_lane_statistics_f32", "GaussmixEmLaneStatisticsF32"),
}
_LANE_LAYOUTS = {"full": 0, "diag": 1, "spherical": 2}
# whole EM fits of many small datasets (pool_fit's unconstrained models)
_FIT_TARGETS = {
    np.dtype(np.float64): ("gaussmix_em_pool_fit_f64", "GaussmixEmPoolFitF64"),
    np.dtype(np.float32): ("gaussmix_em_pool_fit_f32", "GaussmixEmPoolFitF32"),
}
#: The most features :func:`pool_fit` takes with full covariances.
FIT_FEATURES = 8
#: The most components :func:`lane_statistics` takes (its kernel is compiled for each K).
LANE_COMPONENTS = 10
_OFF = ("0", "false", "no", "off")

_lock = threading.Lock()
# "library": the loaded kernel (None when unavailable), "path": the file whose handlers XLA
# calls, "reason": why it is unavailable; reset, the next use builds or loads again
_state: dict = {}
# "path": the library whose handlers are registered with XLA in this process (XLA refuses a
# second registration of a target from another library, so it outlives a reset of _state)
_registered: dict = {}
# set_enabled's choice: True, False, or None to follow GAUSSMIX_NATIVE
_switch: bool | None = None


class NativeBuildWarning(UserWarning):
    """The compiled E-step kernel could not be built, or its cache folder is not safe; EM
    uses XLA (slower)."""


# The kernel is unavailable for a reason that is nobody's fault (no compiler, no cache
# folder): status() says it, nothing warns.
_Unavailable = cache_folder.Unavailable
# Something the user should fix (a compiler that fails, a cache folder that is not safe):
# one NativeBuildWarning.
_Refused = cache_folder.Refused


def set_enabled(value: bool | None) -> None:
    """Turn the kernel on or off from Python, over ``GAUSSMIX_NATIVE``.

    Args:
        value: True (use the kernel where it builds, whatever ``GAUSSMIX_NATIVE`` says),
            False (XLA only), or None (follow ``GAUSSMIX_NATIVE`` again, the default).

    The choice is read by each fit as it is set up: it takes effect on the next fit.

    Example:
        >>> set_enabled(False)
        >>> enabled(), status()
        (False, 'off: gaussmix.inference.native.set_enabled(False)')
        >>> set_enabled(None)  # back to GAUSSMIX_NATIVE
    """
    global _switch
    if value is not None and not isinstance(value, bool):
        raise ValueError(
            f"set_enabled takes True, False or None (follow GAUSSMIX_NATIVE), not {value!r}"
        )
    _switch = value


def enabled() -> bool:
    """Whether the kernel may be used: :func:`set_enabled`'s choice when one was made, else
    false when the environment variable ``GAUSSMIX_NATIVE`` is 0, false, no or off."""
    if _switch is not None:
        return _switch
    return os.environ.get("GAUSSMIX_NATIVE", "1").strip().lower() not in _OFF


def status() -> str:
    """Whether full-covariance EM on the CPU uses the kernel, and why not.

    Builds or loads the kernel when that has not been tried yet in this process (what the
    next full-covariance fit would do).

    Returns:
        ``"in use: PATH"``, ``"off: HOW"`` or ``"unavailable: WHY"`` (the module docstring
        lists them).

    Example:
        >>> status().split(":")[0] in ("in use", "off", "unavailable")
        True
    """
    if not enabled():
        if _switch is False:
            return "off: gaussmix.inference.native.set_enabled(False)"
        return f"off: GAUSSMIX_NATIVE={os.environ.get('GAUSSMIX_NATIVE', '').strip()}"
    backend = jax.default_backend()
    if backend != "cpu":
        return f"unavailable: JAX's default backend is {backend} (the kernel serves the CPU)"
    if _load() is None:
        return f"unavailable: {_state['reason']}"
    return f"in use: {_state['path']}"


def _compiler() -> list[str]:
    """The C++ compiler command: ``$CXX`` (which must exist), else the first found."""
    configured = os.environ.get("CXX", "").strip()
    if configured:
        command = shlex.split(configured)
        if shutil.which(command[0]) is None:
            raise _Refused(
                f"CXX={configured} is not a program that can be run; set CXX to a C++ "
                "compiler, or unset it"
            )
        return command
    for name in ("c++", "g++", "clang++"):
        if shutil.which(name):
            return [name]
    raise _Unavailable("no C++ compiler found (set CXX, or install g++ or clang++)")


def _cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def _flags() -> list[str]:
    flags = ["-O3", "-std=c++17", "-shared", "-fPIC", "-ffp-contract=fast", "-w"]
    # -march=native is avoided on purpose: its tuning made this kernel 20 % slower on AMD
    # EPYC (Zen 3) than plain AVX2 + FMA
    if platform.machine().lower() in ("x86_64", "amd64") and {"avx2", "fma"} <= _cpu_flags():
        flags += ["-mavx2", "-mfma"]
    return [*flags, f"-I{jax.ffi.include_dir()}"]


def _library_name(compiler: list[str], flags: list[str], source: bytes) -> str:
    """``em_full_kernel-<hash>.so``, the hash of source, compiler, flags and jaxlib."""
    try:
        version = subprocess.run(
            [*compiler, "--version"], capture_output=True, text=True, check=True, timeout=60
        ).stdout
    except (OSError, subprocess.SubprocessError) as error:
        raise _Refused(f"the C++ compiler {' '.join(compiler)} does not run: {error}") from None
    identity = [version, " ".join([*compiler, *flags]), jaxlib.__version__]
    key = hashlib.sha256(b"\0".join([source, *(part.encode() for part in identity)]))
    return f"em_full_kernel-{key.hexdigest()[:16]}.so"


def _compile(compiler: list[str], flags: list[str], source: bytes, library: Path) -> None:
    """Compile into a private temporary folder beside ``library`` and rename the result into
    place, so that no half-written library is ever loaded (concurrent builds each write
    their own; the last rename wins)."""
    try:
        scratch = tempfile.TemporaryDirectory(dir=library.parent, prefix=".build-")
    except OSError as error:
        raise _Unavailable(f"cache folder {library.parent} cannot be written: {error}") from None
    with scratch:
        source_path = Path(scratch.name) / SOURCE
        source_path.write_bytes(source)
        output = Path(scratch.name) / library.name
        result = subprocess.run(
            [*compiler, *flags, "-o", str(output), str(source_path)],
            capture_output=True,
            text=True,
            timeout=600,
        )
        if result.returncode != 0:
            tail = "\n".join(result.stderr.strip().splitlines()[-10:])
            raise _Refused(f"{' '.join(compiler)} failed (exit {result.returncode}):\n{tail}")
        os.chmod(output, 0o700)
        os.replace(output, library)


def _build() -> Path:
    """The shared library for this source, compiler, flags and jaxlib (named by their hash)
    in the checked cache folder: the cached one, else compiled there."""
    compiler = _compiler()
    folder = cache_folder.cache_root()
    source = resources.files("gaussmix.inference").joinpath(SOURCE).read_bytes()
    flags = _flags()
    library = folder / _library_name(compiler, flags, source)
    cache_folder.private_folder(folder)
    if not cache_folder.check_file(library, "cached library"):
        _compile(compiler, flags, source, library)
        cache_folder.check_file(library, "cached library")
    return library


def _open(library: Path) -> ctypes.CDLL:
    """Load ``library``; one that cannot be loaded (a damaged cache file) is rebuilt once."""
    try:
        return ctypes.CDLL(str(library))
    except OSError:
        library.unlink(missing_ok=True)
        return ctypes.CDLL(str(_build()))


def _register(library: ctypes.CDLL, path: Path) -> Path:
    """Register the kernel's FFI targets with XLA once per process; the path of the
    library whose handlers XLA calls (a later load, from a changed cache folder, is the
    same source, compiler and flags, and keeps the first handlers)."""
    handlers = {
        target: getattr(library, symbol)
        for target, symbol in (*_TARGETS.values(), *_LANE_TARGETS.values(), *_FIT_TARGETS.values())
    }
    if not _registered:
        for target, handler in handlers.items():
            jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(handler), platform="cpu")
        _registered["path"] = path
    return _registered["path"]


def _load() -> ctypes.CDLL | None:
    """The registered kernel library, built on the first call; None when unavailable."""
    with _lock:
        if "library" not in _state:
            try:
                library = _open(path := _build())
                _state.update(library=library, path=_register(library, path), reason=None)
            except _Unavailable as error:
                _state.update(library=None, path=None, reason=str(error))
            except Exception as error:  # an optional speed-up: any failure leaves EM in XLA
                reason = str(error) if isinstance(error, _Refused) else repr(error)
                _state.update(library=None, path=None, reason=reason)
                warnings.warn(
                    "gaussmix does not use its compiled CPU kernel for full-covariance EM, "
                    f"so EM uses XLA's (slower) path: {reason}. GAUSSMIX_NATIVE=0 or "
                    "gaussmix.inference.native.set_enabled(False) skips the kernel.",
                    NativeBuildWarning,
                    stacklevel=3,
                )
        return _state["library"]


def usable(dtype) -> bool:
    """Whether the kernel serves this dtype here: float32 or float64, enabled, JAX's default
    backend the CPU, and the library built (building it on the first call)."""
    return (
        np.dtype(dtype) in _TARGETS
        and enabled()
        and jax.default_backend() == "cpu"
        and _load() is not None
    )


def _require_library() -> None:
    """Build or load the library (registering its handlers with XLA) before a kernel is
    called; a clear error where it is unavailable."""
    if _load() is None:
        raise RuntimeError(
            f"gaussmix's compiled CPU kernel is unavailable: {_state['reason']}; call it "
            "only where gaussmix.inference.native.usable() is true"
        )


def full_statistics(x: jax.Array, weight: jax.Array, natural: jax.Array):
    """Packed statistics and log-likelihood of rows of a full-covariance mixture.

    .. math::

        \\text{packed}_{k} = \\sum_n w_n r_{nk} \\phi(x_n),\\qquad
        \\log L = \\sum_n w_n \\log \\sum_k e^{\\ell_{nk}},\\qquad
        \\ell_{nk} = \\phi(x_n)^T \\eta_k,\\quad r_{nk} = e^{\\ell_{nk}} / \\textstyle\\sum_j e^{\\ell_{nj}}

    with :math:`\\phi(x) = [x_i x_j\\ (i \\le j), x, 1]` (F = D(D+1)/2 + D + 1 columns),
    the same as :func:`gaussmix.inference.em.sufficient_statistics` before unpacking. Call
    only where :func:`usable` is true (traceable; vmapped calls run one after another).

    Args:
        x: (N, D) centred rows, float32 or float64.
        weight: (N,) non-negative row weights (0 for padding rows).
        natural: (F, K) natural parameters.

    Returns:
        packed (K, F) and the weighted log-likelihood (scalar), in x's dtype.

    Example:
        >>> import jax.numpy as jnp
        >>> x, weight = jnp.zeros((3, 2)), jnp.ones(3)
        >>> natural = jnp.zeros((6, 2))  # two equal components
        >>> packed, log_likelihood = full_statistics(x, weight, natural)  # where usable(x.dtype)
        >>> packed[:, -1].tolist(), round(float(log_likelihood), 5)  # counts; 3 log 2
        ([1.5, 1.5], 2.07944)
    """
    _require_library()
    target, _ = _TARGETS[np.dtype(x.dtype)]
    shapes = (
        jax.ShapeDtypeStruct((natural.shape[1], natural.shape[0]), x.dtype),
        jax.ShapeDtypeStruct((), x.dtype),
    )
    return jax.ffi.ffi_call(target, shapes, vmap_method="sequential")(x, weight, natural)


def lane_statistics(x_rows: jax.Array, natural: jax.Array, layout: str):
    """Packed statistics and log-likelihoods of many small datasets with unit weights,
    each under its own natural parameters (``gaussmix.inference.em.pool.pool_fit``'s lanes).

    .. math::

        \\text{packed}_{bk} = \\sum_n r_{bnk} \\phi(x_{bn}),\\qquad
        \\log L_b = \\sum_n \\log \\sum_k e^{\\ell_{bnk}},\\qquad
        \\ell_{bnk} = \\phi(x_{bn})^T \\eta_{bk}

    with the features :math:`\\phi(x) = [q(x), x, 1]` of the covariance layout: q(x) the
    products :math:`x_i x_j\\ (i \\le j)` for "full", the squares :math:`x_i^2` for "diag",
    :math:`\\sum_i x_i^2` for "spherical" (the order of
    ``gaussmix.inference.em.pool.lane_statistics``). One pass over each dataset's rows
    with everything in registers; the datasets are shared among XLA's CPU threads, each
    summed in a fixed order (the result does not depend on the threads). Call only where
    :func:`usable` is true (traceable; under ``vmap`` the batch axes are added to the
    leading ones).

    Args:
        x_rows: (..., D, n) datasets, rows on the minor axis, float32 or float64.
        natural: (..., F, K) their natural parameters (the same leading axes), K at most
            :data:`LANE_COMPONENTS`.
        layout: "full", "diag" or "spherical".

    Returns:
        packed (..., K, F) and the log-likelihoods (...), in x's dtype.

    Example:
        >>> import jax.numpy as jnp
        >>> x_rows, natural = jnp.zeros((1, 2, 3)), jnp.zeros((1, 6, 2))  # two equal components
        >>> packed, log_likelihood = lane_statistics(x_rows, natural, "full")  # where usable
        >>> packed[0, :, -1].tolist(), log_likelihood.round(5).tolist()  # counts; 3 log 2
        ([1.5, 1.5], [2.07944])
    """
    if not 1 <= natural.shape[-1] <= LANE_COMPONENTS:
        raise ValueError(
            f"lane_statistics takes 1 to {LANE_COMPONENTS} components, not "
            f"{natural.shape[-1]}; use gaussmix.inference.em.pool.lane_statistics (XLA)"
        )
    _require_library()
    target, _ = _LANE_TARGETS[np.dtype(x_rows.dtype)]
    batch = x_rows.shape[:-2]
    shapes = (
        jax.ShapeDtypeStruct((*batch, natural.shape[-1], natural.shape[-2]), x_rows.dtype),
        jax.ShapeDtypeStruct(batch, x_rows.dtype),
    )
    call = jax.ffi.ffi_call(target, shapes, vmap_method="broadcast_all")
    return call(x_rows, natural, layout=np.int64(_LANE_LAYOUTS[layout]))


def pool_fit(
    x_rows: jax.Array,
    centre: jax.Array,
    starts,
    mask: jax.Array,
    rtol: jax.Array,
    reg_covar: jax.Array,
    layout: str,
    max_iter: int,
):
    """Maximum-likelihood EM of many small datasets to the end, one compiled call
    (``gaussmix.inference.em.pool.pool_fit``'s fits of the unconstrained models: mclust's
    VVV, VVI and VII).

    Each dataset is fitted by one thread, step after step: the E-step of
    :func:`lane_statistics`, the M-step of ``gaussmix.inference.em.maximization``
    (:math:`\\pi_k = \\tilde N_k / \\sum_j \\tilde N_j`, :math:`\\mu_k = S_k / \\tilde N_k`,
    :math:`\\Sigma_k = (Q_k - S_k \\mu_k^T - \\mu_k S_k^T + N_k \\mu_k \\mu_k^T) / \\tilde N_k
    + \\text{reg}\\, I` in its layout, :math:`\\tilde N_k = N_k + 10 \\epsilon`), the
    precision factor :math:`U = L^{-T}` of the Cholesky factor (NaN where the covariance is
    not positive definite: a collapse ends the fit), and mclust's convergence test
    :math:`|\\mathcal{L}_t - \\mathcal{L}_{t-1}| < \\mathrm{rtol}\\,(1/n + |\\mathcal{L}_{t-1}|)`
    on the mean log-likelihood :math:`\\mathcal{L}`; at most ``max_iter`` steps (one at
    least). The datasets are shared among XLA's CPU threads whole (the result does not
    depend on the threads). Call only where :func:`usable` is true.

    Args:
        x_rows: (B, D, n) datasets centred at ``centre``, rows on the minor axis.
        centre: (B, D) their centres.
        starts: ``(weights (B, K), means (B, K, D), precision factors (B, K, D, D) |
            (B, K, D) | (B, K))``, scikit-learn's upper factors; K at most
            :data:`LANE_COMPONENTS`, D at most :data:`FIT_FEATURES` for "full".
        mask: (B,) bool, the datasets to fit.
        rtol, reg_covar: () scalars in x's dtype.
        layout: "full", "diag" or "spherical".
        max_iter: steps at most.

    Returns:
        weights, means, covariances, precision factors (of the last M-step; zeros where
        not fitted), the log-likelihood of the parameters that entered the last step
        (-inf where not fitted), converged, collapsed (bool) and n_iter (int32), each
        with a leading (B,) axis.

    Example:
        >>> import jax.numpy as jnp
        >>> x = jnp.array([[[-1.0, 1.0, -2.0, 2.0]]])  # one dataset, D = 1, n = 4
        >>> starts = (jnp.ones((1, 1)), jnp.zeros((1, 1, 1)), jnp.ones((1, 1, 1, 1)))
        >>> fits = pool_fit(x, jnp.zeros((1, 1)), starts, jnp.ones(1, bool), jnp.asarray(1e-5),
        ...                 jnp.asarray(0.0), "full", 100)  # where usable
        >>> # step 2 reaches the optimum, step 3 sees no change in the log-likelihood
        >>> fits[2].ravel().round(6).tolist(), fits[7].tolist()  # variance 2.5, 3 steps
        ([2.5], [3])
    """
    weights, means, factor = starts
    n_datasets, n_features, _ = x_rows.shape
    n_components = means.shape[-2]
    if not 1 <= n_components <= LANE_COMPONENTS or (layout == "full" and n_features > FIT_FEATURES):
        raise ValueError(
            f"pool_fit takes 1 to {LANE_COMPONENTS} components and, with full covariances, "
            f"at most {FIT_FEATURES} features, not {n_components} and {n_features}; use "
            "gaussmix.inference.em.pool.pool_fit without use_kernel (XLA)"
        )
    _require_library()
    target, _ = _FIT_TARGETS[np.dtype(x_rows.dtype)]
    dtype = x_rows.dtype
    shapes = (
        jax.ShapeDtypeStruct(weights.shape, dtype),
        jax.ShapeDtypeStruct(means.shape, dtype),
        jax.ShapeDtypeStruct(factor.shape, dtype),
        jax.ShapeDtypeStruct(factor.shape, dtype),
        jax.ShapeDtypeStruct((n_datasets,), dtype),
        *(jax.ShapeDtypeStruct((n_datasets,), np.int32) for _ in range(3)),
    )
    call = jax.ffi.ffi_call(target, shapes, vmap_method="sequential")
    *parameters, log_likelihood, converged, collapsed, n_iter = call(
        x_rows,
        centre,
        weights,
        means,
        factor,
        mask.astype(np.int32),
        rtol,
        reg_covar,
        layout=np.int64(_LANE_LAYOUTS[layout]),
        max_iter=np.int64(max_iter),
    )
    return (*parameters, log_likelihood, converged != 0, collapsed != 0, n_iter)
