"""How many components? AIC and BIC over K = 1...20 on the moons, and LOO by MCMC.

Two moons (400 points, noise 0.05) need several Gaussians. ``gaussmix.select_components``
fits every K from 1 to 20 by EM and tabulates AIC and BIC; with ``criterion="loo"`` it
draws NUTS posteriors for a few K (each started at its EM fit), which ``gaussmix.compare``
ranks by PSIS-LOO. Drawn: AIC and BIC against K with each minimum marked, and the LOO
expected log predictive density with its standard error. Printed: the K each criterion
picks. Asserted: BIC, whose penalty per parameter is larger (log 400 > 2), never picks
more components than AIC, and neither picks 2 (the moons are not two Gaussians).
``--quick``: K = 1...4, LOO for K = 2 and 4 with one short chain.

Run: python examples/select_components_moons.py [--quick] [--out DIR]
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


def main() -> None:
    args = parse_arguments()
    args.out.mkdir(parents=True, exist_ok=True)
    x, _ = datasets.moons(n=400, noise=0.05, seed=0)
    candidates = range(1, 5) if args.quick else range(1, 21)
    loo_candidates = (2, 4) if args.quick else (2, 4, 6, 8)
    draws = (
        dict(num_warmup=100, num_samples=100, num_chains=1)
        if args.quick
        else dict(num_warmup=500, num_samples=500, num_chains=2)
    )

    criteria, picks = {}, {}
    for criterion in ("aic", "bic"):
        table, best = gaussmix.select_components(
            x,
            n_components=candidates,
            covariance_type="full",
            criterion=criterion,
            n_init=3,
            seed=0,
        )
        criteria[criterion.upper()] = np.asarray(table.criterion, float)
        picks[criterion.upper()] = int(best.n_components)

    loo_table, _ = gaussmix.select_components(
        x,
        n_components=loo_candidates,
        covariance_type="full",
        criterion="loo",
        n_init=3,
        seed=0,
        mcmc_options=dict(progress_bar=False, **draws),
    )
    trees = {f"K={k}": tree for k, tree in zip(loo_candidates, loo_table.posteriors, strict=True)}
    comparison = gaussmix.compare(trees)
    names = [f"K={k}" for k in loo_candidates]
    elpd = np.array([float(comparison.loc[name, "elpd"]) for name in names])
    standard_error = np.array([float(comparison.loc[name, "se"]) for name in names])
    picks["LOO"] = loo_candidates[int(np.argmax(elpd))]
    columns = [c for c in ("elpd", "se", "p", "elpd_diff", "dse", "weight") if c in comparison]
    print("PSIS-LOO comparison (best first):")
    print(comparison[columns].to_string(float_format=lambda value: f"{value:.2f}"))

    figure = Figure(figsize=(11, 4.2), layout="constrained")
    left, right = figure.subplots(1, 2)
    plots.plot_information_criteria(np.asarray(list(candidates)), criteria, ax=left)
    left.set_title("AIC and BIC on two moons (EM)")
    plots.plot_information_criteria(
        np.asarray(loo_candidates),
        {"ELPD (LOO)": elpd},
        errors={"ELPD (LOO)": standard_error},
        lower_is_better=False,
        ax=right,
    )
    right.set_ylabel("expected log predictive density")
    right.set_title("PSIS-LOO of NUTS posteriors")
    save(figure, args.out, "select_components_moons.png")

    print(f"{'K':>3}{'AIC':>10}{'BIC':>10}")
    for index, n_components in enumerate(candidates):
        print(f"{n_components:3d}{criteria['AIC'][index]:10.1f}{criteria['BIC'][index]:10.1f}")
    for name, value in picks.items():
        print(f"{name} picks K = {value}")

    assert picks["BIC"] <= picks["AIC"], "BIC's larger penalty cannot pick more components"
    assert picks["BIC"] > 2 and picks["AIC"] > 2, "two Gaussians cannot describe two moons"
    print("claims hold: BIC picks no more components than AIC, and both more than 2")


if __name__ == "__main__":
    main()
