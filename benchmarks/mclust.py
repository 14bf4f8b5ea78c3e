"""A BIC table of every covariance model, K = 1..9, on 5 000 rows of 5 features: gaussmix's
``select_components`` against R's ``mclust::mclustBIC`` in one run (issue 18).

Run from the repository root (needs ``Rscript`` with mclust: ``apt-get install
r-cran-mclust``)::

    .venv/bin/python benchmarks/mclust.py              # 3 repeats
    .venv/bin/python benchmarks/mclust.py --repeats 5 --rows 5000 --features 5

The data: ``--rows`` points of a seeded mixture of four Gaussians with random full
covariances in ``--features`` dimensions (written to a CSV that both tools read).
gaussmix fits the models its estimator has *at run time*
(:func:`gaussmix.selection.covariance_models`: mclust's 14 since issue 18; the script
prints which), in float64, with its defaults (mclust's hc start, ``n_init=1``,
``tol=1e-3``; every K of a model in one padded program); mclust fits all 14 of its
models (``mclustBIC`` with its defaults: hierarchical start on a 2 000-row subset, EM
tol 1e-5) and, separately, only the models gaussmix has (not again where those are all
14), so the ratio compares like with like.

Every measurement is a fresh process: mclust's is the ``system.time`` of the
``mclustBIC`` call (elapsed and CPU), gaussmix's the time of the ``select_components``
call (imports apart), "cold" with an empty gaussmix cache folder (``GAUSSMIX_CACHE_DIR``,
the compiled E-step kernel copied in so its one-off build is not counted), "warm" in a
second process on that folder. Repeats are interleaved (mclust, cold, warm, ...) and
medians printed, with the ratios mclust / gaussmix of wall and of CPU times (user + sys;
on a shared machine the CPU ratio changes least with the load, printed too), and the best
model and K of each.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

R_SCRIPT = r"""
suppressPackageStartupMessages(library(mclust))
arguments <- commandArgs(trailingOnly = TRUE)
x <- as.matrix(read.csv(arguments[[1]], header = FALSE))
models <- if (length(arguments) >= 2) strsplit(arguments[[2]], ",")[[1]] else
  mclust.options("emModelNames")
set.seed(0)
time <- system.time(bic <- mclustBIC(x, G = 1:9, modelNames = models, verbose = FALSE))
best <- which(bic == max(bic, na.rm = TRUE), arr.ind = TRUE)[1, ]
cat(sprintf('{"wall": %.6f, "cpu": %.6f, "best_model": "%s", "best_k": %d, "best_bic": %.10g, "version": "%s", "models": "%s"}\n',
    time[["elapsed"]], time[["user.self"]] + time[["sys.self"]], colnames(bic)[best[2]],
    as.integer(rownames(bic)[best[1]]), -max(bic, na.rm = TRUE),
    as.character(packageVersion("mclust")), paste(models, collapse = ",")))
"""

CHILD = r"""
import json, sys, time, warnings
import jax
jax.config.update("jax_enable_x64", True)
import numpy as np
from gaussmix.selection import covariance_models, select_components
x = np.loadtxt(sys.argv[1], delimiter=",")
models = covariance_models()
begin, cpu = time.perf_counter(), time.process_time()
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    table, best = select_components(x, range(1, 10), models, seed=0)
wall, cpu = time.perf_counter() - begin, time.process_time() - cpu
print(json.dumps({"wall": wall, "cpu": cpu, "models": list(models),
                  "best_model": table.best_covariance_type, "best_k": table.best_n_components,
                  "best_bic": float(np.nanmin(table.criterion)),
                  "failed": len(table.failures)}))
