"""EM benchmarks E1-E3 of issue 3: gaussmix against scikit-learn (and gmmx), one process.

Run from the repository root::

    .venv/bin/python benchmarks/em.py            # the issue's sizes (a few minutes)
    .venv/bin/python benchmarks/em.py --quick    # small sizes, a smoke test

* E1: full covariance, N = 100 000, D = 32, K = 16, 10 fixed iterations (tol = 0), float64,
  against scikit-learn; float32 against gmmx. Same initial parameters on every side.
* E2: diag, N = 1 000 000, D = 16, K = 32, 10 fixed iterations, float64.
* E3: full, N = 10 000, D = 8, K = 4, to convergence (tol = 1e-3) from the same start;
  gaussmix's compile time reported on its own.

On a CPU, full-covariance EM runs its E-step through the compiled kernel
(``gaussmix.inference.native``, built on first use and cached); its build time is reported
apart, and E1 is also timed through XLA's blocks alone (``GAUSSMIX_NATIVE=0``, in a
child process, since the choice is made when a fit is compiled).

Every side is timed after a warm-up call (gaussmix's compile time is measured apart), with
``jax.block_until_ready``; the best of ``--repeat`` runs is reported. Throughput is given
against the model of :math:`4 N K D^2` floating-point operations per full-covariance EM
iteration (E-step quadratic forms + M-step scatter matrices), next to this machine's
measured dense matrix-product rate. Peak memory of E1 is measured in a fresh subprocess.
"""

import argparse
import importlib.util
import json
import os
import platform
import resource
import subprocess
import sys
import time
import warnings

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from gaussmix import GaussianMixture  # noqa: E402
from gaussmix.inference import native  # noqa: E402
from gaussmix.inference.em import fit_em  # noqa: E402


def machine() -> str:
    model = platform.processor() or "unknown"
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    devices = ", ".join(str(d) for d in jax.devices())
    return f"{model}, {os.cpu_count()} logical CPUs, JAX devices: {devices}"


