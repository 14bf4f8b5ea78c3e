"""The four covariance types on the same data, EM ellipses next to posterior draws.

Four blobs stretched by one linear map (400 points) are fitted with ``full``, ``tied``,
``diag`` and ``spherical`` covariances. Top row: the EM fit's 1-, 2-, 3-sigma ellipses,
points coloured by their responsibilities. Bottom row: 2-sigma ellipses of posterior
draws from NUTS (``GaussianMixture.sample_posterior``, relabeled) with the EM 2-sigma
ellipse in black. Printed: BIC of each type and how far the EM means sit from the
posterior means in posterior standard deviations. Asserted: ``tied`` has the lowest BIC
(one linear map stretched every blob the same way, so one shared covariance is the true
model), and for the well-specified types (tied, full) the EM means lie within 4 posterior
standard deviations of the posterior means. ``--quick`` runs NUTS for ``full`` only, with
three EM restarts instead of five.

Run: python examples/covariance_types.py [--quick] [--out DIR]
"""

import argparse
from pathlib import Path

import jax
import matplotlib
import numpy as np
from matplotlib.figure import Figure

import gaussmix
from gaussmix import datasets, plots
from gaussmix.inference.relabel import assignment

jax.config.update("jax_enable_x64", True)  # float64 on CPU, before any array is made
matplotlib.use("Agg")

ROOT = Path(__file__).resolve().parents[1]
DPI = 80
COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")


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


def match_components(reference: np.ndarray, other: np.ndarray) -> np.ndarray:
    """The permutation of ``other``'s rows (K, D) closest to ``reference``'s (the
    minimum-cost assignment gaussmix relabels posterior draws with)."""
    distances = np.linalg.norm(reference[:, None] - other[None], axis=-1)
    return np.asarray(assignment(distances))


def main() -> None:
    args = parse_arguments()
    args.out.mkdir(parents=True, exist_ok=True)
    draws = (
        dict(num_warmup=100, num_samples=100, num_chains=1)
        if args.quick
        else dict(num_warmup=500, num_samples=500, num_chains=2)
    )
    x, _ = datasets.stretched(n_samples=400, cluster_std=0.6, seed=0)

    # NUTS for every type; --quick samples one well-specified type (full) to stay short.
    sampled_types = ("full",) if args.quick else COVARIANCE_TYPES
    n_init = 3 if args.quick else 5
    figure = Figure(figsize=(14, 7.2), layout="constrained")
    axes = figure.subplots(2, 4)
    bic, distance = {}, {}
    for column, covariance_type in enumerate(COVARIANCE_TYPES):
        mixture = gaussmix.GaussianMixture(
            n_components=4, covariance_type=covariance_type, n_init=n_init, random_state=0
        ).fit(x)
        bic[covariance_type] = float(mixture.bic(x))
        plots.plot_mixture(mixture, x, responsibilities="color", ax=axes[0, column])
        axes[0, column].set_title(f"EM, {covariance_type}: BIC {bic[covariance_type]:.1f}")

        axes[1, column].scatter(x[:, 0], x[:, 1], s=3, c="0.6")
        plots.plot_ellipses(
            np.asarray(mixture.means_),
            np.asarray(mixture.covariances_),
            covariance_type,
            n_sigma=(2.0,),
            fill=False,
            color="black",
            linewidth=1.5,
            ax=axes[1, column],
        )
        if covariance_type not in sampled_types:
            axes[1, column].set_aspect("equal", adjustable="datalim")
            axes[1, column].set_title(f"{covariance_type}: EM 2 sigma (--quick: no NUTS)")
            continue
        tree = mixture.sample_posterior(x, random_state=0, progress_bar=False, **draws)
        plots.plot_posterior_ellipses(tree, num_draws=40, n_sigma=(2.0,), ax=axes[1, column])
        axes[1, column].set_title(f"NUTS draws (2 sigma), {covariance_type}")
        means = np.asarray(tree["posterior"]["means"])
        means = means.reshape(-1, *means.shape[-2:])
        # Match labels (the posterior may be labelled differently from this EM fit).
        order = match_components(np.asarray(mixture.means_), means.mean(0))
        z = np.abs(np.asarray(mixture.means_) - means.mean(0)[order]) / means.std(0)[order]
        distance[covariance_type] = float(z.max())
    save(figure, args.out, "covariance_types.png")

    print(f"{'type':<10}{'BIC':>10}{'max |EM mean - posterior mean| / posterior sd':>48}")
    for covariance_type in COVARIANCE_TYPES:
        z = distance.get(covariance_type, float("nan"))
        print(f"{covariance_type:<10}{bic[covariance_type]:10.1f}{z:48.2f}")
    best = min(bic, key=bic.get)
    print(f"lowest BIC: {best}")

    assert best == "tied", f"tied is the generating model and should win by BIC, not {best}"
    for covariance_type in {"tied", "full"} & set(sampled_types):
        assert distance[covariance_type] < 4.0, (
            f"{covariance_type}: EM means {distance[covariance_type]:.2f} posterior sds away"
        )
    print("claims hold: tied wins by BIC; EM means agree with the posterior (tied, full)")


if __name__ == "__main__":
    main()
