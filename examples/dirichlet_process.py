"""How many components? The Dirichlet distribution and the Dirichlet process against BIC.

Three clusters in two dimensions (400 points; ``--quick``: 150). Two variational fits of
``gaussmix.BayesianGaussianMixture`` with ten components (``--quick``: six), one with a
finite Dirichlet prior on the weights, one with a truncated Dirichlet process
(stick-breaking), empty the components the data do not need; ``gaussmix.select_components``
picks K by BIC over EM fits of K = 1...10. Then NUTS on the Dirichlet-process program
(``BayesianGaussianMixture.sample_posterior``, chains started at the variational fit)
gives the posterior of the number of occupied components (components holding at least
one point, labels drawn per draw) and of those with weight above 5 %. Drawn: the data
coloured by the process's labels, the weights by component under both priors, and the
posterior of the number of components with BIC's choice marked. Printed: the weights,
BIC's K and the posterior. Asserted: both variational fits keep as many components above
5 % as BIC picks (3), and the posterior's most probable number of components above 5 %
is BIC's K too.

Run: python examples/dirichlet_process.py [--quick] [--out DIR]
"""

import argparse
from pathlib import Path

import jax
import matplotlib
import numpy as np
from matplotlib.figure import Figure

import gaussmix

jax.config.update("jax_enable_x64", True)  # float64 on CPU, before any array is made
matplotlib.use("Agg")

ROOT = Path(__file__).resolve().parents[1]
DPI = 80
CENTRES = np.array([[-5.0, 0.0], [0.0, 5.0], [5.0, -1.0]])
THRESHOLD = 0.05


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


def main() -> None:
    args = parse_arguments()
    args.out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    n_per_cluster = 50 if args.quick else 133
    x = np.concatenate([rng.normal(centre, 1.0, (n_per_cluster, 2)) for centre in CENTRES])
    max_components = 6 if args.quick else 10
    draws = (
        dict(num_warmup=100, num_samples=100, num_chains=1)
        if args.quick
        else dict(num_warmup=500, num_samples=500, num_chains=2)
    )

    fits = {}
    for prior_type in ("dirichlet_distribution", "dirichlet_process"):
        fits[prior_type] = gaussmix.BayesianGaussianMixture(
            n_components=max_components,
            weight_concentration_prior_type=prior_type,
            max_iter=500,
            random_state=0,
        ).fit(x)
        print(f"{prior_type:>22} weights: {np.round(fits[prior_type].weights_, 3).tolist()}")
    _, best = gaussmix.select_components(
        x, n_components=range(1, max_components + 1), criterion="bic", n_init=3, seed=0
    )
    bic_choice = int(best.n_components)
    print(f"BIC picks K = {bic_choice}")

    process = fits["dirichlet_process"]
    tree = process.sample_posterior(x, progress_bar=False, weight_threshold=THRESHOLD, **draws)
    occupied = tree.posterior["occupied_components"].values.ravel()
    weighted = tree.posterior["weighted_components"].values.ravel()
    counts = np.arange(1, max_components + 1)
    occupied_probability = np.array([np.mean(occupied == k) for k in counts])
    weighted_probability = np.array([np.mean(weighted == k) for k in counts])
    print(f"{'K':>3}{'P(occupied = K)':>18}{'P(above 5 % = K)':>19}")
    for k, p_occupied, p_weighted in zip(
        counts, occupied_probability, weighted_probability, strict=True
    ):
        print(f"{k:3d}{p_occupied:18.3f}{p_weighted:19.3f}")

    figure = Figure(figsize=(15, 4.4), layout="constrained")
    data_ax, weights_ax, posterior_ax = figure.subplots(1, 3)
    labels = process.predict(x)
    data_ax.scatter(x[:, 0], x[:, 1], c=labels, cmap="tab10", vmin=0, vmax=9, s=8)
    data_ax.set_title("data, labelled by the Dirichlet process fit")
    data_ax.set_aspect("equal", "datalim")
    width = 0.4
    for offset, (prior_type, fit) in zip((-width / 2, width / 2), fits.items(), strict=True):
        weights_ax.bar(counts + offset, fit.weights_, width, label=prior_type.replace("_", " "))
    weights_ax.axhline(THRESHOLD, color="grey", linestyle=":", label="5 %")
    weights_ax.set_xticks(counts)
    weights_ax.set_xlabel("component")
    weights_ax.set_ylabel("weight (variational posterior mean)")
    weights_ax.set_title(f"weights by component, K_max = {max_components}")
    weights_ax.legend(loc="center right")
    posterior_ax.bar(counts - width / 2, occupied_probability, width, label="occupied")
    posterior_ax.bar(counts + width / 2, weighted_probability, width, label="weight above 5 %")
    posterior_ax.axvline(bic_choice, color="black", linestyle="--", label=f"BIC: K = {bic_choice}")
    posterior_ax.set_xticks(counts)
    posterior_ax.set_xlabel("number of components")
    posterior_ax.set_ylabel("posterior probability (NUTS)")
    posterior_ax.set_title("Dirichlet process: number of components")
    posterior_ax.legend()
    save(figure, args.out, "dirichlet_process.png")

    for prior_type, fit in fits.items():
        kept = int(np.sum(fit.weights_ > THRESHOLD))
        assert kept == bic_choice == len(CENTRES), f"{prior_type} keeps {kept} components"
    mode = int(counts[np.argmax(weighted_probability)])
    assert mode == bic_choice, f"the posterior's most probable K is {mode}"
    print(
        "claims hold: both priors keep BIC's 3 components above 5 %, and so does the "
        "posterior's most probable number"
    )


if __name__ == "__main__":
    main()
