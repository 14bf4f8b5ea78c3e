"""Time to first result (issue 17): a script's first fit, in fresh processes, with a cold
and with a warm compilation cache, side by side with another version of gaussmix.

Run from the repository root::

    .venv/bin/python benchmarks/first_call.py                 # this checkout, 3 repeats
    .venv/bin/python benchmarks/first_call.py --baseline-site /tmp/base-site

Each measurement is one fresh Python process that imports gaussmix and runs one scenario;
the time is that of the call (imports apart, printed too; its CPU time too, the steadier
figure on a shared machine), the compilations are counted
from JAX's ``backend_compile_duration`` events (programs, and seconds XLA spent). Two
figures do not depend on the load: ``kernels``, the fusions of the programs the call
compiled or loaded (XLA compiles each as a kernel of its own, at a roughly fixed cost, so
the compile time follows their count; "-" for a version whose programs are not held by
gaussmix's program cache), and ``cache kB``, the programs the cold run stored, which the warm run loads;
``NumPyro`` says whether the process had imported NumPyro after the call (its import is
a third of a warm fit_peaks; a warm fit_peaks needs none). The load average is printed
before and after:

- ``fit_peaks``: one 300-point spectrum, two Gaussians on a linear baseline, float64;
- ``mixture``: ``GaussianMixture(2).fit`` on 300 points of two blobs (JAX's float32);
- ``sample_posterior``: that fit, then ``sample_posterior(X, num_warmup=200,
  num_samples=200, num_chains=1)`` (the time is the sampling call's).

"cold" runs with an empty gaussmix cache folder (``GAUSSMIX_CACHE_DIR`` a fresh temporary
folder; the compiled E-step kernel, built once per machine, is copied in beforehand so that
its build is not counted), "warm" in a second process on the same folder. The baseline
(``--baseline-site``) is another gaussmix installed into a folder, e.g. the code before
issue 17::

    git worktree add /tmp/base 2ab6c7d
    .venv/bin/python -m pip install --no-deps --no-build-isolation --target /tmp/base-site /tmp/base

and runs from a neutral working folder with that folder first on ``PYTHONPATH``. Repeats
are interleaved (baseline, cold, warm, baseline, ...) and medians printed, with the
ratios baseline / this checkout.
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

CHILD = r"""
import json, sys, time
start = time.perf_counter()
import jax
from jax._src import monitoring
compiles = []
monitoring.register_event_duration_secs_listener(
    lambda event, duration, **kw: compiles.append(duration)
    if event.endswith("backend_compile_duration") else None)
scenario = sys.argv[1]
if scenario == "fit_peaks":
    jax.config.update("jax_enable_x64", True)
import numpy as np
import gaussmix
try:  # gaussmix's compiled programs, where this version keeps them (not before issue 17)
    from gaussmix.inference import compilation
    held = set(compilation._programs)
except (ImportError, AttributeError):
    compilation = None
imported = time.perf_counter()
rng = np.random.default_rng(0)
if scenario == "fit_peaks":
    x = np.linspace(0.0, 10.0, 300)
    y = (3.0 * np.exp(-0.5 * ((x - 3.0) / 0.5) ** 2) + 2.0 * np.exp(-0.5 * ((x - 6.0) / 0.8) ** 2)
         + 0.1 * x + 1.0 + 0.05 * rng.normal(size=x.size))
    begin, cpu = time.perf_counter(), time.process_time()
    fit = gaussmix.fit_peaks(x, y, ("gaussian", "gaussian"), baseline="linear")
    check = float(np.asarray(fit.params["peak0_center"]))
else:
    X = np.concatenate([rng.normal(-3.0, 1.0, (150, 2)), rng.normal(3.0, 1.0, (150, 2))])
    begin, cpu = time.perf_counter(), time.process_time()
    model = gaussmix.GaussianMixture(2, random_state=0).fit(X)
    check = float(np.sort(model.means_[:, 0])[0])
    if scenario == "sample_posterior":
        begin, cpu = time.perf_counter(), time.process_time()
        compiles.clear()
        held = set(compilation._programs) if compilation else set()
        tree = model.sample_posterior(X, num_warmup=200, num_samples=200, num_chains=1,
                                      progress_bar=False)
        check = float(tree.posterior["means"].mean())
end, cpu = time.perf_counter(), time.process_time() - cpu
# XLA compiles each fusion of a program as a kernel of its own, at a roughly fixed cost
# (10-20 ms of CPU): their count follows the compile time, free of the machine's load.
new = [] if compilation is None else [
    program for key, program in list(compilation._programs.items()) if key not in held]
