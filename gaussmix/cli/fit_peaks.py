"""``gaussmix fit-peaks``: peaks on a baseline, one spectrum or a batch, MAP then NUTS."""

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from gaussmix.cli.errors import UsageError
from gaussmix.cli.limits import (
    MAX_BASELINE_DEGREE,
    MEMORY_FACTOR,
    check_memory,
    check_sampling,
    draws_bytes,
)
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
    nuts_settings,
    nuts_text,
    peak_figure,
    peak_point,
    peak_section,
    posterior_section,
    slug,
)
from gaussmix.cli.tables import Table, drop_missing, read_table

#: Largest number of spectra drawn in a report.
_PEAK_FIGURES = 6


def fit_peaks_command(args: argparse.Namespace) -> int:
    names = [args.x, *args.y]
    if len(set(names)) != len(names):
        raise UsageError("--x and --y must name different columns, each once")
    baseline = _baseline_option(args.baseline)
    if isinstance(baseline, int) and baseline > MAX_BASELINE_DEGREE:
        raise UsageError(
            f"--baseline {args.baseline[:20]}: polynomial degrees above "
            f"{MAX_BASELINE_DEGREE} are numerically meaningless; give a lower degree"
        )
    if (args.shared or args.pooled) and len(args.y) < 2:
        raise UsageError("--shared and --pooled apply across a batch: give several --y columns")
    table = drop_missing(read_table(args.data, names, "--x/--y"), args.drop_nan)
    if len(np.unique(table.values[:, 0])) < 2:
        raise UsageError(f"column {table.columns[0]!r} holds one x value; a fit needs a range")
    _check_peaks_memory(args, table)
    configure_numerics()
    with output_folder(args, peak_files(args, table.columns[1:])) as folder:
        run = Run(folder, f"gaussmix fit-peaks {table.path.name}", args.quiet, data_line(table))
        run.results["data"] = data_summary(table)
        _run_fit_peaks(run, table, args, progress_bar=show_progress(args))
        run.finish("fit-peaks", command_arguments(args))
    say(args, f"wrote {Path(args.out) / 'report.html'}")
    return 0


def peak_files(args: argparse.Namespace, names: Sequence[str]) -> list[str]:
    """The files ``fit-peaks`` will write (checked against --out before the fit)."""
    stems = spectrum_stems(names)
    files = [*ALWAYS_WRITTEN, "model.npz"]
    files += [f"peaks-map-{stem}.png" for stem in stems[:_PEAK_FIGURES]]
    if args.backend == "mcmc":
        joint = getattr(args, "shared", ()) or getattr(args, "pooled", ())
        files += ["posterior-joint.nc"] if joint else [f"posterior-{stem}.nc" for stem in stems]
        files += [f"peaks-nuts-{stem}.png" for stem in stems[:_PEAK_FIGURES]]
    return files


def _check_peaks_memory(args: argparse.Namespace, table: Table) -> None:
    """The batched MAP fit's Jacobian (spectra x points x parameters); NUTS draws of the
    parameters, derived quantities and pointwise log-likelihood of one spectrum."""
    n_points, n_spectra = table.values.shape[0], table.values.shape[1] - 1
    parameters = 7 * len(args.peaks) + MAX_BASELINE_DEGREE + 3
    check_memory(
        8.0 * MEMORY_FACTOR * n_spectra * n_points * parameters,
        f"{n_spectra} spectra of {n_points} points with {len(args.peaks)} peaks",
        "fit fewer spectra at a time",
    )
    if args.backend == "mcmc":
        check_sampling(args)
        check_memory(
            draws_bytes(args, parameters + n_points),
            f"{args.num_chains} chains x {args.num_samples} draws of {n_points} points",
            "use fewer --num-samples or --num-chains",
        )


def _baseline_option(text: str | None) -> str | int | None:
    """``--baseline``: a name, a polynomial degree, or none."""
    if text is None or text.lower() == "none":
        return None
    return int(text) if text.isdigit() else text.lower()


def spectrum_stems(names: Sequence[str]) -> list[str]:
    """One distinct file-name stem per spectrum column: its slug, numbered by the column's
    position where that is empty or already taken (``a b`` and ``a-b`` both slug to
    ``a-b``; without this their figures and posteriors would overwrite each other).

    Example:
        >>> spectrum_stems(["a b", "a-b", "%", "c"])
        ['a-b', 'a-b-2', 'column-3', 'c']
    """
    stems: list[str] = []
    for position, name in enumerate(names, 1):
        stem = slug(name) or f"column-{position}"
        if stem in stems:
            stem = f"{stem}-{position}"
        while stem in stems:
            stem += "-"
        stems.append(stem)
    return stems


