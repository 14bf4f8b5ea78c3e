"""Extreme deconvolution: gaussmix's ``fit_em(measurement_covariances=S)`` against astroML's
``XDGMM`` (NumPy) on the same data, from the same start (issue 19, item 2).

Run from the repository root (astroML is in the test extra)::

    .venv/bin/python benchmarks/deconvolution.py                       # both datasets
    .venv/bin/python benchmarks/deconvolution.py --repeats 3 --datasets small

Datasets (drawn from a fixed seed in every process): "small" 1 500 points in 2-D, K = 2
(the issue's case), and "large" 10 000 points in 5-D, K = 3; each row has its own full
error covariance (a random A A^T, errors of the order of the clusters' spread). Both
tools start from the same weights, means and covariances and run

- the same fixed number of EM iterations (``--iterations``, default 300 small, 30 large;
  astroML: ``XDGMM._EMstep`` that many times, gaussmix: ``max_iter`` with ``tol=0``), and
- to convergence under astroML's rule (stop when the total log-likelihood gains less than
  1e-5; gaussmix's ``tol`` is on the mean per row: 1e-5 / N), at most 1 000 iterations,

and the final observed-data log-likelihood of both fits is computed by astroML's
``XDGMM.logL`` (NumPy, an independent evaluation). Every measurement is a fresh process.
gaussmix's first call (compilation included, an empty ``GAUSSMIX_CACHE_DIR``) and second
call (same shapes: the compiled program) are timed separately, wall and CPU seconds;
repeats are interleaved and medians printed with the ratio astroML / gaussmix.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

DATASETS = {"small": (1500, 2, 2, 300), "large": (10000, 5, 3, 30)}

CHILD = r"""
import json, sys, time, warnings
import numpy as np
n, d, k, iterations, tool, mode = sys.argv[1:7]
n, d, k, iterations = int(n), int(d), int(k), int(iterations)
rng = np.random.default_rng(0)
centres = rng.normal(scale=4.0, size=(k, d))
labels = rng.integers(0, k, n)
shapes = rng.normal(size=(k, d, d)) * 0.7
x = centres[labels] + np.einsum("nij,nj->ni", shapes[labels], rng.normal(size=(n, d)))
factor = rng.normal(size=(n, d, d)) * 0.5
noise = factor @ np.swapaxes(factor, -1, -2) + 1e-3 * np.eye(d)
w = x + np.einsum("nij,nj->ni", np.linalg.cholesky(noise), rng.normal(size=(n, d)))
start_rng = np.random.default_rng(1)
alpha = np.full(k, 1.0 / k)
mu = w[start_rng.choice(n, k, replace=False)]
V = np.stack([np.cov(w.T)] * k)
converge = mode == "converge"
from astroML.density_estimation import XDGMM
def astroml_logl(a, m, v):
    model = XDGMM(k)
    model.alpha, model.mu, model.V = a, m, v
    return float(model.logL(w, noise))
if tool == "astroml":
    model = XDGMM(k)
    model.alpha, model.mu, model.V = alpha.copy(), mu.copy(), V.copy()
    begin, cpu = time.perf_counter(), time.process_time()
    done = 0
    if converge:
        previous = model.logL(w, noise)
        for _ in range(1000):  # XDGMM.fit's loop and rule
            model._EMstep(w, noise)
            done += 1
            current = model.logL(w, noise)
            if current < previous + 1e-5:
                break
            previous = current
    else:
        for _ in range(iterations):
            model._EMstep(w, noise)
            done += 1
    wall, cpu = time.perf_counter() - begin, time.process_time() - cpu
    print(json.dumps({"wall": wall, "cpu": cpu, "n_iter": done,
                      "logL": astroml_logl(model.alpha, model.mu, model.V)}))
