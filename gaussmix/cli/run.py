"""What one command run writes (results, report, figures, warnings), and its progress."""

import argparse
import contextlib
import os
import sys
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from gaussmix.cli.output import atomic_output
from gaussmix.cli.tables import Table

#: Warnings meant for developers, not shown in reports.
_DEVELOPER_WARNINGS = (DeprecationWarning, PendingDeprecationWarning, FutureWarning)


class Run:
    """What one command writes: results, report, figures, collected warnings."""

    def __init__(self, folder: Path, title: str, quiet: bool, subtitle: str | None = None):
        from gaussmix.report import Report

        self.folder = folder
        self.quiet = quiet
        self.report = Report(title, subtitle)
        self.results: dict[str, Any] = {}
        self.files: list[str] = []
        self.warnings: list[str] = []

    def figure(self, figure: Any, name: str, caption: str) -> None:
        """Save ``figure`` as ``name``.png, embed it in the report and close it."""
        import matplotlib.pyplot as plt

        png = self.report.figure(figure, caption)
        (self.folder / f"{name}.png").write_bytes(png)
        self.files.append(f"{name}.png")
        plt.close(figure)

    def warn(self, message: str) -> None:
        message = " ".join(str(message).split())
        self.warnings.append(message)
        self.report.warning(message)
        if not self.quiet:
            print(f"gaussmix: warning: {message}", file=sys.stderr)

    @contextlib.contextmanager
    def collect_warnings(self, context: str) -> Iterator[None]:
        """Turn Python warnings raised inside the block into highlighted report warnings
        (deprecation warnings, meant for developers, are left out)."""
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield
        seen = set()
        for item in caught:
            if issubclass(item.category, _DEVELOPER_WARNINGS):
                continue
            text = f"{context}: {item.category.__name__}: {item.message}"
            if text not in seen:
                seen.add(text)
                self.warn(text)

    def finish(self, command: str, arguments: dict[str, Any]) -> None:
        from gaussmix.report import versions, write_json

        self.report.heading("Files", level=2)
        self.report.paragraph(", ".join([*self.files, "results.json", "report.html"]))
        self.report.write(self.folder / "report.html")
        self.results = {
            "command": command,
            "arguments": arguments,
            **self.results,
            "warnings": self.warnings,
            "files": [*self.files, "results.json", "report.html"],
            "versions": versions(),
        }
        write_json(self.folder / "results.json", self.results)


def show_progress(args: argparse.Namespace) -> bool:
    """Progress bars only on a terminal, never under --quiet or CI."""
    if args.quiet or os.environ.get("CI"):
        return False
    return sys.stderr.isatty()


def say(args: argparse.Namespace, message: str) -> None:
    if not args.quiet:
        print(message, flush=True)


def command_arguments(args: argparse.Namespace) -> dict[str, Any]:
    return {
        key: list(value) if isinstance(value, tuple) else value
        for key, value in vars(args).items()
        if key != "command_line"
    }


def progress(iterable, description: str, enabled: bool):
    """``iterable`` wrapped in a tqdm progress bar on stderr when ``enabled``."""
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=description, leave=False, file=sys.stderr)


def output_folder(args: argparse.Namespace, planned: Sequence[str]):
    """:func:`atomic_output` for ``--out``, recording the command line in the manifest."""
    command = getattr(args, "command_line", ["gaussmix", args.command])
    return atomic_output(args.out, command=command, planned=planned)


#: What every command writes.
ALWAYS_WRITTEN = ("results.json", "report.html")


def write_posterior(tree: Any, folder: Path, name: str = "posterior") -> list[str]:
    """Write an ArviZ DataTree as one NetCDF-4 file ``name``.nc, one HDF5 group per ArviZ
    group (through h5netcdf); ``arviz.from_netcdf`` or ``xarray.open_datatree`` read it
    back. Returns the file names written.
    """
    tree.to_netcdf(folder / f"{name}.nc", engine="h5netcdf")
    return [f"{name}.nc"]


def data_line(table: Table) -> str:
    text = f"Data: {table.path.name}, {len(table.values)} rows, columns {', '.join(table.columns)}."
    if table.dropped:
        text += f" {len(table.dropped)} rows with missing values omitted (--drop-nan)."
    return text


def data_summary(table: Table) -> dict[str, Any]:
    return {
        "path": str(table.path),
        "n_rows": int(table.values.shape[0]),
        "columns": table.columns,
        "dropped_rows": table.dropped,
    }


def configure_numerics() -> None:
    """float64 in JAX (the command's choice; the library never flips it) and Agg."""
    import jax
    import matplotlib

    jax.config.update("jax_enable_x64", True)
    matplotlib.use("Agg")
