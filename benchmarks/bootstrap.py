"""The bootstrap likelihood-ratio test for the number of components: gaussmix's
``bootstrap_likelihood_ratio`` against R's ``mclust::mclustBootstrapLRT`` on the same data
in one run (issue 18, item 4).

Run from the repository root (needs ``Rscript`` with mclust: ``apt-get install
r-cran-mclust``)::

    .venv/bin/python benchmarks/bootstrap.py                  # faithful, VVV, maxG 3, 999
    .venv/bin/python benchmarks/bootstrap.py --repeats 3 --model VVV --max-g 3 --nboot 999

The data: R's ``faithful`` (272 x 2), written to a CSV that both tools read. mclust runs
``mclustBootstrapLRT(x, modelName, maxG, nboot)`` (every g = 1 .. maxG tested); gaussmix
runs ``bootstrap_likelihood_ratio(x, model, max_components=maxG, n_boot=nboot)`` in
float64 with its defaults (mclust's EM tolerance, k-means start with 5 restarts for the
observed fits).

Every measurement is a fresh process: mclust's is the ``system.time`` of the call
(elapsed and CPU), gaussmix's the time of the call (imports apart), "cold" with an empty
gaussmix cache folder (``GAUSSMIX_CACHE_DIR``), "warm" in a second process on that
folder. Repeats are interleaved (mclust, cold, warm, ...) and medians printed, with the
ratios mclust / gaussmix (wall and CPU), each tool's statistics and p-values, and the
load average at the start and the end (on a shared machine the CPU ratio moves least with
the load; wall time needs an idle machine: gaussmix's replicate fits use every core).
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

R_SCRIPT = r"""
suppressPackageStartupMessages(library(mclust))
arguments <- commandArgs(trailingOnly = TRUE)
x <- as.matrix(read.csv(arguments[[1]], header = FALSE))
set.seed(0)
time <- system.time(test <- mclustBootstrapLRT(x, modelName = arguments[[2]],
  maxG = as.integer(arguments[[3]]), nboot = as.integer(arguments[[4]]), verbose = FALSE))
cat(sprintf('{"wall": %.6f, "cpu": %.6f, "statistic": [%s], "p_value": [%s], "version": "%s"}\n',
    time[["elapsed"]], time[["user.self"]] + time[["sys.self"]],
    paste(sprintf("%.6f", test$obs), collapse = ", "),
    paste(sprintf("%.6f", test$p.value), collapse = ", "),
    as.character(packageVersion("mclust"))))
"""

CHILD = r"""
import json, sys, time, warnings
import jax
jax.config.update("jax_enable_x64", True)
import numpy as np
from gaussmix.bootstrap import bootstrap_likelihood_ratio
x = np.loadtxt(sys.argv[1], delimiter=",")
begin, cpu = time.perf_counter(), time.process_time()
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    test = bootstrap_likelihood_ratio(x, sys.argv[2], max_components=int(sys.argv[3]),
                                      n_boot=int(sys.argv[4]), random_state=0)
wall, cpu = time.perf_counter() - begin, time.process_time() - cpu
print(json.dumps({"wall": wall, "cpu": cpu, "statistic": test.statistic.tolist(),
                  "p_value": test.p_value.tolist(), "n_failed": test.n_failed.tolist(),
                  "n_clipped": test.n_clipped.tolist()}))
"""

FAITHFUL = "suppressPackageStartupMessages(write.table(datasets::faithful, '{}', sep = ',', row.names = FALSE, col.names = FALSE))"


def run_json(command: list[str], env: dict | None = None) -> dict:
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=3600)
    if result.returncode != 0:
        raise RuntimeError(f"{command[0]} failed:\n{result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def gaussmix_run(arguments: list[str], cache: Path) -> dict:
    env = dict(os.environ, GAUSSMIX_CACHE_DIR=str(cache))
    env.pop("GAUSSMIX_COMPILATION_CACHE", None)
    return run_json([sys.executable, "-c", CHILD, *arguments], env)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", default="VVV")
    parser.add_argument("--max-g", type=int, default=3)
    parser.add_argument("--nboot", type=int, default=999)
    args = parser.parse_args()
    if shutil.which("Rscript") is None:
        sys.exit("Rscript is not installed: apt-get install r-cran-mclust")
    root = Path(tempfile.mkdtemp(prefix="gaussmix-bootstrap-bench-"))
    os.chmod(root, 0o700)
    data, script = root / "faithful.csv", root / "lrt.R"
    subprocess.run(["Rscript", "-e", FAITHFUL.format(data)], check=True)
    script.write_text(R_SCRIPT)
    arguments = [str(data), args.model, str(args.max_g), str(args.nboot)]
    rows = {"mclust": [], "cold": [], "warm": []}
    load = os.getloadavg()
    try:
        for _ in range(args.repeats):
            rows["mclust"].append(run_json(["Rscript", str(script), *arguments]))
            cache = Path(tempfile.mkdtemp(dir=root))
            os.chmod(cache, 0o700)
            rows["cold"].append(gaussmix_run(arguments, cache))
            rows["warm"].append(gaussmix_run(arguments, cache))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(
        f"mclustBootstrapLRT against bootstrap_likelihood_ratio: faithful, {args.model}, "
        f"maxG = {args.max_g}, nboot = {args.nboot}, {args.repeats} repeats, medians "
        f"(mclust {rows['mclust'][0]['version']}; gaussmix float64)"
    )
    wall_reference = statistics.median(r["wall"] for r in rows["mclust"])
    cpu_reference = statistics.median(r["cpu"] for r in rows["mclust"])
    print(f"{'':24s} {'wall s':>8s} {'CPU s':>8s} {'wall ratio':>11s} {'CPU ratio':>10s}  LRTS; p")
    for name, runs in rows.items():
        wall = statistics.median(r["wall"] for r in runs)
        cpu = statistics.median(r["cpu"] for r in runs)
        last = runs[-1]
        label = name if name == "mclust" else f"gaussmix, {name} cache"
        numbers = "; ".join(
            f"{s:.2f} {p:.3f}" for s, p in zip(last["statistic"], last["p_value"], strict=True)
        )
        print(
            f"{label:24s} {wall:8.2f} {cpu:8.2f} {wall_reference / wall:11.1f} "
            f"{cpu_reference / cpu:10.1f}  {numbers}"
        )
    print("(ratio: mclust's median time divided by the row's)")
    print(f"load average (1, 5, 15 min) at the start {load}, at the end {os.getloadavg()}")


if __name__ == "__main__":
    main()
