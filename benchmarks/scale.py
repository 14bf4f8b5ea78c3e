"""Scaling of the EM back end: time per iteration against N, out-of-core memory, devices.

Three measurements, printed as tables (numbers go to BENCHMARKS.md):

1. In-memory EM (:func:`gaussmix.inference.em.fit_em`), D = 8, K = 8, diag and full:
   seconds per iteration for N = 1e4 ... ``--max-n`` rows, as
   ``(t(max_iter=6) - t(max_iter=1)) / 5`` from a fixed start (no k-means, ``tol=0``),
   each after a compiling warm-up, so compilation, transfer and setup cancel out.
   Linear cost shows as a constant time per row.
2. Out-of-core exact EM (:func:`gaussmix.inference.streaming.fit_em_chunked`) of a
   ``--file-gb`` GB float64 ``.npy`` file under /tmp (deleted afterwards): peak resident
   memory of the fitting process (``resource.getrusage``, in a subprocess) and seconds
   per pass.
3. Multi-device EM (:func:`gaussmix.inference.shard.fit_em_sharded`) on 1 and 2 CPU
   devices (a subprocess with ``XLA_FLAGS=--xla_force_host_platform_device_count=2``,
   the two measured alternately): seconds per iteration and the speedup.

The machine's load average is printed with each part: on a shared machine the other
users' work inflates the times.

Run: ``.venv/bin/python benchmarks/scale.py`` (``--max-n 1e6 --file-gb 1`` for a
quick run; ``--skip-out-of-core`` / ``--skip-devices`` to leave parts out).
"""

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

N_FEATURES = 8
N_COMPONENTS = 8


def cpu_name() -> str:
    try:
        output = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        for line in output.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def mixture_truth(seed: int = 0):
    rng = np.random.default_rng(seed)
    means = rng.normal(0.0, 4.0, (N_COMPONENTS, N_FEATURES))
    scales = rng.uniform(0.5, 1.5, (N_COMPONENTS, N_FEATURES))
    return means, scales


def sample(n_rows: int, seed: int):
    means, scales = mixture_truth()
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, N_COMPONENTS, n_rows)
    return means[labels] + scales[labels] * rng.standard_normal((n_rows, N_FEATURES))


def start(covariance_type: str) -> dict:
    """A fixed start near the truth (so every iteration does the same work)."""
    means, scales = mixture_truth()
    variances = (1.2 * scales) ** 2
    precisions = 1.0 / variances
    if covariance_type == "full":
        precisions = np.stack([np.diag(p) for p in precisions])
    return {
        "weights_init": np.full(N_COMPONENTS, 1.0 / N_COMPONENTS),
        "means_init": means + 0.3,
        "precisions_init": precisions,
    }


# ---------------------------------------------------------------------------------------
# 1. time per iteration against N


def per_iteration(fit, repeats: int) -> float:
    """(t(6 iterations) - t(1 iteration)) / 5, each the fastest of ``repeats`` runs taken
    alternately after a compiling warm-up."""
    fit(1)
    fit(6)
    times = {1: [], 6: []}
    for _ in range(repeats):
        for max_iter in (1, 6):
            begin = time.perf_counter()
            fit(max_iter)
            times[max_iter].append(time.perf_counter() - begin)
    return max(min(times[6]) - min(times[1]), 0.0) / 5


def scaling_table(max_n: float) -> list[dict]:
    import jax

    from gaussmix.inference import em

    rows = []
    sizes = [n for n in (10**4, 10**5, 10**6, 10**7, 10**8) if n <= max_n]
    for n_rows in sizes:
        x = jax.numpy.asarray(sample(n_rows, seed=1))
        row = {"n": n_rows}
        for covariance_type in ("diag", "full"):
            inits = start(covariance_type)

            def fit(max_iter, x=x, covariance_type=covariance_type, inits=inits):
                result = em.fit_em(
                    x,
                    n_components=N_COMPONENTS,
                    covariance_type=covariance_type,
                    max_iter=max_iter,
                    tol=0.0,
                    **inits,
                )
                return jax.block_until_ready(result.params)

            row[covariance_type] = per_iteration(fit, repeats=5 if n_rows < 10**6 else 2)
        rows.append(row)
        print(
            f"{n_rows:>10,d}  diag {row['diag']:9.4f} s/iter "
            f"({row['diag'] / n_rows * 1e9:7.1f} ns/row)   full {row['full']:9.4f} s/iter "
            f"({row['full'] / n_rows * 1e9:7.1f} ns/row)",
            flush=True,
        )
    return rows


