"""Peaks across a batch with shared widths (issue 20 item 6): gaussmix against scipy's
``least_squares`` on the stacked problem with a sparse Jacobian, and lmfit's
multi-dataset recipe.

Run from the repository root::

    .venv/bin/python benchmarks/shared_peaks.py              # 1 000 spectra
    .venv/bin/python benchmarks/shared_peaks.py --quick      # 100 spectra, a smoke test

The problem: B spectra of 200 points on x in [0, 20], two Gaussian peaks on a constant
baseline, noise sd 0.05; the two widths (0.7 and 1.1) are shared by all spectra, the
heights, centres and baselines vary (5 parameters per spectrum, 2 shared: 5 002 unknowns
and 200 000 residuals for B = 1 000). Starting values: truth +- 10 % (uniform, per
parameter), the same for every side; float64 everywhere.

* gaussmix: ``fit_peaks(x, Y, shared=("peak0_sigma", "peak1_sigma", "sigma"))``: the joint
  MAP by block-arrow Levenberg-Marquardt. The noise is shared too, so that under the
  default flat priors the MAP is the stacked least-squares optimum (with a noise per
  spectrum it is the weighted one, a different optimum; timed too).
* ``scipy.optimize.least_squares`` (trf) on the concatenated residuals, with
  ``jac_sparsity`` (finite differences grouped by the sparsity pattern, lsmr solves):
  the sparse recipe a scipy user would write.
* lmfit's multi-dataset recipe (one ``Parameters`` with the shared widths, the residuals
  of all spectra concatenated, ``minimize`` with leastsq): its Jacobian is dense (rows x
  unknowns), so it runs on ``--lmfit-spectra`` spectra (default 50) only, and its time is
  reported per spectrum beside the others' (it grows faster than linearly in B).

Each side runs ``--repeat`` times, interleaved; the report gives the median wall time,
the CPU time (all threads) and, for gaussmix, the first call in this process
(compilation included, a warm persistent cache aside) apart; the variant with a noise per
spectrum compiles a program of its own, in an untimed call before. The optimum: each side's
total RSS over gaussmix's (criterion: within 1e-6 relative) and the largest difference of
the shared widths.
"""

import argparse
import os
import platform
import statistics
import time
import warnings

import numpy as np

WIDTHS = (0.7, 1.1)


