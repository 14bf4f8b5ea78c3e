"""``gaussmix demo``: the tour on the bundled datasets (``make demo``)."""

import argparse
import contextlib
import math
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gaussmix.cli.fit_mixture import sample_mixture, sweep_components
from gaussmix.cli.run import (
    ALWAYS_WRITTEN,
    Run,
    command_arguments,
    configure_numerics,
    output_folder,
    say,
    show_progress,
)
from gaussmix.cli.sections import (
    mixture_point,
    mixture_posterior,
    nuts_text,
    peak_point,
    posterior_section,
    selection_report,
)

#: Size of the tour: the full one (make demo) and the quick one the tests run. NUTS: four
#: chains of 600 draws after 200 of warmup (the chains start at the posterior mode, with
#: its Laplace metric; each draw costs about 6 steps). Measured with 500 draws: R-hat at
#: most 1.0062 on the two posteriors the tour shows (sm1, seeds 0-5; spectrum 0, seeds
#: 0-4), ESS above 1700; 1000 draws gave 1.0027. Its own noise at 2 x 300 draws is
#: about 1.01; more draws would only slow the tour's sampling, LOO and plots.
_DEMO_SIZES = {
    False: {"nuts": {"num_warmup": 200, "num_samples": 600, "num_chains": 4}, "sweep": (1, 5)},
    True: {"nuts": {"num_warmup": 40, "num_samples": 40, "num_chains": 2}, "sweep": (1, 3)},
}


#: EM restarts in the demo (the same everywhere, so that fits of one shape compile once).
_DEMO_RESTARTS = 2


#: The bundled datasets with the K the demo fits to each.
_DEMO_DATASETS = {"sm1": 2, "sm2": 4, "blobs": 4, "stretched": 4, "moons": 2}


#: What ``gaussmix demo`` writes (with or without --quick).
DEMO_FILES = (
    *ALWAYS_WRITTEN,
    *("datasets.png", "em.png", "model-sm1.npz", "kmeans.png", "selection.png"),
    *("posterior.nc", "posterior-nuts-on-sm1.png"),
    *("peaks-two-gaussians.png", "peaks-spectrum.png", "model-peaks.npz"),
    *("posterior-peaks.nc", "peaks-nuts.png"),
)


def demo_command(args: argparse.Namespace) -> int:
    configure_numerics()
    start = time.perf_counter()
    with output_folder(args, DEMO_FILES) as folder:
        run = Run(folder, "gaussmix demo", args.quiet)
        _run_demo(run, args, progress_bar=show_progress(args))
        run.results["elapsed_seconds"] = time.perf_counter() - start
        run.finish("demo", command_arguments(args))
    say(args, f"wrote {Path(args.out) / 'report.html'} in {time.perf_counter() - start:.0f} s")
    return 0


def _run_demo(run: Run, args: argparse.Namespace, progress_bar: bool) -> None:
    from gaussmix import save

    sizes = _DEMO_SIZES[bool(args.quick)]
    names = ["datasets", "em", "kmeans", "selection", "nuts", "peaks"]
    stages = _Stages(names, progress_bar)
    run.report.paragraph(
        "The tour: EM and NUTS for Gaussian mixtures on the bundled datasets, k-means "
        "against the mixture, choosing K, a peak fit next to scipy's curve_fit, all from "
        "one NumPyro program per model."
        + (" Quick mode: smaller data and NUTS runs." if args.quick else "")
    )
    try:
        with stages.stage("datasets"):
            data = _demo_datasets(run, args.quick)
        with stages.stage("em"):
            em = _demo_em(run, data, args.seed)
            models = em.pop("models")
            save(models["sm1"], run.folder / "model-sm1.npz")
            run.files.append("model-sm1.npz")
        with stages.stage("kmeans"):
            kmeans = _demo_kmeans(run, data, models, args.seed)
        with stages.stage("selection"):
            selection = _demo_selection(run, data, sizes["sweep"], args.seed)
        with stages.stage("nuts"):
            nuts = _demo_nuts(run, data, models, sizes["nuts"], args.seed)
        with stages.stage("peaks"):
            peaks = _demo_peaks(run, sizes["nuts"], args.seed, args.quick)
    finally:
        stages.close()
    run.report.heading("Timings")
    run.report.paragraph(
        "Wall-clock and CPU seconds of each stage, JAX compilation included (on a shared "
        "machine the CPU time is the steadier figure)."
    )
    run.report.table(
        ["stage", "seconds", "CPU seconds"],
        [[name, seconds, stages.cpu_timings[name]] for name, seconds in stages.timings.items()],
    )
    run.results.update(
        em=em,
        kmeans=kmeans,
        selection=selection,
        nuts=nuts,
        peaks=peaks,
        timings=stages.timings,
        cpu_timings=stages.cpu_timings,
        settings=sizes,
    )


