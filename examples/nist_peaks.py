"""NIST StRD Gauss3: two strongly blended Gaussian peaks on an exponential baseline.

Gauss3 (250 points) is the hardest of NIST's Gaussian-peak reference problems:

.. math:: y = b_1 e^{-b_2 x} + b_3 e^{-(x - b_4)^2 / b_5^2} + b_6 e^{-(x - b_7)^2 / b_8^2},

i.e. ``baseline_amplitude`` = b1, ``baseline_rate`` = b2, peak heights b3 and b6, centres
b4 and b7, and widths :math:`\\sigma = b_5 / \\sqrt 2`, :math:`b_8 / \\sqrt 2`.
``gaussmix.fit_peaks`` fits it from NIST's first starting point by MAP (flat priors, so
least squares) and by NUTS. Drawn: the MAP decomposition into baseline and peaks, and the
posterior bands (90 %) of the whole curve and of each component. Printed: certified
values and standard deviations beside the MAP values, Laplace standard errors and
posterior means and sds. Asserted: the MAP reaches every certified value to at least 6
significant digits (NIST's log relative error >= 6), the certified residual sum of
squares to 1e-8 relative, Laplace errors within 1 % of the certified standard
deviations, and posterior means within 0.5 (``--quick``: 1) certified standard
deviation of the certified values.

The data are read from ``$GAUSSMIX_DATA/nist`` (default ``../shared/data/nist`` beside
the repository); without them the example says so and stops cleanly.

Run: python examples/nist_peaks.py [--quick] [--out DIR]
"""

import argparse
import math
import os
import sys
from pathlib import Path

import jax
import matplotlib
import numpy as np
from matplotlib.figure import Figure

import gaussmix
from gaussmix import plots

jax.config.update("jax_enable_x64", True)  # float64 on CPU, before any array is made
matplotlib.use("Agg")

ROOT = Path(__file__).resolve().parents[1]
DPI = 80
DATA = Path(os.environ.get("GAUSSMIX_DATA", ROOT.parent / "shared" / "data")) / "nist"

#: NIST parameter -> (gaussmix site, factor turning the NIST value into the site's value)
SITES = {
    "b1": ("baseline_amplitude", 1.0),
    "b2": ("baseline_rate", 1.0),
    "b3": ("peak0_height", 1.0),
    "b4": ("peak0_center", 1.0),
    "b5": ("peak0_sigma", 1.0 / math.sqrt(2.0)),
    "b6": ("peak1_height", 1.0),
    "b7": ("peak1_center", 1.0),
    "b8": ("peak1_sigma", 1.0 / math.sqrt(2.0)),
}


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: runs in seconds")
    parser.add_argument(
        "--out", type=Path, default=ROOT / "out", help="folder for the PNG figures (default: out/)"
    )
    return parser.parse_args()


def save(figure: Figure, out: Path, name: str) -> None:
    path = out / name
    figure.savefig(path, dpi=DPI)
    print(f"wrote {path}")


def read_nist(path: Path) -> dict:
    """Starting values, certified values and SDs, certified RSS, and the (x, y) data."""
    lines = path.read_text().splitlines()
    start, certified, certified_sd = {}, {}, {}
    for line in lines:
        words = line.split()
        if len(words) == 6 and words[1] == "=" and words[0] in SITES:
            start[words[0]] = float(words[2])
            certified[words[0]] = float(words[4])
            certified_sd[words[0]] = float(words[5])
    rss = next(float(line.split()[-1]) for line in lines if "Residual Sum of Squares" in line)
    first = next(i for i, line in enumerate(lines) if line.split()[:3] == ["Data:", "y", "x"])
    y, x = np.loadtxt(lines[first + 1 :], unpack=True)
    return dict(start=start, certified=certified, certified_sd=certified_sd, rss=rss, x=x, y=y)


def gaussian(x, height, center, sigma):
    return height * np.exp(-0.5 * ((x - center) / sigma) ** 2)


def component_curves(x: np.ndarray, values: dict) -> dict:
    """name -> curve(s) of the baseline and each peak; values may hold (S,) draws."""
    column = {name: np.asarray(value, float)[..., None] for name, value in values.items()}
    return {
        "baseline": column["baseline_amplitude"] * np.exp(-column["baseline_rate"] * x),
        **{
            f"peak {i + 1}": gaussian(
                x, column[f"peak{i}_height"], column[f"peak{i}_center"], column[f"peak{i}_sigma"]
            )
            for i in range(2)
        },
    }


