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

The kernel is compiled from its C++ source on first use with the system's C++ compiler
(``$CXX``, else ``c++``, ``g++`` or ``clang++``) against the FFI headers that jaxlib
ships, and cached by the hash of source, compiler, flags and jaxlib version under
``$GAUSSMIX_CACHE_DIR`` (default ``$XDG_CACHE_HOME/gaussmix`` or ``~/.cache/gaussmix``,
else a folder of this user under the temporary directory); a build takes about 5
seconds, once per machine and compiler. Without a compiler, or with ``GAUSSMIX_NATIVE=0``,
EM uses XLA's blocks instead (the same statistics to rounding, slower), with one
:class:`NativeBuildWarning` when a build failed. Accelerators always use XLA.
``GAUSSMIX_NATIVE`` is read by each fit as it is set up (by
:func:`gaussmix.inference.em.sufficient_statistics` when it is traced).
"""

import ctypes
import getpass
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

SOURCE = "em_full_kernel.cc"
_TARGETS = {
    np.dtype(np.float64): ("gaussmix_em_full_statistics_f64", "GaussmixEmFullStatisticsF64"),
    np.dtype(np.float32): ("gaussmix_em_full_statistics_f32", "GaussmixEmFullStatisticsF32"),
}
_OFF = ("0", "false", "no", "off")

_lock = threading.Lock()
# "library": the loaded kernel (None when unavailable), "reason": why it is unavailable
_state: dict = {}


class NativeBuildWarning(UserWarning):
    """The compiled E-step kernel could not be built; EM falls back to XLA (slower)."""


class _CompilerError(OSError):
    """The compiler ran and failed (another cache folder would not help)."""


def enabled() -> bool:
    """False when the environment variable ``GAUSSMIX_NATIVE`` is 0, false, no or off."""
    return os.environ.get("GAUSSMIX_NATIVE", "1").strip().lower() not in _OFF


def _compiler() -> list[str]:
    if os.environ.get("CXX"):
        return shlex.split(os.environ["CXX"])
    for name in ("c++", "g++", "clang++"):
        if shutil.which(name):
            return [name]
    raise OSError("no C++ compiler found (set CXX, or install g++ or clang++)")


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


def _cache_dirs() -> list[Path]:
    """Where the library may be cached, in order: ``$GAUSSMIX_CACHE_DIR`` when set, else
    the user's cache folder, then (read-only homes) a folder of this user under /tmp."""
    if os.environ.get("GAUSSMIX_CACHE_DIR"):
        return [Path(os.environ["GAUSSMIX_CACHE_DIR"])]
    user = os.getuid() if hasattr(os, "getuid") else getpass.getuser()
    fallback = Path(tempfile.gettempdir()) / f"gaussmix-{user}"
    try:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    except RuntimeError:  # no home folder known
        return [fallback]
    return [base / "gaussmix", fallback]


def _compile(compiler: list[str], flags: list[str], source: bytes, library: Path) -> None:
    """Compile into a temporary folder beside ``library`` and rename the result into
    place, so that no half-written library is ever loaded (concurrent builds each write
    their own; the last rename wins)."""
    library.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=library.parent) as scratch:
        source_path = Path(scratch) / SOURCE
        source_path.write_bytes(source)
        output = Path(scratch) / library.name
        result = subprocess.run(
            [*compiler, *flags, "-o", str(output), str(source_path)],
            capture_output=True,
            text=True,
            timeout=600,
        )
        if result.returncode != 0:
            tail = "\n".join(result.stderr.strip().splitlines()[-10:])
            raise _CompilerError(f"{' '.join(compiler)} failed (exit {result.returncode}):\n{tail}")
        os.replace(output, library)


def _build() -> Path:
    """The shared library for this source, compiler, flags and jaxlib (named by their hash):
    from the first cache folder that has it, else compiled into the first that can be
    written."""
    source = resources.files("gaussmix.inference").joinpath(SOURCE).read_bytes()
    compiler, flags = _compiler(), _flags()
    version = subprocess.run(
        [*compiler, "--version"], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    identity = [version, " ".join([*compiler, *flags]), jaxlib.__version__]
    key = hashlib.sha256(b"\0".join([source, *(part.encode() for part in identity)]))
    name = f"em_full_kernel-{key.hexdigest()[:16]}.so"
    candidates = [directory / name for directory in _cache_dirs()]
    for library in candidates:
        if library.exists():
            return library
    errors = []
    for library in candidates:
        try:
            _compile(compiler, flags, source, library)
            return library
        except _CompilerError:
            raise
        except OSError as error:  # a folder that cannot be written: try the next
            errors.append(f"{library.parent}: {error}")
    raise OSError(f"no writable cache folder ({'; '.join(errors)})")


def _open(library: Path) -> ctypes.CDLL:
    """Load ``library``; one that cannot be loaded (a damaged cache file) is rebuilt once."""
    try:
        return ctypes.CDLL(str(library))
    except OSError:
        library.unlink(missing_ok=True)
        return ctypes.CDLL(str(_build()))


def _load() -> ctypes.CDLL | None:
    """The registered kernel library, built on the first call; None when unavailable."""
    with _lock:
        if "library" not in _state:
            try:
                library = _open(_build())
                for target, symbol in _TARGETS.values():
                    handler = jax.ffi.pycapsule(getattr(library, symbol))
                    jax.ffi.register_ffi_target(target, handler, platform="cpu")
                _state.update(library=library, reason=None)
            except Exception as error:  # an optional speed-up: any failure leaves EM in XLA
                _state.update(library=None, reason=f"{type(error).__name__}: {error}")
                warnings.warn(
                    "gaussmix could not build its compiled CPU kernel for full-covariance EM, "
                    f"so EM uses XLA's (slower) path: {error}. Install a C++ compiler or set "
                    "CXX to one; GAUSSMIX_NATIVE=0 skips the build.",
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
    target, _ = _TARGETS[np.dtype(x.dtype)]
    shapes = (
        jax.ShapeDtypeStruct((natural.shape[1], natural.shape[0]), x.dtype),
        jax.ShapeDtypeStruct((), x.dtype),
    )
    return jax.ffi.ffi_call(target, shapes, vmap_method="sequential")(x, weight, natural)
