"""``gaussmix fit-mixture``: EM (or NUTS from it) on the rows of DATA, K chosen from a range."""

import argparse
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gaussmix.cli.errors import UsageError
from gaussmix.cli.limits import MEMORY_FACTOR, check_memory, check_sampling, draws_bytes
from gaussmix.cli.run import (
    ALWAYS_WRITTEN,
    Run,
    command_arguments,
    configure_numerics,
    data_line,
    data_summary,
    output_folder,
    progress,
    say,
    show_progress,
)
from gaussmix.cli.sections import (
    mixture_figure,
    mixture_posterior,
    mixture_section,
    nuts_settings,
    nuts_text,
    selection_report,
)
from gaussmix.cli.tables import Table, drop_missing, read_table


def fit_mixture_command(args: argparse.Namespace) -> int:
    table = drop_missing(read_table(args.data, args.columns, "--columns"), args.drop_nan)
    x = table.values
    n_rows, n_features = x.shape
    largest = max(args.components)
    if n_rows < largest:
        after = " after omitting rows with NaN" if table.dropped else ""
        raise UsageError(
            f"--components {largest} needs at least {largest} rows, but {table.path.name} "
            f"has {n_rows}{after}; use fewer components"
        )
    if n_rows < 2:
        raise UsageError(f"{table.path.name} has {n_rows} row; a mixture needs at least 2")
    _check_mixture_memory(args, n_rows, n_features)
    configure_numerics()
    with output_folder(args, mixture_files(args, n_features)) as folder:
        run = Run(
            folder,
            f"gaussmix fit-mixture {table.path.name}",
            args.quiet,
            subtitle=data_line(table),
        )
        run.results["data"] = data_summary(table)
        _run_fit_mixture(run, table, args, progress_bar=show_progress(args))
        run.finish("fit-mixture", command_arguments(args))
    say(args, f"wrote {Path(args.out) / 'report.html'}")
    return 0


def mixture_files(args: argparse.Namespace, n_features: int) -> list[str]:
    """The files ``fit-mixture`` will write (checked against --out before the fit)."""
    files = [*ALWAYS_WRITTEN, "model.npz", "mixture.png"]
    if len(args.components) > 1 and args.criterion != "loo":
        files.append("selection.png")
    if args.backend == "mcmc":
        files.append("posterior.nc")
        if n_features >= 2:
            files.append("posterior-nuts.png")
    return files


def _check_mixture_memory(args: argparse.Namespace, n_rows: int, n_features: int) -> None:
    """EM restarts and the (N, K) responsibilities; NUTS draws of every parameter and of
    the pointwise log-likelihood (one posterior per K when LOO compares them)."""
    largest = max(args.components)
    parameters = largest * (1 + n_features + n_features * n_features)
    em = 8.0 * MEMORY_FACTOR * (args.n_init * parameters + n_rows * largest)
    check_memory(
        em,
        f"EM with --components {largest} and --n-init {args.n_init} on {n_rows} rows",
        "use fewer components or restarts",
    )
    sampled = args.backend == "mcmc" or (args.criterion == "loo" and len(args.components) > 1)
    if not sampled:
        return
    check_sampling(args)
    counts = args.components if args.criterion == "loo" else (largest,)
    values = sum(k * (1 + n_features + n_features * n_features) + n_rows for k in counts)
    check_memory(
        draws_bytes(args, values),
        f"{args.num_chains} chains x {args.num_samples} draws of {len(counts)} posterior(s) "
        f"with {n_rows} pointwise log-likelihoods",
        "use fewer --num-samples or --num-chains",
    )


def _run_fit_mixture(run: Run, table: Table, args: argparse.Namespace, progress_bar: bool):
    from gaussmix import GaussianMixture, save

    x = table.values
    components = args.components
    report = run.report
    tree = None
    if len(components) > 1:
        report.heading(
            f"Choosing K from {components[0]} to {components[-1]} by {args.criterion.upper()}"
        )
        model, tree = _select_components(run, x, components, args, progress_bar)
    else:
        with run.collect_warnings("EM"):
            model = GaussianMixture(
                n_components=components[0],
                covariance_type=args.covariance,
                n_init=args.n_init,
                random_state=args.seed,
            ).fit(x)
    report.heading("EM estimate")
    run.results["em"] = mixture_section(run, model, x, table.columns, "EM")
    run.figure(
        mixture_figure(model, x, f"EM, K = {model.n_components}", table.columns),
        "mixture",
        "EM: components (ellipses at 1, 2, 3 sd) and points (size: responsibility)",
    )
    save(model, run.folder / "model.npz")
    run.files.append("model.npz")
    if args.backend != "mcmc":
        return
    settings = nuts_settings(args)
    report.heading("NUTS posterior")
    report.paragraph(
        f"NUTS: {nuts_text(settings)}, started at the EM answer; draws relabeled to the EM "
        "labelling before any summary."
    )
    if tree is None:
        with run.collect_warnings("NUTS"):
            tree = sample_mixture(model, x, settings, args.seed, progress_bar)
    run.results["posterior"] = mixture_posterior(run, model, tree, x, table.columns, "NUTS")