class _Stages:
    """Times the demo's stages; a tqdm bar over them on a terminal."""

    def __init__(self, names: Sequence[str], enabled: bool) -> None:
        self.timings: dict[str, float] = {}
        self.cpu_timings: dict[str, float] = {}
        self.bar = None
        if enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=len(names), desc="demo", leave=False, file=sys.stderr)

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        if self.bar is not None:
            self.bar.set_postfix_str(name)
        start, cpu = time.perf_counter(), time.process_time()
        yield
        self.timings[name] = time.perf_counter() - start
        self.cpu_timings[name] = time.process_time() - cpu
        if self.bar is not None:
            self.bar.update()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def adjusted_rand_index(labels_true: np.ndarray, labels_predicted: np.ndarray) -> float:
    """Agreement of two partitions corrected for chance (1: identical, ~0: random).

    .. math:: \\mathrm{ARI} = \\frac{\\sum_{ij}\\binom{n_{ij}}{2} - E}{\\tfrac12(A + B) - E},
        \\quad A = \\sum_i \\binom{a_i}{2},\\ B = \\sum_j \\binom{b_j}{2},\\
        E = AB / \\binom{n}{2}.

    Example:
        >>> adjusted_rand_index(np.array([0, 0, 1, 1]), np.array([1, 1, 0, 0]))
        1.0
    """
    _, true_codes = np.unique(labels_true, return_inverse=True)
    _, predicted_codes = np.unique(labels_predicted, return_inverse=True)
    contingency = np.zeros((true_codes.max() + 1, predicted_codes.max() + 1))
    np.add.at(contingency, (true_codes, predicted_codes), 1.0)

    def pairs(counts):
        return float(np.sum(counts * (counts - 1) / 2))

    index = pairs(contingency)
    rows, columns = pairs(contingency.sum(axis=1)), pairs(contingency.sum(axis=0))
    expected = rows * columns / pairs(np.array([len(true_codes)]))
    maximum = (rows + columns) / 2
    if maximum == expected:
        return 1.0
    return (index - expected) / (maximum - expected)


def _optional_module(name: str):
    """An optional test/benchmark dependency, or None when it is not installed."""
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def _demo_datasets(run: Run, quick: bool) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    import matplotlib.pyplot as plt

    from gaussmix import datasets

    names = ("sm1", "stretched") if quick else tuple(_DEMO_DATASETS)
    # 400 points each: the datasets of one K share their compiled EM fit (moons with
    # sm1; sm2, every sixth of its 2400 points, with blobs and stretched).
    options = {"moons": {"n": 400}}
    data = {name: getattr(datasets, name)(**options.get(name, {})) for name in names}
    if "sm2" in data:
        x, labels = data["sm2"]
        data["sm2"] = x[::6], labels[::6]
    run.report.heading("The bundled datasets")
    run.report.table(
        ["dataset", "points", "features", "generating components", "what it shows"],
        [
            [name, len(x), x.shape[1], int(labels.max()) + 1, _DATASET_NOTES[name]]
            for name, (x, labels) in data.items()
        ],
        caption="gaussmix.datasets (seeded; the labels are the generating components)",
    )
    figure, axes = plt.subplots(1, len(data), figsize=(3.2 * len(data), 3.2))
    for axis, (name, (x, labels)) in zip(np.atleast_1d(axes), data.items(), strict=True):
        axis.scatter(x[:, 0], x[:, 1], c=labels, s=4, cmap="tab10")
        axis.set_title(name)
        axis.set_aspect("equal", adjustable="datalim")
    figure.tight_layout()
    run.figure(figure, "datasets", "The datasets, coloured by generating component")
    return data


