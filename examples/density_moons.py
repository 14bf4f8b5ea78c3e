"""A Gaussian mixture as a density estimator: two moons, 2 versus 16 components.

Two interleaving half circles (200 points, noise 0.05) are no mixture of two Gaussians;
as clusters a 2-component mixture is wrong, but as a density estimator many components
follow the moons. Drawn: the 2- and 16-component fits (density contours and ellipses) and
400 new points sampled from the 16-component fit. Printed and asserted: the 16-component
mixture gives held-out moons (a fresh draw) a higher mean log-likelihood than the
2-component one, and its 400 samples lie closer to the moons (mean distance to the
nearest point of a dense noiseless moon curve) than the 2-component samples.

Run: python examples/density_moons.py [--quick] [--out DIR]
"""

import argparse
from pathlib import Path

import jax
import matplotlib
import numpy as np
from matplotlib.figure import Figure

import gaussmix
from gaussmix import datasets, plots

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


def distance_to_moons(points: np.ndarray) -> np.ndarray:
    """Distance of each point (N, 2) to the nearest of 2000 points on the noiseless moons."""
    curve, _ = datasets.moons(n=2000, noise=0.0)
    return np.sqrt(((points[:, None, :] - curve[None, :, :]) ** 2).sum(-1)).min(1)


def main() -> None:
    args = parse_arguments()
    args.out.mkdir(parents=True, exist_ok=True)
    n_init = 2 if args.quick else 5
    x, _ = datasets.moons(n=200, noise=0.05, seed=0)
    held_out, _ = datasets.moons(n=200, noise=0.05, seed=1)

    figure = Figure(figsize=(13, 3.6), layout="constrained")
    axes = figure.subplots(1, 3)
    bounds = [(-1.4, 2.4), (-0.9, 1.4)]
    held_out_score, sample_distance = {}, {}
    for axis, n_components in zip(axes[:2], (2, 16), strict=True):
        mixture = gaussmix.GaussianMixture(
            n_components=n_components, covariance_type="full", n_init=n_init, random_state=0
        ).fit(x)
        held_out_score[n_components] = float(mixture.score(held_out))
        new_points = np.asarray(mixture.sample(400)[0])
        sample_distance[n_components] = float(distance_to_moons(new_points).mean())
        plots.plot_density(mixture, x, bounds=bounds, resolution=120, log=True, ax=axis)
        plots.plot_ellipses(
            np.asarray(mixture.means_),
            np.asarray(mixture.covariances_),
            "full",
            n_sigma=(2.0,),
            fill=False,
            color="C3",
            ax=axis,
        )
        axis.set_title(
            f"{n_components} components: held-out log-lik. {held_out_score[n_components]:.2f}/pt"
        )
        if n_components == 16:
            axes[2].scatter(new_points[:, 0], new_points[:, 1], s=6, c="C0")
            axes[2].set_title("400 points sampled from the 16-component fit")
        print(
            f"K = {n_components:2d}: train log-likelihood {float(mixture.score(x)):7.3f}/pt, "
            f"held-out {held_out_score[n_components]:7.3f}/pt, 400 samples lie "
            f"{sample_distance[n_components]:.3f} from the moons on average"
        )
    for axis in axes:
        axis.set_aspect("equal", adjustable="box")
        axis.set_xlim(*bounds[0])
        axis.set_ylim(*bounds[1])
    save(figure, args.out, "density_moons.png")

    assert held_out_score[16] > held_out_score[2], "16 components should fit held-out moons better"
    assert sample_distance[16] < sample_distance[2], "16-component samples should follow the moons"
    print("claims hold: 16 components beat 2 on held-out moons and their samples follow the moons")


if __name__ == "__main__":
    main()
