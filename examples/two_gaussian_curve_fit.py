"""Two Gaussians fitted to ten points: scipy's curve_fit, gaussmix MAP and the posterior.

The classic curve_fit exercise: y = [0, 1, 2, 3, 4, 5, 4, 3, 2, 1] at x = 0...9, modelled
as two Gaussian peaks :math:`h\\,e^{-(x-c)^2 / 2\\sigma^2}` from the starting values
heights (3, 4), centres (3, 6), widths (1, 1). ``scipy.optimize.curve_fit`` and
``gaussmix.fit_peaks`` (MAP: flat priors, the widths bounded to [0.5, 9], half the point
spacing at least) reach the same optimum from the same start; NUTS (``backend="mcmc"``,
the same priors) shows what the ten points really say: the second peak is barely
identified, which curve_fit's standard errors only hint at, and the data do not even say
on which side of the main peak the small one sits (right at the MAP, left in many
draws). The widths carry this example's own prior, so gaussmix keeps the peak labels as
sampled (it orders exchangeable peaks by centre only under its default priors); the
table names the peaks per draw by area (``peak0`` the larger), so that each row follows
one physical peak.

Second part: a sum of Gaussians used as a basis to fit a smooth curve (like a polynomial
fit): nine Gaussians with fixed, evenly spaced centres and a fixed width fitted to 60
noisy points of :math:`f(x) = 2 + \\sin x + 0.2 x`, and its integral over [0, 10]
computed analytically (error functions, ``PeakFit.integrate``), next to a degree-8
polynomial.

Asserted: gaussmix MAP = curve_fit (equal residual sum of squares to 1e-9, values within
1e-3 standard errors, standard errors to 1e-4); the MAP curve lies inside the posterior's
90 % band at every data point; the analytic integral equals numerical quadrature of the
fitted curve (1e-8 relative) and the true integral within 1 %. Printed, not asserted (it
is what the data leave open): the share of draws with the small peak on the left.

Run: python examples/two_gaussian_curve_fit.py [--quick] [--out DIR]
"""

import argparse
import math
import sys
from pathlib import Path

import jax
import matplotlib
import numpy as np
import numpyro.distributions as dist
from matplotlib.figure import Figure

import gaussmix
from gaussmix import plots

jax.config.update("jax_enable_x64", True)  # float64 on CPU, before any array is made
matplotlib.use("Agg")

ROOT = Path(__file__).resolve().parents[1]
DPI = 80
NAMES = (
    "peak0_height",
    "peak0_center",
    "peak0_sigma",
    "peak1_height",
    "peak1_center",
    "peak1_sigma",
)


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


def gaussian(x, height, center, sigma):
    return height * np.exp(-0.5 * ((x - center) / sigma) ** 2)


def two_gaussians(x, height0, center0, sigma0, height1, center1, sigma1):
    return gaussian(x, height0, center0, sigma0) + gaussian(x, height1, center1, sigma1)


def smooth_curve(x):
    return 2.0 + np.sin(x) + 0.2 * x


