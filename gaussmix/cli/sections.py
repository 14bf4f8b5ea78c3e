"""Sections of the HTML report: tables and figures of fitted mixtures, peaks, posteriors."""

import argparse
from collections.abc import Sequence
from typing import Any

import numpy as np

from gaussmix.cli.run import Run, write_posterior

#: Effective draws wanted per chain (the ESS threshold is this times the chains, at most
#: 400; Vehtari et al. 2021).
ESS_PER_CHAIN = 100


#: Largest number of parameter rows shown in an HTML table (all are in results.json).
TABLE_ROWS = 60


_COVARIANCE_SITE = {
    "full": "covariances",
    "tied": "covariance",
    "diag": "variances",
    "spherical": "variances",
}


def mixture_point(model: Any) -> dict[str, np.ndarray]:
    """A fitted GaussianMixture's parameters under the program's site names."""
    return {
        "weights": np.asarray(model.weights_),
        "means": np.asarray(model.means_),
        _COVARIANCE_SITE[model.covariance_type]: np.asarray(model.covariances_),
    }


def mixture_figure(model: Any, x: np.ndarray, title: str, columns: Sequence[str]):
    import matplotlib.pyplot as plt

    from gaussmix import plots

    if x.shape[1] >= 2:
        axis = plots.plot_mixture(model, x)
        axis.set_xlabel(columns[0])
        axis.set_ylabel(columns[1])
    else:
        _, axis = plt.subplots(figsize=(6.0, 4.0))
        axis.hist(x[:, 0], bins=min(60, max(10, len(x) // 10)), density=True, color="0.75")
        grid = np.linspace(x.min(), x.max(), 400)
        axis.plot(grid, np.exp(np.asarray(model.score_samples(grid[:, None]))), color="C0")
        axis.set_xlabel(columns[0])
        axis.set_ylabel("density")
    axis.set_title(title)
    return axis.figure


def mixture_section(run: Run, model: Any, x: np.ndarray, columns: Sequence[str], title: str):
    """Tables and the figure of a fitted mixture; returns its results."""
    report = run.report
    n_components, n_features = np.asarray(model.means_).shape
    log_likelihood = float(model.score(x)) * len(x)
    results = {
        "n_components": n_components,
        "covariance_type": model.covariance_type,
        "converged": bool(model.converged_),
        "n_iter": int(model.n_iter_),
        "lower_bound": float(model.lower_bound_),
        "log_likelihood": log_likelihood,
        "bic": float(model.bic(x)),
        "aic": float(model.aic(x)),
        "parameters": mixture_point(model),
    }
    report.table(
        ["quantity", "value"],
        [
            ["components K", n_components],
            ["covariance type", model.covariance_type],
            ["converged", results["converged"]],
            ["EM iterations", results["n_iter"]],
            ["log-likelihood", log_likelihood],
            ["mean log-likelihood per row", log_likelihood / len(x)],
            ["BIC", results["bic"]],
            ["AIC", results["aic"]],
        ],
        caption=f"{title}: the fit",
        flagged=[False, False, not results["converged"], False, False, False, False, False],
    )
    if not results["converged"]:
        run.warn(f"{title}: EM stopped after {results['n_iter']} iterations without converging")
    shown = list(columns[:6])
    variances = np.asarray(
        _diagonal_variances(
            np.asarray(model.covariances_), model.covariance_type, n_components, n_features
        )
    )
    rows = [
        [
            k,
            float(model.weights_[k]),
            *[float(v) for v in np.asarray(model.means_)[k, : len(shown)]],
            *[float(np.sqrt(v)) for v in variances[k, : len(shown)]],
        ]
        for k in range(n_components)
    ]
    report.table(
        ["component", "weight", *[f"mean {c}" for c in shown], *[f"sd {c}" for c in shown]],
        rows,
        caption=f"{title}: components"
        + (f" (first {len(shown)} of {n_features} columns)" if n_features > len(shown) else ""),
    )
    return results


def _diagonal_variances(
    covariances: np.ndarray, covariance_type: str, n_components: int, n_features: int
):
    """(K, D) variances of each component along each feature."""
    if covariance_type == "full":
        return np.diagonal(covariances, axis1=1, axis2=2)
    if covariance_type == "tied":
        return np.broadcast_to(np.diag(covariances), (n_components, covariances.shape[0]))
    if covariance_type == "diag":
        return covariances
    return np.broadcast_to(covariances[:, None], (n_components, n_features))


def _ess_threshold(num_chains: int) -> float:
    """100 effective draws per chain, 400 from four chains on (Vehtari et al. 2021)."""
    return float(min(400, ESS_PER_CHAIN * num_chains))


def _base_name(label: str) -> str:
    return label.split("[", 1)[0]


def _upper_triangle(label: str) -> bool:
    """Whether ``label`` is a covariance entry above the diagonal (a repeat of one below)."""
    if _base_name(label) not in ("covariances", "covariance"):
        return False
    indices = [int(i) for i in label[label.index("[") + 1 : -1].split(",")]
    return indices[-2] < indices[-1]


def posterior_section(
    run: Run,
    tree: Any,
    point: dict[str, Any],
    title: str,
    label: str,
    file_name: str = "posterior",
) -> dict[str, Any]:
    """NetCDF files ``file_name``.nc, the point estimate next to the posterior, and the diagnostics
    (:func:`gaussmix.inference.diagnostics.diagnose`), every failed check a warning."""
    from gaussmix import point_versus_posterior
    from gaussmix.inference.diagnostics import diagnose

    files = write_posterior(tree, run.folder, file_name)
    run.files.extend(files)
    chains = tree.posterior.sizes["chain"]
    diagnostics = diagnose(tree, ess_threshold=_ess_threshold(chains), warn=False)
    thresholds = diagnostics.thresholds
    table = diagnostics.table
    columns = [
        "parameter",
        label,
        "posterior mean",
        "posterior sd",
        "3 %",
        "97 %",
        f"{label.split()[0]} in interval",
        "R-hat",
        "ESS bulk",
        "ESS tail",
        "MCSE mean",
    ]
    side_by_side = point_versus_posterior(point, tree, ci_prob=0.94)
    rows, flags = [], []
    for parameter, entry in side_by_side.iterrows():
        parameter = str(parameter)
        if _upper_triangle(parameter):
            continue
        convergence = table.loc[parameter]
        r_hat = float(convergence["r_hat"])
        ess = min(float(convergence["ess_bulk"]), float(convergence["ess_tail"]))
        rows.append(
            [
                parameter,
                float(entry["point"]),
                float(entry["mean"]),
                float(entry["sd"]),
                float(entry["lower"]),
                float(entry["upper"]),
                bool(entry["inside"]),
                r_hat,
                float(convergence["ess_bulk"]),
                float(convergence["ess_tail"]),
                float(convergence["mcse_mean"]),
            ]
        )
        flags.append(
            (chains > 1 and r_hat > thresholds["rhat"])
            or ess < thresholds["ess"]
            or parameter in diagnostics.multimodal
        )
    caption = f"{title}: {label} next to the posterior (94 % equal-tailed intervals"
    caption += (
        "; covariance entries on and below the diagonal)"
        if "covariances" in point or "covariance" in point
        else ")"
    )
    if len(rows) > TABLE_ROWS:
        caption += f"; first {TABLE_ROWS} of {len(rows)} rows, all in results.json"
    run.report.table(columns, rows[:TABLE_ROWS], caption=caption, flagged=flags[:TABLE_ROWS])
    summary = _diagnostics_table(run, diagnostics, title)
    for problem in diagnostics.problems:
        run.warn(f"{title}: {problem}")
    return {
        "files": files,
        "summary": [dict(zip(columns, row, strict=True)) for row in rows],
        "diagnostics": summary,
        "problems": list(diagnostics.problems),
    }


def _diagnostics_table(run: Run, diagnostics: Any, title: str) -> dict[str, Any]:
    """The run-level diagnostics as a table (failed rows flagged); returns them."""
    thresholds = diagnostics.thresholds
    table = diagnostics.table
    r_hat = table["r_hat"].astype(float)
    ess = table[["ess_bulk", "ess_tail"]].astype(float).min(axis=1)
    summary = {
        "num_chains": diagnostics.num_chains,
        "num_draws": diagnostics.num_draws,
        "divergences": diagnostics.divergences,
        "max_tree_depth_hits": diagnostics.max_tree_depth_hits,
        "bfmi": np.asarray(diagnostics.bfmi),
        "max_r_hat": float(r_hat.max()),
        # R-hat is NaN everywhere for one chain.
        "max_r_hat_parameter": str(r_hat.idxmax()) if r_hat.notna().any() else "",
        "min_ess": float(ess.min()),
        "min_ess_parameter": str(ess.idxmin()) if ess.notna().any() else "",
        "multimodal": list(diagnostics.multimodal),
        "thresholds": thresholds,
    }
    rows = [
        ["chains x draws", f"{diagnostics.num_chains} x {diagnostics.num_draws}", "", False],
        ["divergent transitions", diagnostics.divergences, "0", diagnostics.divergences > 0],
        [
            "iterations at the maximum tree depth",
            diagnostics.max_tree_depth_hits,
            "0",
            diagnostics.max_tree_depth_hits > 0,
        ],
        [
            f"largest R-hat ({summary['max_r_hat_parameter']})",
            summary["max_r_hat"],
            f"<= {thresholds['rhat']}",
            diagnostics.num_chains > 1 and not summary["max_r_hat"] <= thresholds["rhat"],
        ],
        [
            f"smallest bulk/tail ESS ({summary['min_ess_parameter']})",
            summary["min_ess"],
            f">= {thresholds['ess']:g}",
            not summary["min_ess"] >= thresholds["ess"],
        ],
    ]
    if np.size(diagnostics.bfmi):
        lowest = float(np.min(diagnostics.bfmi))
        rows.append(
            ["smallest BFMI", lowest, f">= {thresholds['bfmi']}", lowest < thresholds["bfmi"]]
        )
    for site, (elpd, se) in diagnostics.elpd_loo.items():
        pareto_k = np.asarray(diagnostics.pareto_k[site])
        summary.setdefault("loo", {})[site] = {
            "elpd": elpd,
            "se": se,
            "pareto_k_max": float(pareto_k.max()),
            "pareto_k_bad": int(np.sum(pareto_k > thresholds["k"])),
        }
        rows.append([f"ELPD (PSIS-LOO, {site})", elpd, f"SE {se:.3g}", False])
        rows.append(
            [
                f"largest Pareto k ({site})",
                float(pareto_k.max()),
                f"<= {thresholds['k']}",
                bool(pareto_k.max() > thresholds["k"]),
            ]
        )
    if diagnostics.multimodal:
        rows.append(
            ["parameters with chains in different modes", len(diagnostics.multimodal), "0", True]
        )
    run.report.table(
        ["diagnostic", "value", "wanted", "status"],
        [[*row[:3], "CHECK" if row[3] else "ok"] for row in rows],
        caption=f"{title}: diagnostics",
        flagged=[row[3] for row in rows],
    )
    return summary


def selection_report(run: Run, rows: list[dict[str, Any]], criterion: str, title: str, name: str):
    """The table (best row flagged) and the figure of a K sweep."""
    from gaussmix import plots

    best = min(rows, key=lambda row: (row[criterion], row["n_components"]))
    columns = ["K", "BIC", "AIC", "log-likelihood", "converged"]
    run.report.table(
        columns,
        [
            [row["n_components"], row["bic"], row["aic"], row["log_likelihood"], row["converged"]]
            for row in rows
        ],
        caption=f"{title}: every K (best by {criterion.upper()}: K = {best['n_components']})",
    )
    for row in rows:
        if not row["converged"]:
            run.warn(f"{title}: EM did not converge for K = {row['n_components']}")
    axis = plots.plot_information_criteria(
        [row["n_components"] for row in rows],
        {"BIC": [row["bic"] for row in rows], "AIC": [row["aic"] for row in rows]},
    )
    axis.set_title(title)
    run.figure(axis.figure, name, f"{title}: BIC and AIC against K (lower is better)")
    return {"criterion": criterion, "rows": rows, "best": best["n_components"]}


def nuts_settings(args: argparse.Namespace) -> dict[str, int]:
    return {
        "num_warmup": args.num_warmup,
        "num_samples": args.num_samples,
        "num_chains": args.num_chains,
    }


def nuts_text(settings: dict[str, int]) -> str:
    return (
        f"{settings['num_chains']} chains x ({settings['num_warmup']} warm-up + "
        f"{settings['num_samples']} draws)"
    )


def _posterior_mixture_figure(tree: Any, x: np.ndarray, columns: Sequence[str], title: str):
    import matplotlib.pyplot as plt

    from gaussmix import plots

    _, axis = plt.subplots(figsize=(5.0, 4.0))
    axis.scatter(x[:, 0], x[:, 1], s=4, color="0.6")
    plots.plot_posterior_ellipses(tree, ax=axis)
    axis.set_xlabel(columns[0])
    axis.set_ylabel(columns[1])
    axis.set_title(title)
    return axis.figure


def mixture_posterior(
    run: Run, model: Any, tree: Any, x: np.ndarray, columns: Sequence[str], title: str
) -> dict[str, Any]:
    """Report a mixture posterior next to its EM fit; returns its results."""
    results = posterior_section(run, tree, mixture_point(model), title, "EM estimate")
    if x.shape[1] >= 2:
        run.figure(
            _posterior_mixture_figure(tree, x, columns, f"{title}: posterior draws"),
            f"posterior-{slug(title)}",
            f"{title}: 2-sd ellipses of 50 posterior draws over the data",
        )
    return results


def slug(text: str) -> str:
    return "-".join("".join(c if c.isalnum() else " " for c in text.lower()).split())


def _baseline_text(baseline: str | int | None) -> str:
    if baseline is None:
        return "no baseline"
    if isinstance(baseline, int):
        names = {0: "constant", 1: "linear"}
        return f"{names.get(baseline, f'degree-{baseline} polynomial')} baseline"
    return f"{baseline} baseline"


def _pick(value: Any, index: int | None) -> Any:
    value = np.asarray(value)
    return value if index is None or value.ndim == 0 else value[index]


def peak_point(fit: Any, index: int | None) -> dict[str, float]:
    """The MAP values of spectrum ``index`` (None: the only one)."""
    return {name: float(_pick(value, index)) for name, value in fit.params.items()}


def peak_section(run: Run, fit: Any, names: Sequence[str], title: str) -> dict[str, Any]:
    """Statistics and parameters of a (batched) peak fit; returns its results."""
    batch = fit.n_spectra
    indices = [None] if batch is None else list(range(batch))
    statistics = []
    for index, name in zip(indices, names, strict=True):
        statistics.append(
            [
                name,
                bool(_pick(fit.converged, index)),
                int(_pick(fit.n_iter, index)),
                float(_pick(fit.rss, index)),
                float(_pick(fit.redchi, index)),
                float(_pick(fit.aic, index)),
                float(_pick(fit.bic, index)),
            ]
        )
    run.report.table(
        ["spectrum", "converged", "iterations", "RSS", "reduced chi-square", "AIC", "BIC"],
        statistics,
        caption=f"{title}: {', '.join(fit.lineshapes)} peaks, "
        f"{_baseline_text(fit.baseline)}, {fit.n_parameters} free parameters",
        flagged=[not row[1] for row in statistics],
    )
    for row in statistics:
        if not row[1]:
            run.warn(f"{title}: the fit of spectrum {row[0]} did not converge")
    rows = []
    for index, name in zip(indices, names, strict=True):
        for parameter, value in fit.params.items():
            error = fit.stderr.get(parameter)
            value = float(_pick(value, index))
            error = None if error is None else float(_pick(error, index))
            relative = abs(error / value) * 100 if value and error is not None else None
            rows.append([name, parameter, value, error, relative])
    caption = f"{title}: parameters (standard errors from the Laplace approximation)"
    if len(rows) > TABLE_ROWS:
        caption += f"; first {TABLE_ROWS} of {len(rows)} rows, all in results.json"
    run.report.table(
        ["spectrum", "parameter", "value", "standard error", "rel. error %"],
        rows[:TABLE_ROWS],
        caption=caption,
    )
    return {
        "spectra": list(names),
        "statistics": [
            dict(
                zip(
                    ["spectrum", "converged", "n_iter", "rss", "redchi", "aic", "bic"],
                    row,
                    strict=True,
                )
            )
            for row in statistics
        ],
        "params": fit.params,
        "stderr": fit.stderr,
    }


def peak_figure(run: Run, fit: Any, index: int | None, name: str, stem: str, title: str) -> None:
    axis = fit.plot(index or 0)
    axis.set_title(f"{title}: {name}")
    run.figure(axis.figure, f"peaks-{slug(title)}-{stem}", f"{title}: {name}")