_DATASET_NOTES = {
    "sm1": "two clusters of very different size and spread",
    "sm2": "four overlapping clusters in a row",
    "blobs": "four well separated isotropic blobs",
    "stretched": "elongated, correlated clusters (k-means fails)",
    "moons": "two non-Gaussian half circles",
}


def _demo_em(run: Run, data: dict, seed: int) -> dict[str, Any]:
    """EM on every dataset, against scikit-learn when it is installed."""
    import matplotlib.pyplot as plt

    from gaussmix import GaussianMixture, plots

    sklearn_mixture = _optional_module("sklearn.mixture")
    run.report.heading("EM: GaussianMixture on each dataset")
    run.report.paragraph(
        f"Full covariances, k-means initialization, {_DEMO_RESTARTS} restarts. Time "
        "includes JAX compilation the first time a shape is seen. ARI: adjusted Rand index against "
        "the generating components (1 is perfect)."
    )
    models, rows, results = {}, [], {}
    figure, axes = plt.subplots(1, len(data), figsize=(3.2 * len(data), 3.2))
    for axis, (name, (x, labels)) in zip(np.atleast_1d(axes), data.items(), strict=True):
        k = _DEMO_DATASETS[name]
        start = time.perf_counter()
        with run.collect_warnings(f"EM on {name}"):
            model = GaussianMixture(k, n_init=_DEMO_RESTARTS, random_state=seed).fit(x)
        seconds = time.perf_counter() - start
        models[name] = model
        score = float(model.score(x))
        ari = adjusted_rand_index(labels, model.predict(x))
        row = [name, k, model.converged_, model.n_iter_, score, float(model.bic(x)), ari, seconds]
        if sklearn_mixture is not None:
            reference = sklearn_mixture.GaussianMixture(
                k, n_init=_DEMO_RESTARTS, random_state=seed
            ).fit(x)
            row.append(float(reference.score(x)))
        rows.append(row)
        results[name] = {
            "n_components": k,
            "converged": model.converged_,
            "n_iter": model.n_iter_,
            "mean_log_likelihood": score,
            "bic": float(model.bic(x)),
            "adjusted_rand_index": ari,
            "seconds": seconds,
            "parameters": mixture_point(model),
        }
        plots.plot_mixture(model, x, ax=axis)
        axis.set_title(f"{name}: K = {k}")
    figure.tight_layout()
    columns = ["dataset", "K", "converged", "iterations", "mean log-lik.", "BIC", "ARI", "seconds"]
    if sklearn_mixture is not None:
        columns.append("scikit-learn mean log-lik.")
    run.report.table(columns, rows, caption="EM fits", flagged=[not row[2] for row in rows])
    if sklearn_mixture is None:
        run.report.note("scikit-learn is not installed: the comparison column is left out.")
    run.figure(figure, "em", "EM fits: ellipses at 1, 2, 3 sd; point size: responsibility")
    results["models"] = models
    return results


def _demo_kmeans(run: Run, data: dict, models: dict, seed: int) -> dict[str, Any]:
    """k-means against the full-covariance mixture on the stretched clusters."""
    import matplotlib.pyplot as plt

    from gaussmix import KMeans, plots

    x, labels = data["stretched"]
    kmeans = KMeans(4, random_state=seed).fit(x)
    mixture = models["stretched"]
    kmeans_ari = adjusted_rand_index(labels, kmeans.labels_)
    mixture_ari = adjusted_rand_index(labels, mixture.predict(x))
    run.report.heading("k-means versus the mixture on stretched clusters")
    run.report.table(
        ["method", "ARI"],
        [["k-means (K = 4)", kmeans_ari], ["Gaussian mixture, full covariances", mixture_ari]],
        caption="Recovery of the generating clusters",
    )
    figure, axes = plt.subplots(1, 2, figsize=(8.0, 3.8))
    plots.plot_kmeans(kmeans, x, ax=axes[0])
    axes[0].set_title(f"k-means (ARI {kmeans_ari:.2f})")
    plots.plot_mixture(mixture, x, ax=axes[1])
    axes[1].set_title(f"mixture (ARI {mixture_ari:.2f})")
    figure.tight_layout()
    run.figure(figure, "kmeans", "k-means assumes round clusters; the mixture does not")
    return {"kmeans_ari": kmeans_ari, "mixture_ari": mixture_ari}