# ---------------------------------------------------------------------------------------
# 2. out-of-core


def write_npy(path: str, gigabytes: float) -> int:
    """A float64 (N, 8) .npy file of about ``gigabytes`` GB written chunk by chunk
    through plain file writes (no mapping, so this process stays small too)."""
    n_rows = int(gigabytes * 1e9) // (N_FEATURES * 8)
    chunk = 1_000_000
    with open(path, "wb") as handle:
        header = {"descr": "<f8", "fortran_order": False, "shape": (n_rows, N_FEATURES)}
        np.lib.format.write_array_header_2_0(handle, header)
        for index, begin in enumerate(range(0, n_rows, chunk)):
            handle.write(sample(min(chunk, n_rows - begin), seed=100 + index).tobytes())
    return n_rows


def peak_memory_mb() -> tuple[float, float]:
    """(ru_maxrss, VmHWM) of this process in MB; VmHWM is the high-water mark of this
    process image alone (ru_maxrss can carry the parent's peak across fork and exec)."""
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    hwm = float("nan")
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    hwm = int(line.split()[1]) / 1024
    except OSError:
        pass
    return maxrss, hwm


def out_of_core_child(path: str, max_iter: int) -> dict:
    import jax

    jax.config.update("jax_enable_x64", True)
    from gaussmix.inference import streaming

    # Timestamp the start of every pass over the file (instrumentation only).
    starts = []
    read = streaming.ChunkSource.__iter__

    def timed(source):
        starts.append(time.perf_counter())
        yield from read(source)

    streaming.ChunkSource.__iter__ = timed
    before = peak_memory_mb()
    begin = time.perf_counter()
    result = streaming.fit_em_chunked(
        path,
        n_components=N_COMPONENTS,
        covariance_type="diag",
        max_iter=max_iter,
        tol=0.0,
    )
    end = time.perf_counter()
    maxrss, hwm = peak_memory_mb()
    passes = [b - a for a, b in zip(starts, [*starts[1:], end], strict=True)]
    return {
        "seconds": end - begin,
        "survey_and_initialization_seconds": passes[0],
        "first_iteration_seconds": passes[1],
        "iteration_seconds": passes[2:],
        "n_iter": int(result.n_iter),
        "peak_rss_mb": maxrss,
        "peak_hwm_mb": hwm,
        "rss_before_fit_mb": before[1],
        "lower_bound": float(result.lower_bound),
    }


def out_of_core(gigabytes: float, max_iter: int) -> dict:
    handle, path = tempfile.mkstemp(suffix=".npy", dir="/tmp")
    os.close(handle)
    try:
        begin = time.perf_counter()
        n_rows = write_npy(path, gigabytes)
        written = time.perf_counter() - begin
        size = os.path.getsize(path) / 1e9
        completed = subprocess.run(
            [sys.executable, __file__, "--child", "out-of-core", path, str(max_iter)],
            capture_output=True,
            text=True,
            env=dict(os.environ, JAX_PLATFORMS="cpu"),
        )
        if completed.returncode != 0:
            raise RuntimeError(completed.stderr[-4000:])
        report = json.loads(completed.stdout.strip().splitlines()[-1])
    finally:
        os.remove(path)
    report.update(n=n_rows, file_gb=size, write_seconds=written)
    steady = report["iteration_seconds"] or [report["first_iteration_seconds"]]
    print(
        f"{size:.2f} GB file, N = {n_rows:,d}, exact EM diag K = 8, {report['n_iter']} "
        f"iterations in {report['seconds']:.1f} s: first pass + initialization "
        f"{report['survey_and_initialization_seconds']:.1f} s, first iteration (compiles) "
        f"{report['first_iteration_seconds']:.1f} s, then {np.mean(steady):.1f} s/iteration "
        f"({np.mean(steady) / n_rows * 1e9:.0f} ns/row)\n"
        f"peak resident memory of the fitting process: {report['peak_hwm_mb']:.0f} MB "
        f"(VmHWM; ru_maxrss {report['peak_rss_mb']:.0f} MB; {report['rss_before_fit_mb']:.0f}"
        " MB after importing JAX)",
        flush=True,
    )
    return report