def best_time(function, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        jax.block_until_ready(function())
        times.append(time.perf_counter() - start)
    return min(times)


def gemm_rate(dtype, size: int = 2000, repeat: int = 3) -> dict:
    rng = np.random.default_rng(0)
    a = rng.normal(size=(size, size)).astype(dtype)
    flops = 2 * size**3
    numpy_time = best_time(lambda: a @ a, repeat)
    a_jax = jnp.asarray(a)
    product = jax.jit(lambda m: m @ m)
    product(a_jax).block_until_ready()
    jax_time = best_time(lambda: product(a_jax), repeat)
    return {"numpy": flops / numpy_time / 1e9, "jax": flops / jax_time / 1e9}


def mixture_data(n_samples, n_features, n_components, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=3.0, size=(n_components, n_features))
    labels = rng.integers(0, n_components, n_samples)
    return centres[labels] + rng.normal(size=(n_samples, n_features))


def starting_point(x, n_components, covariance_type, seed=1):
    """Initial parameters shared by every implementation: points as means, unit precisions."""
    rng = np.random.default_rng(seed)
    n_features = x.shape[1]
    precisions = {
        "full": np.stack([np.eye(n_features)] * n_components),
        "diag": np.ones((n_components, n_features)),
    }[covariance_type]
    return {
        "weights_init": np.full(n_components, 1.0 / n_components),
        "means_init": x[rng.choice(len(x), n_components, replace=False)],
        "precisions_init": precisions,
    }


def sklearn_fit(x, n_components, covariance_type, max_iter, tol, start):
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.mixture import GaussianMixture as SklearnGaussianMixture

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return SklearnGaussianMixture(
            n_components, covariance_type=covariance_type, max_iter=max_iter, tol=tol, **start
        ).fit(x)


def sklearn_best_time(args, repeat) -> float:
    """scikit-learn's best time with its default BLAS threads and with one BLAS thread
    (on a shared machine multithreaded OpenBLAS can lose), whichever is faster."""
    from threadpoolctl import threadpool_limits

    default = best_time(lambda: sklearn_fit(*args).means_, repeat)
    with threadpool_limits(limits=1, user_api="blas"):
        single = best_time(lambda: sklearn_fit(*args).means_, repeat)
    return min(default, single)


def gaussmix_fit(x, n_components, covariance_type, max_iter, tol, start):
    from gaussmix.inference.em import ConvergenceWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return GaussianMixture(
            n_components, covariance_type=covariance_type, max_iter=max_iter, tol=tol, **start
        ).fit(x)


def fixed_iterations(name, n_samples, n_features, n_components, covariance_type, repeat, rates):
    """E1 / E2: 10 iterations, tol = 0, estimator against estimator (both do the final
    E-step for the labels)."""
    x = mixture_data(n_samples, n_features, n_components)
    start = starting_point(x, n_components, covariance_type)
    args = (x, n_components, covariance_type, 10, 0.0, start)
    compile_start = time.perf_counter()
    gaussmix_fit(*args)
    first_call = time.perf_counter() - compile_start
    ours = best_time(lambda: gaussmix_fit(*args).means_, repeat)
    theirs = sklearn_best_time(args, 1)
    row = {
        "case": f"{name} {covariance_type} N={n_samples} D={n_features} K={n_components} float64",
        "gaussmix_e_step": e_step_path(covariance_type, np.float64),
        "gaussmix_s_per_iter": ours / 10,
        "sklearn_s_per_iter": theirs / 10,
        "speedup": theirs / ours,
        "gaussmix_compile_s": first_call - ours,
    }
    if covariance_type == "full":
        model = 4 * n_samples * n_components * n_features**2
        row["model_gflop_per_iter"] = model / 1e9
        row["gaussmix_gflops"] = model / (ours / 10) / 1e9
        row["sklearn_gflops"] = model / (theirs / 10) / 1e9
        row["machine_gemm_gflops_float64"] = rates["float64"]["jax"]
    return row, x, start


def e_step_path(covariance_type, dtype) -> str:
    if covariance_type == "full" and native.usable(dtype):
        return "compiled kernel"
    return "XLA blocks"


def xla_only_child(n_samples, n_features, n_components, repeat) -> None:
    """Child process (GAUSSMIX_NATIVE=0): E1's gaussmix time per iteration, XLA only."""
    x = mixture_data(n_samples, n_features, n_components)
    start = starting_point(x, n_components, "full")
    args = (x, n_components, "full", 10, 0.0, start)
    gaussmix_fit(*args)
    print(
        json.dumps(
            {
                "path": e_step_path("full", np.float64),
                "s_per_iter": best_time(lambda: gaussmix_fit(*args).means_, repeat) / 10,
            }
        )
    )


def e1_through_xla(e1_row, n_samples, n_features, n_components, repeat) -> dict:
    environment = {**os.environ, "GAUSSMIX_NATIVE": "0"}
    command = [
        sys.executable,
        __file__,
        "--xla-child",
        str(n_samples),
        str(n_features),
        str(n_components),
        "--repeat",
        str(repeat),
    ]
    output = subprocess.run(command, capture_output=True, text=True, check=True, env=environment)
    child = json.loads(output.stdout.strip().splitlines()[-1])
    return {
        "case": "E1 gaussmix through XLA's blocks only (GAUSSMIX_NATIVE=0, own process)",
        "gaussmix_e_step": child["path"],
        "gaussmix_s_per_iter": child["s_per_iter"],
        "speedup_vs_sklearn": e1_row["sklearn_s_per_iter"] / child["s_per_iter"],
        "kernel_speedup": child["s_per_iter"] / e1_row["gaussmix_s_per_iter"],
    }


def e1_float32_against_gmmx(x, start, repeat):
    """float32 on both sides, with 64-bit types off while they run (gmmx needs that)."""
    with jax.enable_x64(False):
        return _e1_float32_against_gmmx(x, start, repeat)


def _e1_float32_against_gmmx(x, start, repeat):
    from gmmx import EMFitter, GaussianMixtureModelJax

    x32 = jnp.asarray(x, jnp.float32)
    n_components = start["weights_init"].shape[0]
    covariances = np.linalg.inv(start["precisions_init"]).astype(np.float32)
    gmm = GaussianMixtureModelJax.from_squeezed(
        means=jnp.asarray(start["means_init"], jnp.float32),
        covariances=jnp.asarray(covariances),
        weights=jnp.asarray(start["weights_init"], jnp.float32),
    )
    fitter = EMFitter(max_iter=10, tol=0.0)
    fitter.fit(x=x32, gmm=gmm)  # compile
    theirs = best_time(lambda: fitter.fit(x=x32, gmm=gmm).gmm.means, repeat)
    start32 = {key: np.asarray(value, np.float32) for key, value in start.items()}

    def ours_fit():
        return fit_em(x32, n_components=n_components, max_iter=10, tol=0.0, **start32).params[
            "means"
        ]

    ours_fit()
    ours = best_time(ours_fit, repeat)
    return {
        "case": f"E1 full N={x.shape[0]} D={x.shape[1]} K={n_components} float32 vs gmmx",
        "gaussmix_e_step": e_step_path("full", np.float32),
        "gaussmix_s_per_iter": ours / 10,
        "gmmx_s_per_iter": theirs / 10,
        "speedup": theirs / ours,
    }


def e3_to_convergence(n_samples, n_features, n_components, repeat):
    x = mixture_data(n_samples, n_features, n_components, seed=3)
    start = starting_point(x, n_components, "full")
    args = (x, n_components, "full", 100, 1e-3, start)
    first = time.perf_counter()
    model = gaussmix_fit(*args)
    first_call = time.perf_counter() - first
    ours = best_time(lambda: gaussmix_fit(*args).means_, repeat)
    reference = sklearn_fit(*args)
    theirs = sklearn_best_time(args, repeat)
    return {
        "case": f"E3 full N={n_samples} D={n_features} K={n_components} to convergence",
        "gaussmix_e_step": e_step_path("full", np.float64),
        "gaussmix_s": ours,
        "sklearn_s": theirs,
        "speedup": theirs / ours,
        "gaussmix_compile_s": first_call - ours,
        "n_iter": f"{model.n_iter_} / {reference.n_iter_}",
    }


def peak_resident_mb() -> float:
    """High-water mark of this process's resident memory (VmHWM, reset by exec; the
    ru_maxrss of a spawned child on Linux can still include its parent's)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def peak_memory_child(n_samples, n_features, n_components) -> None:
    """Child process: one E1 fit; print peak resident memory before and after, in MB."""
    x = mixture_data(n_samples, n_features, n_components)
    start = starting_point(x, n_components, "full")
    jnp.zeros(1).block_until_ready()
    before = peak_resident_mb()
    gaussmix_fit(x, n_components, "full", 10, 0.0, start)
    print(json.dumps({"before_mb": before, "peak_mb": peak_resident_mb()}))


def peak_memory(n_samples, n_features, n_components) -> dict:
    output = subprocess.run(
        [
            sys.executable,
            __file__,
            "--peak-memory-child",
            str(n_samples),
            str(n_features),
            str(n_components),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return json.loads(output.strip().splitlines()[-1])


def print_table(rows) -> None:
    for row in rows:
        print(f"\n{row['case']}")
        for key, value in row.items():
            if key == "case":
                continue
            text = f"{value:.4g}" if isinstance(value, float) else str(value)
            print(f"  {key:32s} {text}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke test)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--cases", default="E1,E2,E3", help="comma-separated subset of E1,E2,E3")
    parser.add_argument("--peak-memory-child", nargs=3, type=int, help=argparse.SUPPRESS)
    parser.add_argument("--xla-child", nargs=3, type=int, help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.peak_memory_child:
        peak_memory_child(*arguments.peak_memory_child)
        return
    if arguments.xla_child:
        xla_only_child(*arguments.xla_child, arguments.repeat)
        return
    scale = 10 if arguments.quick else 1
    print(f"machine: {machine()}")
    print(f"jax {jax.__version__}, float64 enabled, {os.cpu_count()} CPUs (shared VM)")
    print(f"load average before: {os.getloadavg()}")
    build_start = time.perf_counter()
    if native.usable(np.float64):
        print(
            f"compiled E-step kernel ready in {time.perf_counter() - build_start:.1f} s "
            "(built on first use on this machine, then loaded from the cache)"
        )
    else:
        print(f"compiled E-step kernel unavailable: {native._state.get('reason') or 'off'}")
    rates = {"float64": gemm_rate(np.float64), "float32": gemm_rate(np.float32)}
    print(f"dense GEMM 2000x2000 GFLOP/s: {json.dumps(rates)}")
    rows = []
    cases = set(arguments.cases.split(","))
    if "E1" in cases:
        e1, x, start = fixed_iterations(
            "E1", 100_000 // scale, 32, 16, "full", arguments.repeat, rates
        )
        rows.append(e1)
        rows.append(e1_through_xla(e1, 100_000 // scale, 32, 16, arguments.repeat))
        if importlib.util.find_spec("gmmx") is None:
            print("gmmx is not installed: E1 float32 against gmmx skipped")
        else:
            rows.append(e1_float32_against_gmmx(x, start, arguments.repeat))
        memory = peak_memory(100_000 // scale, 32, 16)
        rows.append({"case": "E1 peak memory (fresh process, MB)", **memory})
    if "E2" in cases:
        e2, _, _ = fixed_iterations(
            "E2", 1_000_000 // scale, 16, 32, "diag", arguments.repeat, rates
        )
        rows.append(e2)
    if "E3" in cases:
        rows.append(
            e3_to_convergence(
                10_000 // scale if arguments.quick else 10_000, 8, 4, arguments.repeat
            )
        )
    print_table(rows)
    print(f"\nload average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
