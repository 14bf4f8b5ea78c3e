"""Extreme deconvolution: a mixture fitted to noisy points, with and without their errors.

Two elongated clusters (1 000 points in 2-D) are observed through heteroscedastic Gaussian
errors: each point has its own error covariance (random orientation, standard deviations
from about 0.3 to 2.5, larger than the clusters' narrow width). A naive fit of the noisy
points describes the blurred clusters; ``fit(X, measurement_covariances=S)`` (Bovy, Hogg &
Roweis 2011) describes the clusters before the blur. Panels: the true points with the true
2-sigma ellipses; the observations with the errors of a few of them (1-sigma ellipses)
and the naive fit; the observations with the deconvolved fit and, in black, the truth.
Printed: each fit's covariances against the truth. Asserted: the deconvolved covariances
are at least 3x closer to the truth than the naive ones (relative Frobenius error), and
the deconvolved fit scores the noisy points (under their errors) better than the naive one.

Run: python examples/deconvolution.py [--quick] [--out DIR]
"""

import argparse
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
TRUE_WEIGHTS = np.array([0.5, 0.5])
TRUE_MEANS = np.array([[-3.0, 0.0], [3.0, 1.0]])
TRUE_COVARIANCES = np.array([[[2.0, 1.2], [1.2, 1.0]], [[1.5, -0.9], [-0.9, 0.8]]])


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: runs in seconds")
    parser.add_argument(
        "--out", type=Path, default=ROOT / "out", help="folder for the PNG figures (default: out/)"
    )
    return parser.parse_args()


def draw(n: int, rng: np.random.Generator):
    """True points (n, 2), their labels, noisy observations and error covariances (n, 2, 2)."""
    labels = rng.choice(2, size=n, p=TRUE_WEIGHTS)
    truth = np.empty((n, 2))
    for k in range(2):
        rows = labels == k
        truth[rows] = rng.multivariate_normal(TRUE_MEANS[k], TRUE_COVARIANCES[k], rows.sum())
    angle = rng.uniform(0, np.pi, n)
    rotation = np.stack([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    rotation = np.moveaxis(rotation, -1, 0)  # (n, 2, 2)
    scales = rng.uniform(0.3, 2.5, (n, 2))
    noise = rotation @ (scales[:, :, None] ** 2 * np.eye(2)) @ np.swapaxes(rotation, 1, 2)
    errors = np.einsum("nij,nj->ni", np.linalg.cholesky(noise), rng.standard_normal((n, 2)))
    return truth, labels, truth + errors, noise


def relative_error(model) -> float:
    """Largest relative Frobenius error of a fit's covariances, components matched by mean."""
    fitted = model.covariances_[np.argsort(model.means_[:, 0])]
    return float(
        max(
            np.linalg.norm(fitted[k] - TRUE_COVARIANCES[k]) / np.linalg.norm(TRUE_COVARIANCES[k])
            for k in range(2)
        )
    )


def ellipses(ax, means, covariances, label: str, n_sigma: float = 2.0, **style) -> None:
    """Outlined ``n_sigma`` ellipses of Gaussians (means (K, 2), covariances (K, 2, 2))."""
    plots.plot_ellipses(
        means, covariances, n_sigma=(n_sigma,), fill=False, label=label, ax=ax, **style
    )


def plot(truth, labels, observed, noise, shown, naive, deconvolved) -> Figure:
    """The three panels: truth, naive fit, deconvolved fit (module docstring); ``shown``
    the indices of the points whose errors are drawn."""
    figure = Figure(figsize=(15, 4.8), layout="constrained")
    axes = figure.subplots(1, 3, sharex=True, sharey=True)
    axes[0].scatter(*truth.T, s=6, c=[f"C{k}" for k in labels], alpha=0.6)
    ellipses(axes[0], TRUE_MEANS, TRUE_COVARIANCES, "truth (2 sigma)", color="k")
    axes[0].set_title("true points")
    for ax in axes[1:]:
        ax.scatter(*observed.T, s=6, color="0.5", alpha=0.6)
    ellipses(axes[1], observed[shown][None], noise[shown][None],
             f"errors of {len(shown)} points (1 sigma)", n_sigma=1.0, color="C3", alpha=0.7)  # fmt: skip
    ellipses(axes[1], naive.means_, naive.covariances_, "naive fit", color="C0", linewidth=2)
    axes[1].set_title("noisy observations: naive fit")
    ellipses(axes[2], TRUE_MEANS, TRUE_COVARIANCES, "truth", color="k", alpha=0.8)
    ellipses(axes[2], deconvolved.means_, deconvolved.covariances_, "deconvolved fit",
             color="C2", linewidth=2)  # fmt: skip
    axes[2].set_title("noisy observations: extreme deconvolution")
    for ax in axes:
        ax.legend(loc="upper left", fontsize=8)
        ax.set_aspect("equal", adjustable="box")
    return figure


def main() -> None:
    args = parse_arguments()
    args.out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    n = 1000
    truth, labels, observed, noise = draw(n, rng)
    n_init = 3
    naive = gaussmix.GaussianMixture(2, n_init=n_init, random_state=0).fit(observed)
    deconvolved = gaussmix.GaussianMixture(2, n_init=n_init, random_state=0, max_iter=1000)
    deconvolved.fit(observed, measurement_covariances=noise)

    shown = rng.choice(n, 25, replace=False)
    figure = plot(truth, labels, observed, noise, shown, naive, deconvolved)
    path = args.out / "deconvolution.png"
    figure.savefig(path, dpi=DPI)
    print(f"wrote {path}")

    np.set_printoptions(precision=3, suppress=True)
    naive_error = relative_error(naive)
    deconvolved_error = relative_error(deconvolved)
    for name, model in (("truth", None), ("naive", naive), ("deconvolved", deconvolved)):
        if model is None:
            print(f"{name:>12}: {TRUE_COVARIANCES.reshape(2, -1).tolist()}")
        else:
            order = np.argsort(model.means_[:, 0])
            print(f"{name:>12}: {np.round(model.covariances_[order].reshape(2, -1), 3).tolist()}")
    print(
        f"relative covariance error: naive {naive_error:.3f}, deconvolved {deconvolved_error:.3f}"
    )
    naive_score = naive.score(observed, measurement_covariances=noise)
    deconvolved_score = deconvolved.score(observed, measurement_covariances=noise)
    print(
        f"mean log-likelihood of the noisy points under their errors: naive {naive_score:.4f}, "
        f"deconvolved {deconvolved_score:.4f}"
    )
    assert deconvolved_error * 3 < naive_error, (naive_error, deconvolved_error)
    assert deconvolved_score > naive_score, (naive_score, deconvolved_score)
    print("claims hold: the deconvolved covariances are 3x closer to the truth than the naive")


if __name__ == "__main__":
    main()