# ---------------------------------------------------------------------------------------
# 3. devices


def devices_child(n_rows: int, repeats: int) -> dict:
    """Seconds per iteration on 1 and on 2 devices, measured alternately in one process
    (so that both see the same load on a shared machine)."""
    import jax

    jax.config.update("jax_enable_x64", True)
    from gaussmix.inference import shard

    x = sample(n_rows, seed=2)
    report = {"device_count": jax.device_count()}
    for covariance_type in ("diag", "full"):
        inits = start(covariance_type)

        def fit(max_iter, n_devices, covariance_type=covariance_type, inits=inits):
            result = shard.fit_em_sharded(
                x,
                n_components=N_COMPONENTS,
                covariance_type=covariance_type,
                max_iter=max_iter,
                tol=0.0,
                devices=n_devices,
                **inits,
            )
            return jax.block_until_ready(result.params)

        times = {(n, m): [] for n in (1, 2) for m in (1, 6)}
        for n, m in times:
            fit(m, n)  # compile
        for _ in range(repeats):
            for n, m in times:
                begin = time.perf_counter()
                fit(m, n)
                times[n, m].append(time.perf_counter() - begin)
        report[covariance_type] = {
            str(n): max(min(times[n, 6]) - min(times[n, 1]), 0.0) / 5 for n in (1, 2)
        }
    return report


def devices(n_rows: int) -> dict:
    env = dict(
        os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=2"
    )
    completed = subprocess.run(
        [sys.executable, __file__, "--child", "devices", str(n_rows), "3"],
        capture_output=True,
        text=True,
        env=env,
    )
    if completed.returncode != 0:
        raise RuntimeError(completed.stderr[-4000:])
    report = json.loads(completed.stdout.strip().splitlines()[-1])
    for covariance_type in ("diag", "full"):
        one, two = report[covariance_type]["1"], report[covariance_type]["2"]
        print(
            f"N = {n_rows:,d} {covariance_type}: 1 device {one:.4f} s/iter, 2 devices "
            f"{two:.4f} s/iter, speedup {one / two:.2f}x",
            flush=True,
        )
    return report


def load() -> str:
    return "load average {:.1f} {:.1f} {:.1f}".format(*os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-n", type=float, default=1e7, help="largest N of part 1")
    parser.add_argument("--file-gb", type=float, default=4.0, help="size of the part 2 file")
    parser.add_argument("--out-of-core-iterations", type=int, default=3)
    parser.add_argument("--devices-n", type=float, default=2e6, help="N of part 3")
    parser.add_argument("--skip-out-of-core", action="store_true")
    parser.add_argument("--skip-devices", action="store_true")
    parser.add_argument("--json", help="also write the numbers to this JSON file")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.child:
        kind, *rest = arguments.child
        if kind == "out-of-core":
            report = out_of_core_child(rest[0], int(rest[1]))
        else:
            report = devices_child(int(rest[0]), int(rest[1]))
        print(json.dumps(report))
        return
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    from importlib.metadata import version

    results = {"machine": cpu_name(), "cores": os.cpu_count(), "jax": version("jax")}
    print(f"machine: {results['machine']}, {results['cores']} cores; jax {results['jax']}; float64")
    if os.environ["JAX_PLATFORMS"] != "cpu":
        print(
            f"parts 1 and 2 on JAX_PLATFORMS={os.environ['JAX_PLATFORMS']}; part 3 on CPU devices"
        )
    # The out-of-core child starts first, from a parent that has not loaded JAX, so that
    # no inherited peak hides its own.
    if not arguments.skip_out_of_core:
        print(f"\n2. Out-of-core exact EM of a memory-mapped .npy file ({load()})")
        results["out_of_core"] = out_of_core(arguments.file_gb, arguments.out_of_core_iterations)
    import jax

    jax.config.update("jax_enable_x64", True)
    print(f"\n1. In-memory EM, D = 8, K = 8: seconds per iteration ({load()})")
    results["scaling"] = scaling_table(arguments.max_n)
    if not arguments.skip_devices:
        print(f"\n3. Multi-device EM on CPU devices ({load()})")
        results["devices"] = devices(int(arguments.devices_n))
    print(f"\nend ({load()})")
    if arguments.json:
        with open(arguments.json, "w") as handle:
            json.dump(results, handle, indent=2)


if __name__ == "__main__":
    main()