"""

MCLUST_NAMES = {"full": "VVV", "tied": "EEE", "diag": "VVI", "spherical": "VII"}


def make_data(rows: int, features: int, path: Path) -> None:
    rng = np.random.default_rng(0)
    labels = rng.choice(4, size=rows, p=[0.4, 0.3, 0.2, 0.1])
    centres = rng.normal(0.0, 4.0, (4, features))
    factors = rng.normal(0.0, 1.0, (4, features, features)) / np.sqrt(features)
    noise = rng.normal(size=(rows, features))
    x = centres[labels] + np.einsum("nij,nj->ni", factors[labels], noise)
    np.savetxt(path, x, delimiter=",", fmt="%.17g")


def user_cache() -> Path:
    configured = os.environ.get("GAUSSMIX_CACHE_DIR")
    if configured:
        return Path(configured)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "gaussmix"


def fresh_cache(root: Path) -> Path:
    """An empty cache folder but for the compiled E-step kernel (built once per machine)."""
    folder = Path(tempfile.mkdtemp(dir=root))
    os.chmod(folder, 0o700)
    for library in user_cache().glob("em_full_kernel-*.so"):
        shutil.copy2(library, folder / library.name)
    return folder


def run_json(command: list[str], env: dict | None = None) -> dict:
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=3600)
    if result.returncode != 0:
        raise RuntimeError(f"{command[0]} failed:\n{result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def gaussmix_run(data: Path, cache: Path) -> dict:
    env = dict(os.environ, GAUSSMIX_CACHE_DIR=str(cache))
    env.pop("GAUSSMIX_COMPILATION_CACHE", None)
    return run_json([sys.executable, "-c", CHILD, str(data)], env)


def record(rows: dict, name: str, repeat: int, result: dict) -> None:
    """Keep one measurement and print it at once (a long run shows its progress)."""
    rows[name].append(result)
    print(f"repeat {repeat}, {name}: {json.dumps(result)}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--features", type=int, default=5)
    args = parser.parse_args()
    if shutil.which("Rscript") is None:
        sys.exit("Rscript is not installed: apt-get install r-cran-mclust")
    root = Path(tempfile.mkdtemp(prefix="gaussmix-mclust-bench-"))
    os.chmod(root, 0o700)
    data, script = root / "x.csv", root / "bic.R"
    make_data(args.rows, args.features, data)
    script.write_text(R_SCRIPT)
    rows = {"mclust, 14 models": [], "mclust, gaussmix's models": [], "cold": [], "warm": []}
    load = [os.getloadavg()]
    models = None
    try:
        for repeat in range(args.repeats):
            record(rows, "mclust, 14 models", repeat, run_json(["Rscript", str(script), str(data)]))
            cache = fresh_cache(root)
            record(rows, "cold", repeat, gaussmix_run(data, cache))
            record(rows, "warm", repeat, gaussmix_run(data, cache))
            models = rows["warm"][-1]["models"]
            same = [MCLUST_NAMES.get(name, name) for name in models]
            if sorted(same) == sorted(rows["mclust, 14 models"][-1]["models"].split(",")):
                result = rows["mclust, 14 models"][-1]  # the same models: not run twice
            else:
                result = run_json(["Rscript", str(script), str(data), ",".join(same)])
            record(rows, "mclust, gaussmix's models", repeat, result)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    mclust_version = rows["mclust, 14 models"][0]["version"]
    print(
        f"BIC table, K = 1..9, {args.rows} rows x {args.features} features, "
        f"{args.repeats} repeats, medians (mclust {mclust_version}; gaussmix float64)"
    )
    print(
        f"gaussmix has {len(models)} of mclust's 14 models at run time: {models} "
        f"(= {[MCLUST_NAMES.get(m, m) for m in models]}); its times are for those."
    )
    same_models = rows["mclust, gaussmix's models"]
    reference = {kind: statistics.median(r[kind] for r in same_models) for kind in ("wall", "cpu")}
    header = f"{'':28s} {'wall s':>8s} {'CPU s':>8s} {'mclust/this':>12s} {'(CPU)':>6s}"
    print(f"{header}  best (BIC)")
    for name, runs in rows.items():
        wall = statistics.median(r["wall"] for r in runs)
        cpu = statistics.median(r["cpu"] for r in runs)
        best = runs[-1]
        label = name if name.startswith("mclust") else f"gaussmix, {name} cache"
        print(
            f"{label:28s} {wall:8.2f} {cpu:8.2f} {reference['wall'] / wall:12.2f} "
            f"{reference['cpu'] / cpu:6.2f}  "
            f"{best['best_model']} K={best['best_k']} ({best['best_bic']:.1f})"
        )
    print(
        "(mclust/this: mclust's wall time on gaussmix's models divided by the row's; "
        "(CPU): the same with CPU times, user + sys)"
    )
    print(f"load average (1, 5, 15 min) at the start {load[0]}, at the end {os.getloadavg()}")


if __name__ == "__main__":
    main()