def main() -> None:
    args = parse_arguments()
    path = DATA / "Gauss3.dat"
    if not path.exists():
        print(
            f"NIST reference data absent: {path} not found. Put NIST StRD Gauss3.dat there or "
            "set GAUSSMIX_DATA to the folder holding nist/. Nothing to do."
        )
        sys.exit(0)
    args.out.mkdir(parents=True, exist_ok=True)
    nist = read_nist(path)
    x, y = nist["x"], nist["y"]
    init = {SITES[b][0]: value * SITES[b][1] for b, value in nist["start"].items()}
    certified = {SITES[b][0]: value * SITES[b][1] for b, value in nist["certified"].items()}
    certified_sd = {SITES[b][0]: v * SITES[b][1] for b, v in nist["certified_sd"].items()}

    fit = gaussmix.fit_peaks(
        x, y, peaks=("gaussian", "gaussian"), baseline="exponential", init=init, backend="map"
    )
    map_values = {name: float(fit.params[name]) for name in certified}
    map_errors = {name: float(fit.stderr[name]) for name in certified}
    draws = (
        dict(num_warmup=100, num_samples=100, num_chains=1)
        if args.quick
        else dict(num_warmup=1000, num_samples=1000, num_chains=2)
    )
    bayes = gaussmix.fit_peaks(
        x,
        y,
        peaks=("gaussian", "gaussian"),
        baseline="exponential",
        init=map_values,
        backend="mcmc",
        progress_bar=False,
        **draws,
    )
    posterior = bayes.posterior["posterior"]
    samples = {name: np.asarray(posterior[name]).ravel() for name in certified}

    print(
        f"Gauss3 ({len(x)} points), MAP from NIST start 1; NUTS {samples['peak0_height'].size} draws"
    )
    header = (
        f"{'site':<20}{'certified':>14}{'cert. SD':>11}{'MAP':>16}{'LRE':>6}"
        f"{'Laplace SE':>12}{'post. mean':>13}{'post. sd':>10}"
    )
    print(header)
    log_relative_error, se_ratio, posterior_z = {}, {}, {}
    for name, value in certified.items():
        relative = abs(map_values[name] - value) / abs(value)
        log_relative_error[name] = -math.log10(relative) if relative > 0 else 16.0
        se_ratio[name] = map_errors[name] / certified_sd[name]
        posterior_z[name] = abs(samples[name].mean() - value) / certified_sd[name]
        print(
            f"{name:<20}{value:14.8g}{certified_sd[name]:11.4g}{map_values[name]:16.10g}"
            f"{log_relative_error[name]:6.1f}{map_errors[name]:12.4g}"
            f"{samples[name].mean():13.6g}{samples[name].std():10.4g}"
        )
    rss = float(fit.rss)
    print(f"residual sum of squares: MAP {rss:.10g}, certified {nist['rss']:.10g}")

    grid = np.linspace(x.min(), x.max(), 400)
    figure = Figure(figsize=(15, 4.4), layout="constrained")
    map_axis, posterior_axis, residual_axis = figure.subplots(1, 3)
    map_components = component_curves(grid, map_values)
    plots.plot_peaks(
        x,
        y,
        grid=grid,
        total=sum(map_components.values()),
        components=map_components,
        total_label="MAP fit",
        ax=map_axis,
    )
    map_axis.set_title("Gauss3: MAP decomposition (= least squares)")
    draw_components = component_curves(grid, samples)
    plots.plot_peaks(
        x,
        y,
        grid=grid,
        total=sum(draw_components.values()),
        components=draw_components,
        quantiles=(0.05, 0.95),
        total_label="posterior median",
        ax=posterior_axis,
    )
    posterior_axis.set_title("NUTS posterior: median and 90 % bands")
    # The bands are narrow at this scale: show them around the MAP curve, with residuals.
    map_curve = sum(map_components.values())
    total_draws = sum(draw_components.values())
    residual_axis.axhline(0.0, color="0.5", lw=0.8)
    residual_axis.scatter(x, y - sum(component_curves(x, map_values).values()), s=6, c="0.35")
    low, high = np.quantile(total_draws - map_curve, [0.05, 0.95], axis=0)
    residual_axis.fill_between(grid, low, high, color="C0", alpha=0.5, label="90 % band - MAP")
    residual_axis.set_title(f"residuals (MAP noise sd {math.sqrt(rss / (len(x) - 8)):.2f})")
    residual_axis.legend(fontsize="small")
    save(figure, args.out, "nist_peaks.png")

    posterior_bound = 1.0 if args.quick else 0.5
    assert min(log_relative_error.values()) >= 6, (
        f"MAP misses certified values: {log_relative_error}"
    )
    assert abs(rss - nist["rss"]) / nist["rss"] < 1e-8, "MAP misses the certified RSS"
    assert all(abs(r - 1) < 0.01 for r in se_ratio.values()), (
        f"Laplace SE / certified SD: {se_ratio}"
    )
    assert max(posterior_z.values()) < posterior_bound, f"posterior means off: {posterior_z}"
    print(
        "claims hold: MAP = certified values (LRE >= 6) and RSS; Laplace SE = certified SD "
        f"within 1 %; posterior means within {posterior_bound} certified SD"
    )


if __name__ == "__main__":
    main()
