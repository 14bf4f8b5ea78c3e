"""New handwritten digits from a Gaussian mixture fitted in PCA space.

scikit-learn's bundled handwritten digits (1797 images of 8 x 8 pixels) are projected by
PCA (NumPy's SVD) onto the components that keep 99 % of the variance (about 41 of 64);
``gaussmix.select_components`` scores full-covariance mixtures by AIC over a grid of K
(a coarse one in ``--quick``); the chosen mixture draws 100 new points, which the inverse
PCA maps back to images, shown in a grid next to 100 real digits.

Asserted: the PCA keeps at least 99 % of the variance with 35 to 45 dimensions; AIC
prefers more components than the smallest of the grid; the mean of the 100 generated
images equals the data mean within Monte Carlo error (5 standard errors per pixel).

scikit-learn is used only for ``load_digits`` (it is a test/bench extra of gaussmix); the
example says so and stops if it is absent.

Run: python examples/digits_generation.py [--quick] [--out DIR]
"""

import argparse
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


def pca(x: np.ndarray, variance_kept: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Principal components keeping ``variance_kept`` of the variance, by SVD.

    Returns the scores (N, d), the components (d, P), the mean (P,) and the fraction kept.
    """
    mean = x.mean(axis=0)
    _, singular_values, components = np.linalg.svd(x - mean, full_matrices=False)
    explained = np.cumsum(singular_values**2) / np.sum(singular_values**2)
    n_kept = int(np.searchsorted(explained, variance_kept) + 1)
    return (
        (x - mean) @ components[:n_kept].T,
        components[:n_kept],
        mean,
        float(explained[n_kept - 1]),
    )


def main() -> None:
    args = parse_arguments()
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        print(
            "digits_generation needs scikit-learn for its bundled digits (load_digits); "
            "install it (pip install scikit-learn, or gaussmix[test]) to run this example."
        )
        sys.exit(0)
    args.out.mkdir(parents=True, exist_ok=True)
    images = load_digits().data.astype(float)  # (1797, 64), pixel values 0..16
    scores, components, mean, kept = pca(images, 0.99)
    print(f"digits {images.shape}: PCA keeps {kept:.4f} of the variance in {scores.shape[1]} dims")

    grid = range(10, 21, 10) if args.quick else range(20, 221, 20)
    table, mixture = gaussmix.select_components(
        scores, n_components=grid, covariance_type="full", criterion="aic", seed=0
    )
    aic = np.asarray(table.criterion, float)
    print("  K  " + "".join(f"{k:>10d}" for k in grid))
    print("AIC  " + "".join(f"{value:10.0f}" for value in aic))
    print(f"AIC picks K = {mixture.n_components}")

    new_scores = np.asarray(mixture.sample(100)[0])
    generated = new_scores @ components + mean
    real = images[np.random.default_rng(0).choice(len(images), 100, replace=False)]

    figure = Figure(figsize=(13, 4.4), layout="constrained")
    criterion_axis, real_axis, generated_axis = figure.subplots(1, 3)
    plots.plot_information_criteria(np.asarray(list(grid)), {"AIC": aic}, ax=criterion_axis)
    criterion_axis.set_title(f"AIC over K (PCA: {scores.shape[1]} dims)")
    plots.plot_image_grid(real, n_columns=10, ax=real_axis)
    real_axis.set_title("100 real digits")
    plots.plot_image_grid(np.clip(generated, 0.0, 16.0), n_columns=10, ax=generated_axis)
    generated_axis.set_title(f"100 digits drawn from the K={mixture.n_components} mixture")
    save(figure, args.out, "digits_generation.png")

    standard_error = images.std(axis=0) / np.sqrt(len(generated))
    worst = np.max(np.abs(generated.mean(0) - images.mean(0)) / np.maximum(standard_error, 1e-12))
    print(f"generated mean image vs data mean: worst pixel {worst:.2f} standard errors apart")

    assert kept >= 0.99 and 35 <= scores.shape[1] <= 45, f"PCA kept {scores.shape[1]} dims"
    assert mixture.n_components > min(grid), "AIC should prefer more than the smallest K"
    assert worst < 5.0, "the generated digits' mean should match the data's"
    print("claims hold: 99 % variance in about 41 dims; AIC picks K > min; generated mean right")


if __name__ == "__main__":
    main()