# -1 (unknown) where the call compiled programs that gaussmix's cache does not hold
kernels = sum(program.as_text().count(" fusion(") for program in new) if new or not compiles else -1
print(json.dumps({"import": imported - start, "call": end - begin, "cpu": cpu,
                  "programs": len(compiles),
                  "compile": sum(compiles), "kernels": kernels, "check": check,
                  "numpyro": float("numpyro" in sys.modules)}))
"""

SCENARIOS = ("fit_peaks", "mixture", "sample_posterior")


def user_cache() -> Path:
    configured = os.environ.get("GAUSSMIX_CACHE_DIR")
    if configured:
        return Path(configured)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "gaussmix"


def run(scenario: str, cache: Path, site: str | None) -> dict:
    env = dict(os.environ, GAUSSMIX_CACHE_DIR=str(cache))
    env.pop("GAUSSMIX_COMPILATION_CACHE", None)
    if site:
        env["PYTHONPATH"] = site + os.pathsep + env.get("PYTHONPATH", "")
    result = subprocess.run(
        [sys.executable, "-c", CHILD, scenario],
        capture_output=True,
        text=True,
        env=env,
        cwd=tempfile.gettempdir() if site else None,
        timeout=900,
    )
    if result.returncode != 0:
        raise RuntimeError(f"{scenario} failed:\n{result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def fresh_cache(root: Path) -> Path:
    """An empty cache folder but for the compiled E-step kernel (built once per machine)."""
    folder = Path(tempfile.mkdtemp(dir=root))
    os.chmod(folder, 0o700)
    for library in user_cache().glob("em_full_kernel-*.so"):
        shutil.copy2(library, folder / library.name)
    return folder


def program_bytes(cache: Path) -> int:
    """Bytes of the compiled programs a run left in gaussmix's cache folder (what a
    warm run loads)."""
    return sum(path.stat().st_size for path in cache.glob("programs/*.gaussmix-program"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline-site", help="folder holding the baseline gaussmix")
    parser.add_argument(
        "--site",
        help="folder holding the gaussmix to measure (default: this checkout); a copy "
        "installed with pip --target keeps a shared working tree's edits out of the keys",
    )
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--scenarios", nargs="+", default=list(SCENARIOS), choices=SCENARIOS)
    args = parser.parse_args()
    print(
        f"python {sys.version.split()[0]}, {os.cpu_count()} cores, repeats {args.repeat}, "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    rows: dict[tuple, list] = {}
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        for _ in range(args.repeat):
            for scenario in args.scenarios:
                if args.baseline_site:
                    cache = fresh_cache(root)
                    baseline = run(scenario, cache, args.baseline_site)
                    baseline["kB"] = program_bytes(cache) / 1024
                    rows.setdefault((scenario, "baseline"), []).append(baseline)
                cache = fresh_cache(root)
                cold = run(scenario, cache, args.site)
                cold["kB"] = program_bytes(cache) / 1024
                rows.setdefault((scenario, "cold"), []).append(cold)
                warm = run(scenario, cache, args.site)
                warm["kB"] = cold["kB"]  # what the warm run loaded
                rows.setdefault((scenario, "warm"), []).append(warm)
    print(
        f"{'scenario':18} {'run':9} {'call s':>7} {'CPU s':>6} {'import s':>8} {'programs':>8} "
        f"{'XLA s':>6} {'kernels':>7} {'cache kB':>8} {'NumPyro':>7}"
    )
    medians = {}
    for (scenario, kind), results in rows.items():
        median = {key: statistics.median(r[key] for r in results) for key in results[0]}
        medians[scenario, kind] = median
        kernels = "-" if median["kernels"] < 0 else f"{median['kernels']:.0f}"
        imported = {0.0: "no", 1.0: "yes"}.get(median.get("numpyro", -1.0), "some")
        print(
            f"{scenario:18} {kind:9} {median['call']:7.2f} {median['cpu']:6.2f} {median['import']:8.2f} "
            f"{median['programs']:8.0f} {median['compile']:6.2f} {kernels:>7} {median['kB']:8.0f} "
            f"{imported:>7}"
        )
    print(f"load average at the end {os.getloadavg()[0]:.1f}")
    if args.baseline_site:
        print("ratios baseline / this checkout (call time; CPU time, the figure to read on a")
        print("loaded machine):")
        for scenario in args.scenarios:
            ratios = [
                medians[scenario, "baseline"][key] / medians[scenario, kind][key]
                for key in ("call", "cpu")
                for kind in ("cold", "warm")
            ]
            print(
                f"  {scenario:18} call: cold {ratios[0]:5.1f}x  warm {ratios[1]:5.1f}x   "
                f"CPU: cold {ratios[2]:5.1f}x  warm {ratios[3]:5.1f}x"
            )


if __name__ == "__main__":
    main()