def main() -> None:
    args = parse_arguments()
    try:
        from scipy.optimize import curve_fit
    except ImportError:
        print(
            "two_gaussian_curve_fit compares against scipy's curve_fit; install scipy "
            "(pip install scipy, or gaussmix[test]) to run this example."
        )
        sys.exit(0)
    args.out.mkdir(parents=True, exist_ok=True)

    # Part 1: the ten points.
    x = np.arange(10.0)
    y = np.array([0.0, 1, 2, 3, 4, 5, 4, 3, 2, 1])
    start = dict(zip(NAMES, (3.0, 3.0, 1.0, 4.0, 6.0, 1.0), strict=True))
    scipy_values, scipy_covariance = curve_fit(
        two_gaussians, x, y, p0=list(start.values()), xtol=1e-15, ftol=1e-15, gtol=1e-15
    )
    scipy_rss = float(np.sum((two_gaussians(x, *scipy_values) - y) ** 2))
    scipy_errors = np.sqrt(np.diag(scipy_covariance))
    # A peak narrower than the spacing of the points (1) cannot be resolved; without this
    # bound NUTS chases spikes between points (many divergent transitions). The optimum
    # (width 0.68) is inside the bound, so the MAP is curve_fit's; with the same priors the
    # MAP here and the one NUTS starts from are one compiled program.
    width_priors = {f"peak{i}_sigma": dist.Uniform(0.5, 9.0) for i in range(2)}
    fit = gaussmix.fit_peaks(
        x, y, peaks=("gaussian", "gaussian"), init=start, priors=width_priors, backend="map"
    )
    map_values = np.array([float(fit.params[name]) for name in NAMES])
    map_errors = np.array([float(fit.stderr[name]) for name in NAMES])
    draws = (
        dict(num_warmup=300, num_samples=300, num_chains=1)
        if args.quick
        else dict(num_warmup=1000, num_samples=1000, num_chains=2)
    )
    bayes = gaussmix.fit_peaks(
        x,
        y,
        peaks=("gaussian", "gaussian"),
        init=dict(zip(NAMES, map_values, strict=True)),
        backend="mcmc",
        priors=width_priors,
        progress_bar=False,
        **draws,
    )
    posterior = bayes.posterior["posterior"]
    samples = {name: np.asarray(posterior[name]).ravel() for name in NAMES}

    # The width priors are this example's own, so gaussmix keeps the peaks' labels as
    # sampled (it orders exchangeable peaks by centre only under its default priors).
    # Which side of the main peak the small one sits on is a real question the ten points
    # leave open: ask it of the draws ordered by centre, then name the peaks per draw by
    # area (height x sigma), the larger and the smaller one.
    def area(i):
        return samples[f"peak{i}_height"] * samples[f"peak{i}_sigma"]

    peak1_is_left = samples["peak1_center"] < samples["peak0_center"]
    small_is_left = np.where(peak1_is_left, area(1) < area(0), area(0) < area(1))
    swap = area(1) > area(0)
    ordered = {}
    for parameter in ("height", "center", "sigma"):
        first, second = samples[f"peak0_{parameter}"], samples[f"peak1_{parameter}"]
        ordered[f"peak0_{parameter}"] = np.where(swap, second, first)
        ordered[f"peak1_{parameter}"] = np.where(swap, first, second)
    print(
        f"NUTS: {swap.size} draws; the small peak sits left of the main one in "
        f"{small_is_left.mean():.0%} of them (right at the MAP); the table names the peaks "
        "per draw by area"
    )
    print(
        f"{'parameter':<14}{'start':>7}{'curve_fit':>22}{'gaussmix MAP':>22}"
        f"{'posterior median [5 %, 95 %]':>34}  (peak0 = larger area)"
    )
    for index, name in enumerate(NAMES):
        low, median, high = np.quantile(ordered[name], [0.05, 0.5, 0.95])
        print(
            f"{name:<14}{start[name]:7.2f}{scipy_values[index]:12.6f} +- {scipy_errors[index]:6.3f}"
            f"{map_values[index]:12.6f} +- {map_errors[index]:6.3f}"
            f"{median:14.3f} [{low:7.3f}, {high:7.3f}]"
        )
    print(
        f"residual sum of squares: curve_fit {scipy_rss:.12f}, gaussmix MAP {float(fit.rss):.12f}"
    )
    map_at_data = two_gaussians(x, *map_values)
    curves_at_data = two_gaussians(x[None], *(samples[name][:, None] for name in NAMES))
    band_low, band_high = np.quantile(curves_at_data, [0.05, 0.95], axis=0)

    # Part 2: nine Gaussians as a basis for a smooth curve.
    rng = np.random.default_rng(0)
    x_smooth = np.linspace(0.0, 10.0, 60)
    y_smooth = smooth_curve(x_smooth) + 0.1 * rng.standard_normal(x_smooth.size)
    centres = np.linspace(0.0, 10.0, 9)
    n_basis = centres.size
    basis = gaussmix.fit_peaks(
        x_smooth,
        y_smooth,
        peaks=("gaussian",) * n_basis,
        init={
            **{f"peak{i}_height": float(smooth_curve(c)) / 2 for i, c in enumerate(centres)},
            **{f"peak{i}_center": float(c) for i, c in enumerate(centres)},
            **{f"peak{i}_sigma": 1.25 for i in range(n_basis)},
        },
        # Fixed centres and width: a linear basis, like a polynomial's powers of x. Its
        # coefficients may be negative: flat priors on both signs.
        fixed={
            **{f"peak{i}_center": float(c) for i, c in enumerate(centres)},
            **{f"peak{i}_sigma": 1.25 for i in range(n_basis)},
        },
        priors={f"peak{i}_height": dist.Uniform(-100.0, 100.0) for i in range(n_basis)},
        backend="map",
    )
    integral = basis.integrate(0.0, 10.0)
    integral_value = float(integral.value)
    fine = np.linspace(0.0, 10.0, 100_001)
    quadrature = float(np.trapezoid(np.asarray(basis.predict(fine)), fine))
    exact = 31.0 - math.cos(10.0)
    polynomial = np.polynomial.Polynomial.fit(x_smooth, y_smooth, 8)
    polynomial_integral = float(polynomial.integ()(10.0) - polynomial.integ()(0.0))
    print(f"\nintegral of f = 2 + sin x + 0.2 x over [0, 10]: exact {exact:.5f}")
    print(
        f"  Gaussian basis, {integral.method}: {integral_value:.5f} +- {float(integral.stderr):.5f}"
        f"; quadrature of the fitted curve {quadrature:.5f}"
    )
    print(f"  degree-8 polynomial:      {polynomial_integral:.5f}")

    figure = Figure(figsize=(13, 4.2), layout="constrained")
    fit_axis, posterior_axis, basis_axis = figure.subplots(1, 3)
    grid = np.linspace(-0.5, 9.5, 300)
    fit_axis.plot(x, y, "ko", label="data")
    fit_axis.plot(
        grid, two_gaussians(grid, *scipy_values), "C1", lw=4, alpha=0.5, label="curve_fit"
    )
    fit_axis.plot(grid, np.asarray(fit.predict(grid)), "C0--", label="gaussmix MAP")
    fit_axis.plot(grid, two_gaussians(grid, *start.values()), "0.6", ls=":", label="start")
    fit_axis.set_title("same optimum from the same start")
    fit_axis.legend(fontsize="small")
    draw_components = {
        label: gaussian(
            grid[None],
            ordered[f"peak{i}_height"][:, None],
            ordered[f"peak{i}_center"][:, None],
            ordered[f"peak{i}_sigma"][:, None],
        )
        for i, label in enumerate(("larger peak", "smaller peak"))
    }
    plots.plot_peaks(
        x,
        y,
        grid=grid,
        total=sum(draw_components.values()),
        components=draw_components,
        total_label="posterior median",
        ax=posterior_axis,
    )
    posterior_axis.set_ylim(-0.5, 8.0)  # draws with a narrow spike between points reach higher
    posterior_axis.set_title("NUTS: median and 90 % bands")
    plots.plot_peaks(
        x_smooth,
        y_smooth,
        grid=fine[::250],
        total=np.asarray(basis.predict(fine[::250])),
        components=basis.components(fine[::250]),
        total_label="sum of 9 Gaussians",
        ax=basis_axis,
    )
    basis_axis.plot(fine[::250], polynomial(fine[::250]), "k:", label="degree-8 polynomial")
    basis_axis.get_legend().remove()
    basis_axis.set_title(f"Gaussian basis: integral {integral_value:.3f} (exact {exact:.3f})")
    save(figure, args.out, "two_gaussian_curve_fit.png")

    # Same optimum: equal RSS; parameters within a thousandth of a standard error (the
    # second peak's width is so poorly determined that optimizers stop anywhere in a
    # flat valley 1e-5 wide); equal standard errors.
    assert abs(float(fit.rss) - scipy_rss) / scipy_rss < 1e-9, "RSS differs from curve_fit"
    assert np.all(np.abs(map_values - scipy_values) < 1e-3 * scipy_errors), (
        "not curve_fit's optimum"
    )
    np.testing.assert_allclose(map_errors, scipy_errors, rtol=1e-4)
    inside = (band_low <= map_at_data) & (map_at_data <= band_high)
    assert inside.all(), f"MAP curve outside the posterior 90 % band at x = {x[~inside]}"
    assert abs(integral_value - quadrature) / quadrature < 1e-8, "analytic integral != quadrature"
    assert abs(integral_value - exact) / exact < 0.01, "the basis integral misses the exact one"
    print("claims hold: MAP = curve_fit; MAP curve inside the posterior band; integral right")


if __name__ == "__main__":
    main()