def _demo_selection(run: Run, data: dict, sweep: tuple[int, int], seed: int) -> dict:
    """BIC and AIC against K on a dataset with known K."""
    name = "blobs" if "blobs" in data else "stretched"
    x, labels = data[name]
    run.report.heading(f"Model selection on {name}")
    with run.collect_warnings("model selection"):
        rows, _ = sweep_components(
            x,
            range(sweep[0], sweep[1] + 1),
            "full",
            "bic",
            n_init=_DEMO_RESTARTS,
            seed=seed,
        )
    result = selection_report(run, rows, "bic", f"K for {name}", "selection")
    truth = int(labels.max()) + 1
    text = f"BIC picks K = {result['best']}; the data were generated with {truth} components."
    (run.report.note if result["best"] == truth or truth > sweep[1] else run.warn)(text)
    result["dataset"] = name
    return result


def _demo_nuts(run: Run, data: dict, models: dict, settings: dict, seed: int) -> dict:
    """NUTS on sm1 from the EM answer, the posterior next to the point estimate."""
    x, _ = data["sm1"]
    model = models["sm1"]
    run.report.heading("NUTS on sm1: the posterior next to the EM estimate")
    run.report.paragraph(
        f"NUTS on the same NumPyro program, {nuts_text(settings)} on {len(x)} points, "
        "started at the EM answer. The demo keeps NUTS small to finish quickly: use "
        "gaussmix fit-mixture --backend mcmc (default 4 chains x 1000 + 1000) for real "
        "work. Draws are relabeled to the EM labelling before any summary."
    )
    with run.collect_warnings("NUTS on sm1"):
        tree = sample_mixture(model, x, settings, seed, progress_bar=False)
    results = mixture_posterior(run, model, tree, x, ["x0", "x1"], "NUTS on sm1")
    run.report.note(
        "EM here is maximum likelihood; the posterior also carries the program's default "
        "prior, weakly informative and scaled from the data (inverse Wishart with the data "
        "covariance as scale, means ~ N(data mean, covariance / 1)). For the small cluster "
        "far from the data mean, that prior on its mean widens its covariance: the "
        "difference between the two columns is the prior's doing, not a sampling error."
    )
    attributes = tree["sample_stats"].attrs
    results["compile_seconds"] = float(attributes.get("compile_time", math.nan))
    results["sampling_seconds"] = float(attributes.get("sampling_time", math.nan))
    run.report.paragraph(
        f"Compilation took {results['compile_seconds']:.1f} s, sampling "
        f"{results['sampling_seconds']:.1f} s."
    )
    return results


#: The reference material's two-Gaussian example and its starting values (curve_fit's p0).
TWO_GAUSSIANS = {
    "x": np.arange(10.0),
    "y": np.array([0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 4.0, 3.0, 2.0, 1.0]),
    "start": {
        "peak0_height": 3.0,
        "peak0_center": 3.0,
        "peak0_sigma": 1.0,
        "peak1_height": 4.0,
        "peak1_center": 6.0,
        "peak1_sigma": 1.0,
    },
}


#: The demo's synthetic spectra: (height, center, sigma) of three Gaussian peaks on the
#: linear baseline c0 + c1 x, x in [0, 100], Normal noise.
SPECTRUM_PEAKS = ((10.0, 25.0, 3.0), (6.0, 50.0, 5.0), (8.0, 70.0, 2.0))


SPECTRUM_BASELINE = (1.0, 0.02)


SPECTRUM_NOISE = 0.5


def _gaussian_peaks_function(n_peaks: int, baseline_degree: int | None):
    """curve_fit's model: Gaussian peaks (height, center, sigma each), then the
    polynomial baseline coefficients c0, c1, ..."""

    def curve(x, *theta):
        total = np.zeros_like(x, dtype=float)
        for index in range(n_peaks):
            height, center, sigma = theta[3 * index : 3 * index + 3]
            total = total + height * np.exp(-0.5 * ((x - center) / sigma) ** 2)
        if baseline_degree is not None:
            coefficients = theta[3 * n_peaks :]
            total = total + sum(c * x**k for k, c in enumerate(coefficients))
        return total

    return curve