def make_problem(n_spectra: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = np.linspace(0.0, 20.0, 200)
    own = np.stack(
        [
            rng.uniform(1.0, 2.0, n_spectra),  # height 0
            rng.uniform(6.0, 8.0, n_spectra),  # centre 0
            rng.uniform(1.0, 2.0, n_spectra),  # height 1
            rng.uniform(12.0, 14.0, n_spectra),  # centre 1
            rng.uniform(0.1, 0.5, n_spectra),  # baseline
        ],
        axis=1,
    )
    y = curves(x, own, *WIDTHS) + 0.05 * rng.normal(size=(n_spectra, x.size))
    start_own = own * rng.uniform(0.9, 1.1, own.shape)
    start_widths = np.asarray(WIDTHS) * rng.uniform(0.9, 1.1, 2)
    return x, y, start_own, start_widths


def curves(x, own, width0, width1):
    peak0 = own[:, :1] * np.exp(-0.5 * ((x - own[:, 1:2]) / width0) ** 2)
    peak1 = own[:, 2:3] * np.exp(-0.5 * ((x - own[:, 3:4]) / width1) ** 2)
    return peak0 + peak1 + own[:, 4:5]


def timed(function):
    wall, cpu = time.perf_counter(), time.process_time()
    value = function()
    return value, time.perf_counter() - wall, time.process_time() - cpu


def run_gaussmix(x, y, start_own, start_widths, share_noise=True):
    from gaussmix import fit_peaks

    names = ("peak0_height", "peak0_center", "peak1_height", "peak1_center", "baseline_c0")
    init = {name: start_own[:, k] for k, name in enumerate(names)}
    init["peak0_sigma"], init["peak1_sigma"] = (float(w) for w in start_widths)
    shared = ("peak0_sigma", "peak1_sigma") + (("sigma",) if share_noise else ())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = fit_peaks(x, y, peaks=("gaussian", "gaussian"), baseline="constant",
                        init=init, shared=shared)  # fmt: skip
    own = np.stack([fit.params[name] for name in names], axis=1)
    widths = np.array([fit.shared_params["peak0_sigma"], fit.shared_params["peak1_sigma"]])
    return float(np.sum(fit.rss)), widths, own, bool(np.all(fit.converged))


def run_least_squares(x, y, start_own, start_widths):
    from scipy.optimize import least_squares
    from scipy.sparse import lil_matrix

    n_spectra, n_points = y.shape

    def residuals(p):
        return (curves(x, p[2:].reshape(n_spectra, 5), p[0], p[1]) - y).ravel()

    sparsity = lil_matrix((n_spectra * n_points, 2 + 5 * n_spectra), dtype=int)
    sparsity[:, :2] = 1
    for b in range(n_spectra):
        sparsity[b * n_points : (b + 1) * n_points, 2 + 5 * b : 7 + 5 * b] = 1
    start = np.concatenate([start_widths, start_own.ravel()])
    result = least_squares(residuals, start, jac_sparsity=sparsity, method="trf")
    return float(np.sum(result.fun**2)), result.x[:2], result.x[2:].reshape(-1, 5)


def run_lmfit(x, y, start_own, start_widths):
    import lmfit

    n_spectra = y.shape[0]
    parameters = lmfit.Parameters()
    parameters.add("w0", value=start_widths[0], min=0)
    parameters.add("w1", value=start_widths[1], min=0)
    for b in range(n_spectra):
        for k, name in enumerate(("h0", "c0", "h1", "c1", "base")):
            parameters.add(f"{name}_{b}", value=start_own[b, k])

    def residuals(parameters):
        values = parameters.valuesdict()
        own = np.array(
            [[values[f"{name}_{b}"] for name in ("h0", "c0", "h1", "c1", "base")]
             for b in range(n_spectra)]
        )  # fmt: skip
        return (curves(x, own, values["w0"], values["w1"]) - y).ravel()

    result = lmfit.minimize(residuals, parameters, method="leastsq")
    widths = np.array([result.params["w0"].value, result.params["w1"].value])
    return float(np.sum(result.residual**2)), widths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spectra", type=int, default=1000)
    parser.add_argument("--lmfit-spectra", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="100 spectra, 1 repeat")
    arguments = parser.parse_args()
    if arguments.quick:
        arguments.spectra, arguments.repeat = 100, 1
    import jax

    jax.config.update("jax_enable_x64", True)
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"jax {jax.__version__}, {jax.devices()[0].platform}")  # fmt: skip
    x, y, start_own, start_widths = make_problem(arguments.spectra)
    print(f"{arguments.spectra} spectra x {x.size} points, 2 shared widths, "
          f"{2 + 5 * arguments.spectra} unknowns")  # fmt: skip

    first, first_wall, first_cpu = timed(lambda: run_gaussmix(x, y, start_own, start_widths))
    print(f"gaussmix first call (compilation included): {first_wall:.2f} s wall, "
          f"{first_cpu:.2f} s CPU")  # fmt: skip
    run_gaussmix(x, y, start_own, start_widths, share_noise=False)  # compiles its program
    times = {"gaussmix": [], "gaussmix (noise per spectrum)": [], "least_squares": []}
    cpu = {name: [] for name in times}
    results = {}
    for _ in range(arguments.repeat):
        for name, function in (
            ("gaussmix", lambda: run_gaussmix(x, y, start_own, start_widths)),
            ("gaussmix (noise per spectrum)",
             lambda: run_gaussmix(x, y, start_own, start_widths, share_noise=False)),
            ("least_squares", lambda: run_least_squares(x, y, start_own, start_widths)),
        ):  # fmt: skip
            value, wall, used = timed(function)
            times[name].append(wall)
            cpu[name].append(used)
            results[name] = value
    lmfit_y = y[: arguments.lmfit_spectra]
    lmfit_own, lmfit_widths = start_own[: arguments.lmfit_spectra], start_widths
    lmfit_value, lmfit_wall, lmfit_cpu = timed(
        lambda: run_lmfit(x, lmfit_y, lmfit_own, lmfit_widths)
    )
    small, _, _ = timed(lambda: run_gaussmix(x, lmfit_y, lmfit_own, lmfit_widths))
    small_value, small_wall, small_cpu = timed(
        lambda: run_gaussmix(x, lmfit_y, lmfit_own, lmfit_widths)
    )

    reference_rss, reference_widths = results["gaussmix"][0], results["gaussmix"][1]
    print(f"\n{'side':<32}{'wall s':>9}{'CPU s':>9}{'ms/spectrum':>13}"
          f"{'RSS / gaussmix':>17}{'widths diff':>13}")  # fmt: skip
    for name in times:
        wall, used = statistics.median(times[name]), statistics.median(cpu[name])
        rss, widths = results[name][0], results[name][1]
        print(f"{name:<32}{wall:9.2f}{used:9.2f}{1e3 * wall / arguments.spectra:13.2f}"
              f"{rss / reference_rss:17.10f}{np.max(np.abs(widths - reference_widths)):13.2e}")  # fmt: skip
    n_small = lmfit_y.shape[0]
    print(f"{'lmfit (' + str(n_small) + ' spectra)':<32}{lmfit_wall:9.2f}{lmfit_cpu:9.2f}"
          f"{1e3 * lmfit_wall / n_small:13.2f}{lmfit_value[0] / small_value[0]:17.10f}"
          f"{np.max(np.abs(lmfit_value[1] - small_value[1])):13.2e}")  # fmt: skip
    print(f"{'gaussmix (' + str(n_small) + ' spectra)':<32}{small_wall:9.2f}{small_cpu:9.2f}"
          f"{1e3 * small_wall / n_small:13.2f}{1.0:17.10f}{0.0:13.2e}")  # fmt: skip
    speedup = statistics.median(times["least_squares"]) / statistics.median(times["gaussmix"])
    same = abs(results["least_squares"][0] / reference_rss - 1) <= 1e-6
    print(f"\ngaussmix vs least_squares: {speedup:.1f}x faster (goal 10x), same optimum "
          f"(RSS within 1e-6): {same}; gaussmix converged: {results['gaussmix'][3]}")  # fmt: skip
    del first, small


if __name__ == "__main__":
    main()