def _run_fit_peaks(run: Run, table: Table, args: argparse.Namespace, progress_bar: bool):
    from gaussmix import fit_peaks, save

    x = table.values[:, 0]
    spectra = table.values[:, 1:].T
    names = table.columns[1:]
    stems = spectrum_stems(names)
    batched = len(names) > 1
    baseline = _baseline_option(args.baseline)
    run.report.heading("MAP fit")
    run.report.paragraph(
        f"x: column {table.columns[0]}; "
        + (f"{len(names)} spectra fitted as one batch. " if batched else "")
        + "Damped Gauss-Newton / Levenberg-Marquardt on the peak program's log posterior, "
        "starting values found automatically."
    )
    joint = {"shared": tuple(args.shared), "pooled": tuple(args.pooled)}
    with run.collect_warnings("MAP"):
        fit = fit_peaks(
            x, spectra if batched else spectra[0], peaks=args.peaks, baseline=baseline, **joint
        )
    run.results["map"] = peak_section(run, fit, names, "MAP")
    if fit.shared or fit.pooled:
        run.results["map"]["batch"] = batch_section(run, fit, "MAP")
    for index, name in list(enumerate(names))[:_PEAK_FIGURES]:
        peak_figure(run, fit, index if batched else None, name, stems[index], "MAP")
    if len(names) > _PEAK_FIGURES:
        run.report.note(f"Figures of the first {_PEAK_FIGURES} spectra; all are in results.json.")
    save(fit, run.folder / "model.npz")
    run.files.append("model.npz")
    if args.backend != "mcmc":
        return
    settings = nuts_settings(args)
    if fit.shared or fit.pooled:
        _joint_nuts(run, fit, x, spectra, names, stems, args, settings, progress_bar)
        return
    run.report.heading("NUTS posterior")
    run.report.paragraph(
        f"NUTS on the same program, one spectrum at a time: {nuts_text(settings)}, "
        "started at the MAP."
    )
    posteriors = {}
    for index, name in enumerate(progress(names, "spectra (NUTS)", progress_bar)):
        point = peak_point(fit, index if batched else None)
        with run.collect_warnings(f"NUTS {name}"):
            sampled = fit_peaks(
                x,
                spectra[index],
                peaks=args.peaks,
                baseline=baseline,
                init=point,
                backend="mcmc",
                seed=args.seed,
                progress_bar=progress_bar,
                **settings,
            )
        run.report.heading(f"Spectrum {name}", level=3)
        posterior = sampled.posterior
        section = posterior_section(
            run, posterior, point, f"NUTS {name}", "MAP estimate", f"posterior-{stems[index]}"
        )
        posteriors[name] = section
        if index < _PEAK_FIGURES:
            peak_figure(run, sampled, None, name, stems[index], "NUTS")
    run.results["posterior"] = posteriors


def batch_section(run: Run, fit, title: str) -> dict:
    """The shared values (once) and the pooled parameters' population mean and spread."""
    rows = [
        [name, "shared", value, fit.shared_stderr.get(name)]
        for name, value in fit.shared_params.items()
    ]
    rows += [
        [name, "population", value, fit.population_stderr.get(name)]
        for name, value in fit.population_params.items()
    ]
    caption = f"{title}: values shared by the batch, and the pooled parameters' population"
    if fit.backend == "map" and fit.pooled:
        caption += " (MAP: marginal likelihood in the Laplace approximation)"
    run.report.table(["parameter", "kind", "value", "standard error"], rows, caption=caption)
    return {"shared": dict(fit.shared_params), "shared_stderr": dict(fit.shared_stderr),
            "population": dict(fit.population_params),
            "population_stderr": dict(fit.population_stderr)}  # fmt: skip


def _joint_nuts(run, fit, x, spectra, names, stems, args, settings, progress_bar) -> None:
    """NUTS on the joint posterior of the batch (shared and pooled parameters)."""
    from gaussmix import fit_peaks

    run.report.heading("NUTS posterior")
    run.report.paragraph(
        f"NUTS on the joint program of the {len(names)} spectra (shared parameters once, "
        f"pooled ones from their population): {nuts_text(settings)}, started at the MAP."
    )
    with run.collect_warnings("NUTS"):
        sampled = fit_peaks(
            x, spectra, peaks=args.peaks, baseline=_baseline_option(args.baseline),
            shared=fit.shared, pooled=fit.pooled, backend="mcmc", seed=args.seed,
            progress_bar=progress_bar, **settings,
        )  # fmt: skip
    point = {
        name: np.asarray(value)
        for name, value in fit.params.items()
        if name in sampled.posterior["posterior"] and name not in fit.shared
    }
    point.update(fit.shared_params)
    point.update(fit.population_params)
    section = posterior_section(
        run, sampled.posterior, point, "NUTS (joint)", "MAP estimate", "posterior-joint"
    )
    run.results["posterior"] = {"joint": section, "batch": batch_section(run, sampled, "NUTS")}
    for index, name in list(enumerate(names))[:_PEAK_FIGURES]:
        peak_figure(run, sampled, index, name, stems[index], "NUTS")