def scipy_curve_fit(x, y, start: dict[str, float], n_peaks: int, baseline_degree: int | None):
    """scipy's curve_fit from ``start``: (values, standard errors, RSS) by gaussmix name."""
    from scipy.optimize import curve_fit

    names = [f"peak{i}_{p}" for i in range(n_peaks) for p in ("height", "center", "sigma")]
    if baseline_degree is not None:
        names += [f"baseline_c{k}" for k in range(baseline_degree + 1)]
    function = _gaussian_peaks_function(n_peaks, baseline_degree)
    values, covariance = curve_fit(function, x, y, p0=[start[name] for name in names])
    rss = float(np.sum((y - function(x, *values)) ** 2))
    errors = np.sqrt(np.diag(covariance))
    return dict(zip(names, values, strict=True)), dict(zip(names, errors, strict=True)), rss


def _moved_off(truth: dict[str, float]) -> dict[str, float]:
    """Starting values near the truth: + 10 %, centres + half the peak's width."""
    start = {name: 1.1 * value for name, value in truth.items()}
    for name, value in truth.items():
        if name.endswith("_center"):
            start[name] = value + 0.5 * truth[name.replace("_center", "_sigma")]
    return start


def synthetic_spectra(n_spectra: int, n_points: int, seed: int):
    x = np.linspace(0.0, 100.0, n_points)
    truth = _gaussian_peaks_function(len(SPECTRUM_PEAKS), 1)(
        x, *np.ravel(SPECTRUM_PEAKS), *SPECTRUM_BASELINE
    )
    rng = np.random.default_rng(seed)
    return x, truth + SPECTRUM_NOISE * rng.standard_normal((n_spectra, n_points))


def demo_two_gaussians(run: Run, scipy_optimize: Any) -> dict[str, Any]:
    from gaussmix import fit_peaks

    example = TWO_GAUSSIANS
    run.report.heading("Peaks: the two-Gaussian example next to curve_fit", level=3)
    run.report.paragraph(
        "x = 0 ... 9, y = 0 1 2 3 4 5 4 3 2 1, starting values heights 3 and 4, centres 3 "
        "and 6, widths 1 and 1 (curve_fit's p0). gaussmix: Levenberg-Marquardt on the peak "
        "program's log posterior, standard errors from the Laplace approximation."
    )
    with run.collect_warnings("two Gaussians"):
        fit = fit_peaks(example["x"], example["y"], ("gaussian", "gaussian"), init=example["start"])
    names = list(example["start"])
    columns = ["parameter", "gaussmix", "gaussmix stderr"]
    rows = [[name, float(fit.params[name]), float(fit.stderr[name])] for name in names]
    rows.append(["RSS", float(fit.rss), None])
    results = {"gaussmix": {"params": fit.params, "stderr": fit.stderr, "rss": fit.rss}}
    if scipy_optimize is not None:
        values, errors, rss = scipy_curve_fit(example["x"], example["y"], example["start"], 2, None)
        columns += ["curve_fit", "curve_fit stderr", "relative difference"]
        for row in rows[:-1]:
            row += [
                values[row[0]],
                errors[row[0]],
                abs(row[1] - values[row[0]]) / abs(values[row[0]]),
            ]
        rows[-1] += [rss, None, abs(float(fit.rss) - rss) / rss]
        results["curve_fit"] = {"params": values, "stderr": errors, "rss": rss}
    run.report.table(columns, rows, caption="Two Gaussians: gaussmix MAP and curve_fit")
    axis = fit.plot()
    axis.set_title("two Gaussians (MAP)")
    run.figure(axis.figure, "peaks-two-gaussians", "The two-Gaussian example: data, fit, peaks")
    return results