else:
    import jax
    jax.config.update("jax_enable_x64", True)
    from gaussmix.inference.em import fit_em
    kwargs = dict(n_components=k, weights_init=alpha, means_init=mu,
                  precisions_init=np.linalg.inv(V), reg_covar=0.0,
                  measurement_covariances=noise)
    if converge:
        kwargs.update(max_iter=1000, tol=1e-5 / n)
    else:
        kwargs.update(max_iter=iterations, tol=0.0)
    calls = []
    for _ in range(2):
        begin, cpu = time.perf_counter(), time.process_time()
        result = fit_em(w, **kwargs)
        jax.block_until_ready(result.params)
        calls.append((time.perf_counter() - begin, time.process_time() - cpu))
    p = {key: np.asarray(value) for key, value in result.params.items()}
    print(json.dumps({"first_wall": calls[0][0], "first_cpu": calls[0][1],
                      "wall": calls[1][0], "cpu": calls[1][1], "n_iter": int(result.n_iter),
                      "logL": astroml_logl(p["weights"], p["means"], p["covariances"])}))
"""


def run_child(arguments: list[str], cache: str) -> dict:
    env = dict(os.environ, GAUSSMIX_CACHE_DIR=cache)
    result = subprocess.run(
        [sys.executable, "-c", CHILD, *arguments],
        capture_output=True,
        text=True,
        env=env,
        timeout=7200,
    )
    if result.returncode != 0:
        raise RuntimeError(result.stderr[-3000:])
    return json.loads(result.stdout.strip().splitlines()[-1])


def median(runs: list[dict], key: str) -> float:
    return statistics.median(run[key] for run in runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--iterations", type=int, default=None, help="fixed-iteration runs")
    parser.add_argument("--modes", nargs="+", default=["fixed", "converge"])
    arguments = parser.parse_args()
    for name in arguments.datasets:
        n, d, k, iterations = DATASETS[name]
        iterations = arguments.iterations or iterations
        for mode in arguments.modes:
            runs = {"astroml": [], "gaussmix": []}
            for _ in range(arguments.repeats):
                for tool in runs:
                    with tempfile.TemporaryDirectory() as cache:  # cold first call
                        runs[tool].append(
                            run_child([str(n), str(d), str(k), str(iterations), tool, mode], cache)
                        )
            a, g = runs["astroml"], runs["gaussmix"]
            label = f"{name} ({n} x {d}, K = {k}), " + (
                f"{iterations} iterations" if mode == "fixed" else "to convergence"
            )
            print(f"\n{label}, medians of {arguments.repeats} fresh processes")
            print(
                f"  astroML XDGMM : {median(a, 'wall'):8.3f} s wall {median(a, 'cpu'):8.3f} s CPU"
                f"  {1e3 * median(a, 'wall') / median(a, 'n_iter'):8.3f} ms/iter"
                f"  n_iter {median(a, 'n_iter'):.0f}  logL {median(a, 'logL'):.6f}"
            )
            print(
                f"  gaussmix warm : {median(g, 'wall'):8.3f} s wall {median(g, 'cpu'):8.3f} s CPU"
                f"  {1e3 * median(g, 'wall') / median(g, 'n_iter'):8.3f} ms/iter"
                f"  n_iter {median(g, 'n_iter'):.0f}  logL {median(g, 'logL'):.6f}"
            )
            print(
                f"  gaussmix first: {median(g, 'first_wall'):8.3f} s wall "
                f"{median(g, 'first_cpu'):8.3f} s CPU (compilation included, cold cache)"
            )
            print(
                f"  ratio astroML / gaussmix: warm {median(a, 'wall') / median(g, 'wall'):.1f}x "
                f"wall, {median(a, 'cpu') / median(g, 'cpu'):.1f}x CPU; first call "
                f"{median(a, 'wall') / median(g, 'first_wall'):.1f}x wall; logL gaussmix - "
                f"astroML {median(g, 'logL') - median(a, 'logL'):+.3e}"
            )


if __name__ == "__main__":
    main()