def sweep_components(
    x: np.ndarray,
    components: Sequence[int],
    covariance_type: str,
    criterion: str,
    *,
    n_init: int,
    seed: int,
) -> tuple[list[dict[str, Any]], Any]:
    """Fit every K by EM in one call of :func:`gaussmix.select_components` (every K of the
    model in one compiled program, where it was one program per K); rows with BIC, AIC,
    log-likelihood, convergence; the fit of the best by ``criterion`` (the smallest K
    among ties), fitted once more alone from the same start."""
    from gaussmix import select_components
    from gaussmix.inference.em import n_parameters

    table, best = select_components(
        x, list(components), covariance_type, criterion, n_init=n_init, seed=seed
    )
    rows = []
    for k, log_likelihood, converged in zip(
        table.n_components, table.log_likelihood, table.converged, strict=True
    ):
        count = n_parameters(covariance_type, int(k), x.shape[1])
        rows.append(
            {
                "n_components": int(k),
                "bic": float(-2.0 * log_likelihood + count * np.log(x.shape[0])),
                "aic": float(-2.0 * log_likelihood + 2.0 * count),
                "log_likelihood": float(log_likelihood),
                "converged": bool(converged),
            }
        )
    return rows, best


def sample_mixture(model: Any, x: np.ndarray, settings: dict[str, int], seed: int, progress_bar):
    """NUTS for a fitted GaussianMixture (``sample_posterior``): chains start at its EM
    answer and the draws follow its labelling."""
    return model.sample_posterior(x, random_state=seed, progress_bar=progress_bar, **settings)


def _select_components(
    run: Run, x: np.ndarray, components: Sequence[int], args: argparse.Namespace, progress_bar
):
    """The best K's EM fit, and the posterior when LOO chose it (else None)."""
    if args.criterion == "loo":
        return _select_by_loo(run, x, components, args, progress_bar)
    with run.collect_warnings("model selection"):
        rows, model = sweep_components(
            x,
            components,
            args.covariance,
            args.criterion,
            n_init=args.n_init,
            seed=args.seed,
        )
    run.results["selection"] = selection_report(
        run, rows, args.criterion, "Model selection", "selection"
    )
    return model, None


def _select_by_loo(
    run: Run, x: np.ndarray, components: Sequence[int], args: argparse.Namespace, progress_bar
):
    """Every K by EM then NUTS (:func:`gaussmix.select_components` with ``criterion="loo"``,
    one K at a time for the progress bar), compared by PSIS-LOO (:func:`gaussmix.compare`);
    the best's EM fit and posterior."""
    from gaussmix import compare, select_components

    settings = nuts_settings(args)
    run.report.paragraph(
        f"Each K is fitted by EM, then sampled by NUTS ({nuts_text(settings)}); the "
        "posteriors are compared by PSIS-LOO (higher ELPD is better; LOOIC = -2 ELPD)."
    )
    models, trees, looic = {}, {}, {}
    for k in progress(components, "K sweep (NUTS)", progress_bar):
        with run.collect_warnings(f"K = {k}"):
            table, model = select_components(
                x,
                [k],
                args.covariance,
                "loo",
                mcmc_options={**settings, "progress_bar": progress_bar},
                n_init=args.n_init,
                seed=args.seed,
            )
        models[f"K={k}"], trees[f"K={k}"] = model, table.posteriors[0]
        looic[f"K={k}"] = float(table.criterion[0])
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        comparison = compare(trees)
    columns = ["elpd", "se", "p", "elpd_diff", "dse", "weight"]
    rows = [
        [
            str(name),
            looic[str(name)],
            *(float(comparison.loc[name, column]) for column in columns),
        ]
        for name in comparison.index
    ]
    run.report.table(
        [
            "model",
            "LOOIC",
            "ELPD (LOO)",
            "SE",
            "p_loo",
            "ELPD difference",
            "SE of difference",
            "weight",
        ],
        rows,
        caption=f"PSIS-LOO comparison (best: {comparison.index[0]})",
    )
    best = str(comparison.index[0])
    run.results["selection"] = {
        "criterion": "loo",
        "rows": [dict(zip(["model", "looic", *columns], row, strict=True)) for row in rows],
        "best": int(best.removeprefix("K=")),
    }
    return models[best], trees[best]