def demo_spectra(run: Run, scipy_optimize: Any, n_spectra: int, n_points: int, seed: int):
    """A batch of synthetic spectra in one MAP call, against curve_fit spectrum by spectrum."""
    from gaussmix import fit_peaks

    x, spectra = synthetic_spectra(n_spectra, n_points, seed)
    run.report.heading(f"Peaks: {n_spectra} spectra fitted as one batch", level=3)
    run.report.paragraph(
        f"Three Gaussian peaks (heights, centres, widths {SPECTRUM_PEAKS}) on the baseline "
        f"{SPECTRUM_BASELINE[0]} + {SPECTRUM_BASELINE[1]} x, noise sd {SPECTRUM_NOISE}, "
        f"{n_points} points each. gaussmix finds its starting values itself and fits the "
        "batch in one compiled call; curve_fit runs in a loop from the true values moved "
        "off (heights, widths and baseline + 10 %, centres + half a width)."
    )
    start = time.perf_counter()
    with run.collect_warnings("spectra"):
        fit = fit_peaks(x, spectra, ("gaussian",) * 3, baseline="linear")
    seconds = time.perf_counter() - start
    truth = {
        f"peak{i}_{name}": value
        for i, peak in enumerate(SPECTRUM_PEAKS)
        for name, value in zip(("height", "center", "sigma"), peak, strict=True)
    }
    truth.update(baseline_c0=SPECTRUM_BASELINE[0], baseline_c1=SPECTRUM_BASELINE[1])
    columns = ["spectrum", "converged", "iterations", "RSS", "peak1_center", "peak1_center stderr"]
    rows = [
        [
            index,
            bool(fit.converged[index]),
            int(fit.n_iter[index]),
            float(fit.rss[index]),
            float(fit.params["peak1_center"][index]),
            float(fit.stderr["peak1_center"][index]),
        ]
        for index in range(n_spectra)
    ]
    results: dict[str, Any] = {"gaussmix_seconds": seconds, "rss": fit.rss, "truth": truth}
    if scipy_optimize is not None:
        columns += ["curve_fit RSS", "relative RSS difference"]
        start = time.perf_counter()
        curve_fit_rss = [
            scipy_curve_fit(x, spectra[i], _moved_off(truth), 3, 1)[2] for i in range(n_spectra)
        ]
        results["curve_fit_seconds"] = time.perf_counter() - start
        results["curve_fit_rss"] = curve_fit_rss
        for row, rss in zip(rows, curve_fit_rss, strict=True):
            row += [rss, abs(row[3] - rss) / rss]
    run.report.table(
        columns,
        rows,
        caption=f"Batched MAP fit ({seconds:.2f} s with compilation"
        + (
            f"; curve_fit loop {results['curve_fit_seconds']:.2f} s)"
            if scipy_optimize is not None
            else ")"
        )
        + f"; true peak1_center {SPECTRUM_PEAKS[1][1]}",
        flagged=[not row[1] for row in rows],
    )
    axis = fit.plot(0)
    axis.set_title("spectrum 0 (MAP)")
    run.figure(axis.figure, "peaks-spectrum", "Spectrum 0 of the batch: data, fit, components")
    return fit, x, spectra, results


def _demo_peaks(run: Run, settings: dict[str, int], seed: int, quick: bool) -> dict[str, Any]:
    from gaussmix import fit_peaks, save

    scipy_optimize = _optional_module("scipy.optimize")
    run.report.heading("Peak fitting")
    if scipy_optimize is None:
        run.report.note(
            "scipy is not installed, so the curve_fit columns are left out "
            "(pip install scipy to compare)."
        )
    two_gaussians = demo_two_gaussians(run, scipy_optimize)
    n_spectra, n_points = (2, 200) if quick else (3, 400)
    fit, x, spectra, batch = demo_spectra(run, scipy_optimize, n_spectra, n_points, seed)
    save(fit, run.folder / "model-peaks.npz")
    run.files.append("model-peaks.npz")
    run.report.heading("Peaks: NUTS on spectrum 0", level=3)
    run.report.paragraph(
        f"NUTS on the same peak program, {nuts_text(settings)}, started at the MAP (kept "
        "small in the demo). Curves: posterior medians with 90 % bands."
    )
    point = peak_point(fit, 0)
    with run.collect_warnings("NUTS on spectrum 0"):
        sampled = fit_peaks(
            x, spectra[0], ("gaussian",) * 3, baseline="linear", init=point, backend="mcmc",
            seed=seed, progress_bar=False, **settings,
        )  # fmt: skip
    posterior = posterior_section(
        run, sampled.posterior, point, "NUTS on spectrum 0", "MAP estimate", "posterior-peaks"
    )
    attributes = sampled.posterior["sample_stats"].attrs
    posterior["compile_seconds"] = float(attributes.get("compile_time", math.nan))
    posterior["sampling_seconds"] = float(attributes.get("sampling_time", math.nan))
    axis = sampled.plot()
    axis.set_title("spectrum 0 (NUTS)")
    run.figure(axis.figure, "peaks-nuts", "Spectrum 0 by NUTS: posterior medians, 90 % bands")
    return {"two_gaussians": two_gaussians, "batch": batch, "nuts": posterior}
