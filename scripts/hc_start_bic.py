"""How often gaussmix's BIC reaches mclust's, started from mclust's hc or from k-means.

For each data set of ``tests/references/mclust`` (iris, faithful, diabetes, banknote,
wreath), each of mclust's 14 models and K = 1..9 where mclust has a BIC, fit gaussmix's
GaussianMixture (tol 1e-8, max_iter 10 000, as the 95 % test) from

* ``hc``: the K groups of mclust's default start (VVV hierarchical clustering on the
  SVD-transformed data, :func:`gaussmix.inference.em.hierarchical.start_labels`) turned
  into starting parameters by the model's own M-step from the one-hot responsibilities
  (``maximization_step``; what ``init_params="hc"`` will do inside the estimator),
  passed as ``weights_init``, ``means_init``, ``precisions_init``;
* ``kmeans1``, ``kmeans5``: the default k-means start, ``n_init`` 1 and 5
  (``random_state=0``);
* ``table``: :func:`gaussmix.select_components` of every model and K at once with its
  defaults (mclust's hc start, every K of a model in one padded program), ``seed=0``,
  the same tol and max_iter;

and count the cells where gaussmix's BIC <= mclust's + 1e-6 |mclust's| (scikit-learn's
sign). A fit that raises counts as worse. Prints one table; ``--json PATH`` keeps every
cell. Each cell compiles its own fits: run one or two data sets per process (a process
that compiled ~350 fits died in LLVM with "Cannot allocate memory", the memory mappings
that compiled programs hold). Run from the repository root:

    .venv/bin/python scripts/hc_start_bic.py [--datasets iris faithful] [--models VVV EEE]
        [--starts hc kmeans1 kmeans5] [--json out.json]
"""

import argparse
import json
import time
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from gaussmix import GaussianMixture, select_components
from gaussmix.inference import em
from gaussmix.inference.em.hierarchical import hierarchical_clustering
from gaussmix.inference.em.maximization import maximization_step
from gaussmix.inference.em.statistics import SufficientStatistics
from gaussmix.models import priors

REFERENCES = Path(__file__).resolve().parents[1] / "tests" / "references" / "mclust"
DATASETS = ("iris", "faithful", "diabetes", "banknote", "wreath")
STARTS = ("table", "hc", "kmeans1", "kmeans5")


def starting_values(x: np.ndarray, labels: np.ndarray, model: str, k: int) -> dict:
    """weights_init, means_init, precisions_init: the model's M-step on one-hot labels."""
    layout = priors.covariance_layout(model)
    centre = x.mean(axis=0)
    xc = x - centre
    resp = np.eye(k)[labels]
    counts = resp.sum(0)
    first = resp.T @ xc
    second = {
        "full": np.einsum("nk,ni,nj->kij", resp, xc, xc),
        "tied": xc.T @ xc,
        "diag": resp.T @ xc**2,
        "spherical": resp.T @ np.sum(xc**2, axis=1),
    }[layout]
    statistics = SufficientStatistics(
        *(jnp.asarray(a) for a in (counts, first, second, 0.0, float(len(x))))
    )
    weights, means, _, factor = maximization_step(
        statistics, covariance_type=model, centre=jnp.asarray(centre), reg_covar=1e-6
    )
    factor = np.asarray(factor)
    if layout == "full":
        precisions = factor @ np.swapaxes(factor, -1, -2)
    elif layout == "tied":
        precisions = factor @ factor.T
    else:
        precisions = factor**2
    weights = np.asarray(weights)
    return {
        "weights_init": weights / weights.sum(),
        "means_init": np.asarray(means),
        "precisions_init": precisions,
    }


def bic(x, model, k, start, hc_labels) -> float:
    settings = {"covariance_type": model, "tol": 1e-8, "max_iter": 10_000, "random_state": 0}
    if start == "hc":
        settings.update(starting_values(x, hc_labels, model, k))
    else:
        settings["n_init"] = 1 if start == "kmeans1" else 5
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", em.ConvergenceWarning)
        try:
            return float(GaussianMixture(k, **settings).fit(x).bic(x))
        except (ValueError, FloatingPointError, RuntimeError):
            return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS))
    parser.add_argument("--starts", nargs="+", default=list(STARTS))
    parser.add_argument("--models", nargs="+", default=None, help="mclust names (all 14)")
    parser.add_argument("--json", type=Path, default=None)
    arguments = parser.parse_args()
    jax.config.update("jax_enable_x64", True)
    cells = []
    for name in arguments.datasets:
        record = json.loads((REFERENCES / f"{name}.json").read_text())
        x = np.asarray(record["data"], dtype=np.float64)
        began = time.perf_counter()
        tree = hierarchical_clustering(x, model="VVV", transform="SVD")
        hc_seconds = time.perf_counter() - began
        tables = {}
        if "table" in arguments.starts:
            chosen = [
                m
                for m in record["models"]
                if arguments.models in (None, []) or m in arguments.models
            ]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", em.ConvergenceWarning)
                table, _ = select_components(
                    x, record["G"], chosen, seed=0, tol=1e-8, max_iter=10_000
                )
            tables = {
                (m, k): float(table.criterion[i, j])
                for j, m in enumerate(chosen)
                for i, k in enumerate(record["G"])
            }
        for column, model in enumerate(record["models"]):
            if arguments.models is not None and model not in arguments.models:
                continue
            for row, k in enumerate(record["G"]):
                reference = record["bic"][row][column]
                if reference is None:
                    continue
                expected = -float(reference)
                cell = {"dataset": name, "model": model, "K": k, "mclust": expected}
                for start in arguments.starts:
                    if start == "table":
                        ours = tables[(model, k)]
                    else:
                        ours = bic(x, model, k, start, tree.partition(k))
                    cell[start] = ours
                    cell[f"{start}_good"] = bool(
                        np.isfinite(ours) and ours <= expected + 1e-6 * abs(expected)
                    )
                cells.append(cell)
            print(
                name,
                model,
                {
                    s: sum(
                        c[f"{s}_good"]
                        for c in cells
                        if c["dataset"] == name and c["model"] == model
                    )
                    for s in arguments.starts
                },
                flush=True,
            )
        print(f"{name}: hc (VVV, SVD) {hc_seconds:.2f} s", flush=True)
    print("\ncells as good as mclust's (BIC within 1e-6 relative), per data set:")
    print(f"{'data set':<10} {'cells':>5} " + " ".join(f"{s:>8}" for s in arguments.starts))
    for name in [*arguments.datasets, "all"]:
        chosen = [c for c in cells if name in ("all", c["dataset"])]
        counts = " ".join(f"{sum(c[f'{s}_good'] for c in chosen):>8}" for s in arguments.starts)
        print(f"{name:<10} {len(chosen):>5} {counts}")
    if arguments.json is not None:
        arguments.json.write_text(json.dumps(cells, indent=1))


if __name__ == "__main__":
    main()
