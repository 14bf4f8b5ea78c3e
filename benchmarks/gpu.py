"""GPU benchmarks of issues 3 and 5, one prepared script for a machine with a CUDA device.

Run from the repository root on the GPU machine (gaussmix importable, jax with CUDA)::

    python benchmarks/gpu.py             # E1, E2 (float64 and float32), P3 on 100 000 spectra
    python benchmarks/gpu.py --quick     # small sizes, a smoke test (also runs on a CPU)

* E1 (full, N = 100 000, D = 32, K = 16) and E2 (diag, N = 1 000 000, D = 16, K = 32):
  10 fixed EM iterations (tol = 0) from the same start as ``benchmarks/em.py``; gaussmix's
  ``fit_em`` on the default JAX device in float64 and float32, against scikit-learn on the
  host CPU (all its cores) in float64. The time includes moving the data to the device
  and the result back.
* P3 at scale: 100 000 spectra as ``benchmarks/peaks.py`` generates them, fitted by one
  ``fit_peaks`` call on the device (float64 with curve_fit's tolerance, float32 with the
  default), for several ``batch_size`` slot counts; ``curve_fit`` in a Python loop on a
  subset on the host for the ratio.

Every gaussmix time is the best of ``--repeat`` runs after a compiling call (reported
apart).
"""

import argparse
import os
import sys
import time
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import em as em_benchmark  # enables float64
import jax
import jax.numpy as jnp
import numpy as np
import peaks as peaks_benchmark

from gaussmix.inference.em import ConvergenceWarning, fit_em


def gaussmix_em_seconds(x, start, covariance_type, dtype, repeat):
    """(first call, best steady call) seconds of 10 EM iterations of fit_em in ``dtype``."""
    n_components = start["weights_init"].shape[0]
    x_host = np.asarray(x, dtype)
    start_host = {key: np.asarray(value, dtype) for key, value in start.items()}

    def run():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            result = fit_em(
                x_host,
                n_components=n_components,
                covariance_type=covariance_type,
                max_iter=10,
                tol=0.0,
                **start_host,
            )
        return np.asarray(result.params["means"])

    begin = time.perf_counter()
    first_means = run()
    first = time.perf_counter() - begin
    return first, em_benchmark.best_time(run, repeat), first_means


def em_case(name, n_samples, n_features, n_components, covariance_type, repeat):
    x = em_benchmark.mixture_data(n_samples, n_features, n_components)
    start = em_benchmark.starting_point(x, n_components, covariance_type)
    sklearn_model = None

    def sklearn_run():
        nonlocal sklearn_model
        sklearn_model = em_benchmark.sklearn_fit(x, n_components, covariance_type, 10, 0.0, start)
        return sklearn_model.means_

    sklearn_seconds = em_benchmark.best_time(sklearn_run, 1)
    print(f"\n{name} {covariance_type} N={n_samples} D={n_features} K={n_components}, 10 iter")
    print(f"  scikit-learn float64 (host CPU)   {sklearn_seconds / 10:10.5f} s/iter")
    for dtype in (np.float64, np.float32):
        first, steady, means = gaussmix_em_seconds(x, start, covariance_type, dtype, repeat)
        difference = np.max(np.abs(means - sklearn_model.means_))
        print(
            f"  gaussmix {np.dtype(dtype).name:7s} ({jax.devices()[0].platform})      "
            f"{steady / 10:10.5f} s/iter  {sklearn_seconds / steady:7.1f}x scikit-learn  "
            f"(first call {first:.1f} s; max |means - sklearn| {difference:.1e})"
        )


def peaks_case(n_spectra, scipy_subset, batch_sizes, repeat):
    x, y, truth, start = peaks_benchmark.generate(n_spectra)
    truth_rss = np.sum((y - peaks_benchmark.curve(x, truth.T)) ** 2, axis=1)
    scipy_seconds, scipy_rss, _ = peaks_benchmark.scipy_fits(
        x, y[:scipy_subset], start[:scipy_subset]
    )
    scipy_rate = scipy_subset / scipy_seconds
    print(f"\nP3 at scale: {n_spectra} spectra x {peaks_benchmark.N_POINTS} points")
    print(f"  curve_fit loop (host CPU, {scipy_subset} spectra)   {scipy_rate:10.1f} fits/s")
    for batch_size in batch_sizes:
        for label, tolerance, x64 in (
            ("float64", peaks_benchmark.CURVE_FIT_TOLERANCE, True),
            ("float32", None, False),
        ):
            with jax.enable_x64(x64):

                def run(tolerance=tolerance, batch_size=batch_size):
                    init = {n: start[:, i] for i, n in enumerate(peaks_benchmark.NAMES)}
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        fit = peaks_benchmark.fit_peaks(
                            x,
                            y,
                            peaks=("gaussian",) * 3,
                            baseline="linear",
                            init=init,
                            tol=tolerance,
                            batch_size=batch_size,
                        )
                    return np.asarray(fit.rss), np.asarray(fit.converged)

                begin = time.perf_counter()
                run()
                first = time.perf_counter() - begin
                steady = em_benchmark.best_time(run, repeat)
                rss, converged = run()
            near = np.mean(rss <= truth_rss * (1 + 1e-6))
            good = np.isfinite(scipy_rss) & (scipy_rss <= truth_rss[:scipy_subset])
            relative = np.abs(rss[:scipy_subset] - scipy_rss)[good] / scipy_rss[good]
            print(
                f"  gaussmix {label} batch_size={batch_size:<6d} {n_spectra / steady:10.1f} "
                f"fits/s  {n_spectra / steady / scipy_rate:7.1f}x curve_fit  (first call "
                f"{first:.1f} s; converged {np.mean(converged):.1%}, near the true peaks "
                f"{near:.1%}, RSS within 1e-6 of curve_fit's on {np.mean(relative <= 1e-6):.1%}"
                " where curve_fit found them)"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke test)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--skip-em", action="store_true")
    parser.add_argument("--skip-peaks", action="store_true")
    args = parser.parse_args()
    scale = 10 if args.quick else 1
    print(f"machine: {em_benchmark.machine()}")
    print(f"jax {jax.__version__}; jnp default float: {jnp.zeros(1).dtype}")
    if not args.skip_em:
        em_case("E1", 100_000 // scale, 32, 16, "full", args.repeat)
        em_case("E2", 1_000_000 // scale, 16, 32, "diag", args.repeat)
    if not args.skip_peaks:
        batch_sizes = (32, 256) if args.quick else (2048, 16384)
        peaks_case(100_000 // scale**2, 300 // scale, batch_sizes, args.repeat)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
