"""BayesianGaussianMixture against scikit-learn's, one process (issue 22, item 4).

Run from the repository root::

    .venv/bin/python benchmarks/bayesian_mixture.py            # N = 100 000, D = 16, K = 20
    .venv/bin/python benchmarks/bayesian_mixture.py --quick    # N = 10 000, D = 8, K = 10

Full covariances, the Dirichlet process, float64, the same start on both sides
(gaussmix's k-means start, given to scikit-learn through its ``_set_parameters``) and the
same fixed number of iterations (``tol=0``). gaussmix is timed after a warm-up call (its
compile time is reported apart), with ``jax.block_until_ready``; scikit-learn's ``fit``
also runs one last E-step for its labels, so its time is divided by ``iterations + 1``
E-steps at most (reported as is: per iteration = total / iterations). Runs alternate
between the two; medians of ``--repeat`` runs, wall and process CPU time, and the load
average before and after, since the machine may be shared.
"""

import argparse
import os
import platform
import subprocess
import time
import warnings

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402

from gaussmix import BayesianGaussianMixture  # noqa: E402
from gaussmix.inference import native  # noqa: E402
from gaussmix.inference.em import variational  # noqa: E402


def machine() -> str:
    model = platform.processor() or "unknown"
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} logical CPUs, JAX devices: {jax.devices()}"


def make_data(n_samples: int, n_features: int, n_clusters: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(0.0, 6.0, (n_clusters, n_features))
    labels = rng.integers(0, n_clusters, n_samples)
    return centres[labels] + rng.normal(size=(n_samples, n_features))


def timed(function):
    wall, cpu = time.perf_counter(), time.process_time()
    result = function()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="N = 10 000, D = 8, K = 10")
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    n_samples, n_features, n_components = (10_000, 8, 10) if args.quick else (100_000, 16, 20)
    from sklearn.mixture import BayesianGaussianMixture as ScikitLearn

    print(machine())
    print(f"native full-covariance kernel: {native.status()}")
    print(f"load average before: {os.getloadavg()}")
    x = make_data(n_samples, n_features, n_components // 2)
    options = dict(n_components=n_components, covariance_type="full", tol=0.0, random_state=0)
    start = BayesianGaussianMixture(max_iter=0, **options).fit(x)
    posterior = start._posterior(np.float64)
    config = variational.VariationalConfig(n_components, "full", "dirichlet_process")
    prior = variational.default_prior(x, config)
    parameters = (
        np.asarray(start.weight_concentration_),
        start.mean_precision_,
        start.means_,
        start.degrees_of_freedom_,
        start.covariances_,
        start.precisions_cholesky_,
    )

    class Started(ScikitLearn):
        def _initialize_parameters(self, X, random_state, xp=None):
            self._set_parameters(parameters)

    def run_gaussmix():
        _, _, history = variational.fit(
            posterior, x, None, prior, 1e-6, 0.0, config, max_iter=args.iterations
        )
        return jax.block_until_ready(history)

    def run_scikit_learn():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return Started(max_iter=args.iterations, **options).fit(x).lower_bounds_

    _, compile_wall, compile_cpu = timed(run_gaussmix)
    print(
        f"N={n_samples} D={n_features} K={n_components} full, dirichlet_process, float64, "
        f"{args.iterations} iterations; gaussmix first call (compile + run) "
        f"{compile_wall:.2f} s wall, {compile_cpu:.2f} s CPU"
    )
    rows = {"gaussmix": [], "scikit-learn": []}
    bounds = {}
    for _ in range(args.repeat):
        for name, run in (("gaussmix", run_gaussmix), ("scikit-learn", run_scikit_learn)):
            bound, wall, cpu = timed(run)
            rows[name].append((wall, cpu))
            bounds[name] = np.ravel(np.asarray(bound, np.float64))
    per_iteration = {}
    for name, values in rows.items():
        wall = np.median([v[0] for v in values]) / args.iterations
        cpu = np.median([v[1] for v in values]) / args.iterations
        per_iteration[name] = wall
        print(
            f"{name:>13}: {1e3 * wall:9.2f} ms/iteration wall, {1e3 * cpu:9.2f} ms CPU "
            f"(median of {args.repeat}; runs: " + ", ".join(f"{v[0]:.2f}s" for v in values) + ")"
        )
    print(
        f"speed-up per iteration (wall): {per_iteration['scikit-learn'] / per_iteration['gaussmix']:.1f}x"
    )
    relative = np.max(
        np.abs(bounds["gaussmix"] - bounds["scikit-learn"]) / np.abs(bounds["scikit-learn"])
    )
    print(f"largest relative difference of the lower bounds over the iterations: {relative:.1e}")
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
