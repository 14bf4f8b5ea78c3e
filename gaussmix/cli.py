"""The ``gaussmix`` command: fit mixtures and peaks from a file, or run the demo.

Usage::

    gaussmix fit-mixture DATA --components K | A:B [--covariance full] [--backend em|mcmc]
                         [--criterion bic|aic|loo] [--columns COL ...] --out DIR
    gaussmix fit-peaks DATA --x COL --y COL [COL ...] [--peaks gaussian,gaussian]
                       [--baseline linear] [--backend map|mcmc] --out DIR
    gaussmix demo [--out demo]

DATA is a CSV file with a header row naming the columns (comma, semicolon, tab or
whitespace separated; empty cells, ``nan`` and ``NA`` read as missing) or a NumPy ``.npy``
array (columns are then named ``0``, ``1``, ...). A column is chosen by its name or by
its index. ``--components A:B`` fits every K from A to B inclusive and keeps the best by
``--criterion``. Several ``--y`` columns share one x and are fitted as one batch.

Each command writes into DIR: ``results.json`` (parameters, criteria, diagnostics,
package versions; strict JSON, missing numbers as ``null``), ``model.npz`` (the fitted
model, :func:`gaussmix.load` reads it), the posterior as NetCDF when MCMC ran, PNG
figures, ``report.html`` (one self-contained page), and ``gaussmix-manifest.json``: the
command and each file the run wrote with its size and SHA-256. DIR may hold anything
else; gaussmix never deletes or overwrites a file it did not write. A rerun into DIR
replaces exactly the files the previous manifest lists (and removes the listed ones it no
longer writes); it refuses, before any work, with exit code 2 when a file it would write
is there but not listed (move it, or choose another ``--out``) or a listed file was
changed since (its hash differs). A damaged or foreign manifest, or one that names a
file outside DIR, lists nothing and is itself a file in the way. The files
are written into a temporary folder inside DIR and moved into place at the end, the
manifest last, with SIGINT and SIGTERM held off for that moment: a failed or interrupted
run leaves DIR as it was (exit code 130 after SIGINT, 143 after SIGTERM).

Bad input (a missing or unreadable file, a FIFO or device as DATA, non-numeric columns,
NaN rows, more components than rows, an unknown option, a size that would exhaust
memory) and operating-system errors (permission denied, a read-only file system, a full
disk) end with exit code 2 and one line on stderr. ``--quiet`` silences progress bars
and messages; progress bars are shown only on a terminal and never when the ``CI``
environment variable is set. Set ``GAUSSMIX_DEBUG=1`` to see the
traceback of an error.

The command computes in float64 (it enables ``jax_enable_x64``) and draws with
matplotlib's Agg backend.
"""

import argparse
import contextlib
import csv
import errno
import hashlib
import json
import math
import os
import shutil
import signal
import stat
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

__all__ = ["Table", "UsageError", "build_parser", "main", "read_table"]

#: Exit code of bad input (argparse's convention).
EXIT_USAGE = 2

_MISSING = frozenset({"", "nan", "na", "n/a", "null", "none", "-"})
_COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")
_LISTED = 8

#: Largest K in --components (more is a memory and time problem long before it is useful).
_MAX_COMPONENTS = 10_000
#: Most candidate counts in --components A:B: each one is a separate fit.
_MAX_CANDIDATES = 1000
#: Largest number of peaks in --peaks.
_MAX_PEAKS = 1000
#: Largest polynomial degree of --baseline (higher degrees are numerically meaningless).
_MAX_BASELINE_DEGREE = 20
#: Largest --num-warmup and --num-samples: a million draws per chain.
_MAX_DRAWS = 1_000_000
#: Largest --num-chains.
_MAX_CHAINS = 1024
#: Largest --n-init (EM restarts run side by side).
_MAX_RESTARTS = 1000
#: Seeds NumPy and JAX accept: 0 to 2**32 - 1.
_MAX_SEED = 2**32 - 1
#: Fewest NUTS draws per chain: ArviZ's split R-hat and ESS split each chain in halves
#: and need at least 2 draws in each.
_MIN_DRAWS_PER_CHAIN = 4
#: Fewest NUTS draws in all: PSIS-LOO fits a Pareto tail to the largest fifth of the
#: importance ratios and needs at least 5 draws in it.
_MIN_DRAWS = 25


class UsageError(Exception):
    """Bad input on the command line: reported as one line with exit code 2."""


class _Parser(argparse.ArgumentParser):
    """argparse whose errors raise :class:`UsageError` instead of printing usage."""

    def error(self, message: str):
        raise UsageError(f"{message} (see '{self.prog} --help')")


# ---------------------------------------------------------------------------------------
# Arguments


def _components(text: str) -> tuple[int, ...]:
    """``"3"`` -> (3,); ``"1:10"`` -> (1, ..., 10), both ends included.

    The range is checked arithmetically before it is built: at most
    ``_MAX_CANDIDATES`` counts, none above ``_MAX_COMPONENTS``.
    """
    parts = text.split(":")
    try:
        numbers = [int(part) for part in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid value {text!r}: give a count K such as 3 or a range A:B such as 1:10"
        ) from None
    if len(numbers) == 1:
        numbers = numbers * 2
    if len(numbers) != 2:
        raise argparse.ArgumentTypeError(f"invalid range {text!r}: write A:B such as 1:10")
    low, high = numbers
    if low < 1 or high < low:
        raise argparse.ArgumentTypeError(
            f"invalid value {text!r}: counts must be >= 1 and A <= B in A:B"
        )
    if high - low + 1 > _MAX_CANDIDATES:
        raise argparse.ArgumentTypeError(
            f"invalid range {text!r}: {high - low + 1} candidate counts, at most "
            f"{_MAX_CANDIDATES} (each is a separate fit); give a narrower range A:B"
        )
    if high > _MAX_COMPONENTS:
        raise argparse.ArgumentTypeError(
            f"invalid value {text!r}: at most {_MAX_COMPONENTS} components; give a smaller K"
        )
    return tuple(range(low, high + 1))


def _bounded_int(low: int, high: int):
    """An argparse type: an integer from ``low`` to ``high`` inclusive."""

    def convert(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{text!r} must be >= {low}")
        if value > high:
            raise argparse.ArgumentTypeError(f"{text!r} is too large: at most {high}")
        return value

    return convert


def _peak_list(text: str) -> tuple[str, ...]:
    names = tuple(name.strip().lower() for name in text.split(",", _MAX_PEAKS))
    if len(names) > _MAX_PEAKS:
        raise argparse.ArgumentTypeError(
            f"more than {_MAX_PEAKS} peaks in --peaks; fit fewer peaks at a time"
        )
    if not all(names):
        raise argparse.ArgumentTypeError(
            f"invalid peak list {text[:60]!r}: give lineshapes separated by commas, "
            "e.g. gaussian,gaussian"
        )
    return names


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``gaussmix`` command (errors raise :class:`UsageError`)."""
    parser = _Parser(
        prog="gaussmix",
        description="Gaussian mixtures and peak fits: EM/MAP and NUTS, with an HTML report.",
    )
    parser.add_argument(
        "--quiet", action="store_true", help="no progress bars and no messages on stdout"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    # Options every command takes; SUPPRESS keeps `gaussmix --quiet CMD` from being undone.
    common = _Parser(add_help=False)
    common.add_argument(
        "--quiet",
        action="store_true",
        default=argparse.SUPPRESS,
        help="no progress bars and no messages on stdout",
    )
    common.add_argument(
        "--seed",
        type=_bounded_int(0, _MAX_SEED),
        default=0,
        help=f"random seed, 0 to {_MAX_SEED} (default: 0)",
    )

    data = _Parser(add_help=False)
    data.add_argument("data", metavar="DATA", help="CSV file with a header row, or .npy")
    data.add_argument(
        "--drop-nan",
        action="store_true",
        help="omit rows with missing or NaN values instead of stopping",
    )
    data.add_argument("--out", required=True, metavar="DIR", help="output folder")

    sampling = _Parser(add_help=False)
    sampling.add_argument(
        "--num-warmup",
        type=_bounded_int(1, _MAX_DRAWS),
        default=1000,
        metavar="N",
        help="NUTS (default: 1000)",
    )
    sampling.add_argument(
        "--num-samples",
        type=_bounded_int(1, _MAX_DRAWS),
        default=1000,
        metavar="N",
        help="NUTS (default: 1000)",
    )
    sampling.add_argument(
        "--num-chains",
        type=_bounded_int(1, _MAX_CHAINS),
        default=4,
        metavar="N",
        help="NUTS (default: 4)",
    )

    mixture = commands.add_parser(
        "fit-mixture",
        parents=[common, data, sampling],
        help="fit a Gaussian mixture to the rows of DATA",
        description="Fit a Gaussian mixture (EM, optionally followed by NUTS).",
    )
    mixture.add_argument(
        "--components",
        type=_components,
        required=True,
        metavar="K|A:B",
        help="number of components, or a range A:B (inclusive) to choose from",
    )
    mixture.add_argument(
        "--covariance", choices=_COVARIANCE_TYPES, default="full", help="(default: full)"
    )
    mixture.add_argument(
        "--backend",
        choices=("em", "mcmc"),
        default="em",
        help="em: point estimate; mcmc: EM, then NUTS from it (default: em)",
    )
    mixture.add_argument(
        "--criterion",
        choices=("bic", "aic", "loo"),
        default="bic",
        help="how a range of K is decided (loo fits every K by NUTS; default: bic)",
    )
    mixture.add_argument(
        "--columns", nargs="+", metavar="COL", help="columns to use (default: all)"
    )
    mixture.add_argument(
        "--n-init",
        type=_bounded_int(1, _MAX_RESTARTS),
        default=1,
        metavar="N",
        help="EM restarts (default: 1)",
    )
    mixture.set_defaults(run=_fit_mixture_command)

    peaks = commands.add_parser(
        "fit-peaks",
        parents=[common, data, sampling],
        help="fit peaks on a baseline to one or several spectra",
        description="Fit a sum of peaks; several --y columns are fitted as one batch.",
    )
    peaks.add_argument("--x", required=True, metavar="COL", help="column of the x values")
    peaks.add_argument(
        "--y", required=True, nargs="+", metavar="COL", help="column(s) of the spectra"
    )
    peaks.add_argument(
        "--peaks",
        type=_peak_list,
        default=("gaussian",),
        metavar="SHAPE,...",
        help="lineshapes separated by commas (default: gaussian)",
    )
    peaks.add_argument(
        "--baseline",
        default=None,
        help="constant, linear, exponential, a polynomial degree such as 3, or none (default)",
    )
    peaks.add_argument(
        "--backend",
        choices=("map", "mcmc"),
        default="map",
        help="map: Levenberg-Marquardt; mcmc: then NUTS per spectrum (default: map)",
    )
    peaks.set_defaults(run=_fit_peaks_command)

    demo = commands.add_parser(
        "demo",
        parents=[common],
        help="the tour on the bundled datasets",
        description="EM and NUTS for mixtures, peak fits against curve_fit, model "
        "selection, and the report, on the bundled datasets.",
    )
    demo.add_argument("--out", default="demo", metavar="DIR", help="output folder (default: demo)")
    # A smaller tour for the test suite.
    demo.add_argument("--quick", action="store_true", help=argparse.SUPPRESS)
    demo.set_defaults(run=_demo_command)
    return parser


# ---------------------------------------------------------------------------------------
# Data


@dataclass
class Table:
    """Numeric columns read from a file.

    Attributes:
        values: (N, C) float64, NaN where a value is missing.
        columns: C column names.
        rows: (N,) the rows' numbers as a user finds them: 1-based data rows for CSV
            (the header is line 1, so data row r sits on line ``lines[r]``), 0-based
            indices for ``.npy``.
        lines: (N,) line numbers in the file (CSV), or None.
        path: the file.
        dropped: row numbers omitted by ``--drop-nan``.
    """

    values: np.ndarray
    columns: list[str]
    rows: np.ndarray
    lines: np.ndarray | None
    path: Path
    dropped: list[int] = field(default_factory=list)

    def describe_rows(self, mask: np.ndarray) -> str:
        """'rows 3, 7 (lines 4, 8)' for the rows where ``mask`` is true."""
        rows = self.rows[mask]
        shown = ", ".join(str(r) for r in rows[:_LISTED]) + (", ..." if len(rows) > _LISTED else "")
        noun = "row" if len(rows) == 1 else f"{len(rows)} rows"
        if self.lines is None:
            return f"{noun} {shown} (0-based indices)"
        lines = self.lines[mask]
        shown_lines = ", ".join(str(n) for n in lines[:_LISTED]) + (
            ", ..." if len(lines) > _LISTED else ""
        )
        return f"{noun} {shown} (file line{'s' if len(lines) > 1 else ''} {shown_lines})"

    def select(self, names: Sequence[str] | None, option: str) -> "Table":
        """The columns named (or numbered) in ``names``; all when None."""
        if names is None:
            return self
        indices = [self.column_index(name, option) for name in names]
        return Table(
            self.values[:, indices],
            [self.columns[i] for i in indices],
            self.rows,
            self.lines,
            self.path,
            list(self.dropped),
        )

    def column_index(self, name: str, option: str) -> int:
        if name in self.columns:
            return self.columns.index(name)
        with contextlib.suppress(ValueError):
            index = int(name)
            if -len(self.columns) <= index < len(self.columns):
                return index % len(self.columns)
        listed = ", ".join(self.columns[:20]) + (", ..." if len(self.columns) > 20 else "")
        raise UsageError(
            f"{option} {name!r}: no such column in {self.path.name}; its columns are {listed}"
        )


#: What a path is when it is not a regular file or a folder.
_SPECIAL_FILES = (
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def _check_regular(path: Path, mode: int) -> None:
    if stat.S_ISDIR(mode):
        raise UsageError(f"{path} is a folder; give a CSV file or a .npy array")
    if not stat.S_ISREG(mode):
        kind = next((text for test, text in _SPECIAL_FILES if test(mode)), "not a regular file")
        raise UsageError(
            f"{path} is {kind}, not a regular file; save the data to a file and give that"
        )


@contextlib.contextmanager
def _open_data(path: Path) -> Iterator[Any]:
    """The data file opened for reading in binary, after checking it is a regular file:
    the path is checked before it is opened (opening a FIFO would wait for a writer),
    and opened without blocking and checked again, in case it changed in between."""
    try:
        _check_regular(path, os.stat(path).st_mode)
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    except OSError as error:
        raise UsageError(
            f"cannot read {path}: {error.strerror}; give a file you may read"
        ) from None
    try:
        _check_regular(path, os.fstat(descriptor).st_mode)
        os.set_blocking(descriptor, True)
        file = os.fdopen(descriptor, "rb")
    except BaseException:
        os.close(descriptor)
        raise
    with file:
        yield file


def _read_csv_text(path: Path) -> list[str]:
    with _open_data(path) as file:
        try:
            data = file.read()
        except OSError as error:
            raise UsageError(
                f"cannot read {path}: {error.strerror}; give a file you may read"
            ) from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise UsageError(
            f"cannot read {path}: it is not UTF-8 text; give a CSV file with a header row "
            "or a .npy array"
        ) from None
    return text.splitlines()


def _delimiter(header: str) -> str | None:
    for candidate in (",", ";", "\t"):
        if candidate in header:
            return candidate
    return None


def _parse_float(cell: str) -> float:
    text = cell.strip()
    if text.lower() in _MISSING:
        return math.nan
    return float(text)


def _read_csv(path: Path) -> tuple[list[str], list[list[str]], list[int]]:
    lines = _read_csv_text(path)
    numbered = [(number, line) for number, line in enumerate(lines, 1) if line.strip()]
    if not numbered:
        raise UsageError(f"cannot read {path}: the file is empty")
    header_number, header_line = numbered[0]
    delimiter = _delimiter(header_line)

    def split(line: str) -> list[str]:
        if delimiter is None:
            return line.split()
        return next(csv.reader([line], delimiter=delimiter))

    try:
        header = [name.strip() for name in split(header_line)]
    except csv.Error as error:
        raise UsageError(f"cannot read {path} as CSV: line {header_number}: {error}") from None
    numeric_header = True
    for name in header:
        try:
            float(name)
        except ValueError:
            numeric_header = False
            break
    if numeric_header:
        raise UsageError(
            f"cannot read {path} as CSV: its first line holds numbers, not column names; "
            "add a header row naming the columns (for example x,y)"
        )
    if len(set(header)) != len(header) or not all(header):
        raise UsageError(
            f"cannot read {path} as CSV: the header row needs distinct, non-empty column names"
        )
    cells, line_numbers = [], []
    for number, line in numbered[1:]:
        try:
            row = split(line)
        except csv.Error as error:
            raise UsageError(f"cannot read {path} as CSV: line {number}: {error}") from None
        if len(row) != len(header):
            raise UsageError(
                f"cannot read {path} as CSV: line {number} has {len(row)} fields but the "
                f"header has {len(header)}"
            )
        cells.append(row)
        line_numbers.append(number)
    if not cells:
        raise UsageError(f"cannot read {path}: it has a header row but no data rows")
    return header, cells, line_numbers


def _numeric_columns(
    path: Path, header: list[str], cells: list[list[str]], lines: list[int], hint: str
) -> np.ndarray:
    strings = np.array(cells, dtype=object)
    values = np.empty(strings.shape, dtype=np.float64)
    for column, name in enumerate(header):
        for row, cell in enumerate(strings[:, column]):
            try:
                values[row, column] = _parse_float(cell)
            except ValueError:
                raise UsageError(
                    f"column {name!r} of {path.name} is not numeric (line {lines[row]}: "
                    f"{cell.strip()[:30]!r}); {hint}"
                ) from None
    return values


def read_table(
    path: str | os.PathLike, columns: Sequence[str] | None = None, option: str = "--columns"
) -> Table:
    """Read numeric columns of a CSV file (with a header row) or a ``.npy`` array.

    Only the selected columns must be numeric. Missing values (empty cells, ``nan``,
    ``NA``) become NaN; :func:`drop_missing` reports or omits those rows.

    Args:
        path: the file.
        columns: names or indices of the columns to keep (None: all).
        option: the command-line option that chose ``columns``, named in messages.

    Raises:
        UsageError: the file is missing, unreadable or not a regular file (a folder, a
            FIFO, a socket or a device, checked before it is opened), a column is
            unknown or not numeric; the message is one line saying what to do.

    Example:
        >>> import tempfile, pathlib
        >>> folder = pathlib.Path(tempfile.mkdtemp())
        >>> _ = (folder / "data.csv").write_text("label,a,b\\nx,1,2\\ny,3,\\n")
        >>> table = read_table(folder / "data.csv", ["a", "b"])
        >>> table.values.shape, table.columns
        ((2, 2), ['a', 'b'])
    """
    path = Path(path)
    if path.suffix.lower() == ".npy":
        return _read_npy(path, columns, option)
    header, cells, lines = _read_csv(path)
    table = Table(
        np.empty((len(cells), len(header))),
        header,
        np.arange(1, len(cells) + 1),
        np.asarray(lines),
        path,
    )
    indices = (
        list(range(len(header)))
        if columns is None
        else [table.column_index(name, option) for name in columns]
    )
    hint = (
        f"choose numeric columns with {option}"
        if option == "--columns"
        else "name a numeric column"
    )
    chosen = [header[i] for i in indices]
    values = _numeric_columns(
        path, chosen, [[row[i] for i in indices] for row in cells], lines, hint
    )
    return Table(values, chosen, table.rows, table.lines, path)


def _read_npy(path: Path, columns: Sequence[str] | None, option: str) -> Table:
    try:
        with _open_data(path) as file:
            array = np.load(file, allow_pickle=False)
    except ValueError as error:
        if "allow_pickle" in str(error):
            raise UsageError(
                f"{path} holds Python objects; save a numeric array with numpy.save"
            ) from None
        raise UsageError(f"cannot read {path} as a .npy array: {error}") from None
    except (OSError, EOFError) as error:
        raise UsageError(f"cannot read {path} as a .npy array: {error}") from None
    if array.dtype.kind not in "biuf":
        raise UsageError(f"{path} holds {array.dtype} values, not numbers; save a numeric array")
    if array.ndim == 1:
        array = array[:, None]
    if array.ndim != 2:
        raise UsageError(f"{path} holds an array of shape {array.shape}; expected (N,) or (N, D)")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise UsageError(f"{path} holds an empty array of shape {array.shape}")
    table = Table(
        array.astype(np.float64),
        [str(i) for i in range(array.shape[1])],
        np.arange(array.shape[0]),
        None,
        path,
    )
    return table.select(columns, option)


def drop_missing(table: Table, drop: bool) -> Table:
    """Stop on rows with NaN (naming them), or omit them when ``drop``; stop on infinity."""
    infinite = np.isinf(table.values).any(axis=1)
    if infinite.any():
        raise UsageError(
            f"{table.path.name} has infinite values in {table.describe_rows(infinite)}; "
            "fix or remove those rows"
        )
    missing = np.isnan(table.values).any(axis=1)
    if not missing.any():
        return table
    if not drop:
        raise UsageError(
            f"{table.path.name} has missing or NaN values in {table.describe_rows(missing)}; "
            "fill them in or pass --drop-nan to omit those rows"
        )
    keep = ~missing
    if not keep.any():
        raise UsageError(f"every row of {table.path.name} has a missing value; nothing is left")
    return Table(
        table.values[keep],
        table.columns,
        table.rows[keep],
        None if table.lines is None else table.lines[keep],
        table.path,
        [int(r) for r in table.rows[missing]],
    )


# ---------------------------------------------------------------------------------------
# Output

#: The file in an output folder that lists what gaussmix wrote there.
MANIFEST_NAME = "gaussmix-manifest.json"
#: The manifest's ``format`` and ``version`` fields.
MANIFEST_FORMAT = "gaussmix-manifest"
MANIFEST_VERSION = 1
#: Largest manifest read (a real one lists a few dozen files).
_MANIFEST_BYTES = 1 << 22
#: The temporary folder a run writes into, inside the output folder.
_TEMPORARY_PREFIX = ".gaussmix-"
_TEMPORARY_SUFFIX = ".partial"
_INTERRUPT_SIGNALS = (signal.SIGINT, signal.SIGTERM)
#: Exit code of an interrupted run: 128 + the signal's number (130 SIGINT, 143 SIGTERM).
EXIT_INTERRUPTED = {signal.SIGINT: 130, signal.SIGTERM: 143}


class _Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM received while :func:`main` ran (its handler raises this)."""

    def __init__(self, signal_number: int) -> None:
        super().__init__(signal.Signals(signal_number).name)
        self.signal_number = signal_number


class _InterruptHandler:
    """The SIGINT and SIGTERM handler :func:`main` installs while it runs.

    It raises :class:`_Interrupted`; inside :meth:`deferred` it records the signal instead
    and the block raises it at its end. A signal sent to the process may be delivered to
    any of its threads (JAX runs several), so blocking it in the main thread alone cannot
    hold it off; Python runs handlers in the main thread, so the handler can.
    """

    def __init__(self) -> None:
        self.depth = 0
        self.pending: int | None = None

    def __call__(self, signal_number: int, frame: Any) -> None:
        if self.depth:
            self.pending = self.pending or signal_number
            return
        raise _Interrupted(signal_number)

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        """SIGINT and SIGTERM wait until the block ends (blocked in this thread, deferred
        by the handler when :func:`main` installed it), then raise."""
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, _INTERRUPT_SIGNALS)
        self.depth += 1
        try:
            yield
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            _run_signal_handlers()
            self.depth -= 1
            if not self.depth and self.pending is not None:
                pending, self.pending = self.pending, None
                raise _Interrupted(pending)

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        """Handle SIGINT and SIGTERM during the block (main thread only; a signal the
        caller ignores or handles itself is left alone); the previous handlers return."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {}
        for number, default in (
            (signal.SIGINT, signal.default_int_handler),
            (signal.SIGTERM, signal.SIG_DFL),
        ):
            if signal.getsignal(number) is default:
                previous[number] = signal.signal(number, self)
        try:
            yield
        finally:
            for number, handler in previous.items():
                signal.signal(number, handler)
            self.pending = None


def _run_signal_handlers() -> None:
    """Calling a Python function lets the interpreter run handlers of signals just
    unblocked, here rather than at some later line."""


_INTERRUPTS = _InterruptHandler()


def _digest(path: Path) -> tuple[int, str]:
    """(size in bytes, SHA-256 in hex) of a file."""
    hasher = hashlib.sha256()
    size = 0
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            hasher.update(block)
            size += len(block)
    return size, hasher.hexdigest()


def _plain_name(name: Any) -> bool:
    """Whether ``name`` is a path inside a folder as a manifest may list it: relative,
    '/'-separated, no empty, '.' or '..' parts, no backslash or NUL, not the manifest
    itself nor inside a temporary folder."""
    if not isinstance(name, str) or not name or "\\" in name or "\0" in name:
        return False
    parts = name.split("/")
    return (
        all(part not in ("", ".", "..") for part in parts)
        and name != MANIFEST_NAME
        and not parts[0].startswith(_TEMPORARY_PREFIX)
    )


def _kind(folder: Path, name: str) -> str:
    """'missing', 'file' (a regular file reached without symbolic links), or 'other'."""
    path = folder
    parts = name.split("/")
    for index, part in enumerate(parts):
        path = path / part
        try:
            mode = os.lstat(path).st_mode
        except FileNotFoundError:
            return "missing"
        except OSError:
            return "other"
        if index == len(parts) - 1:
            return "file" if stat.S_ISREG(mode) else "other"
        if not stat.S_ISDIR(mode):
            return "other"
    return "other"


def read_manifest(folder: str | os.PathLike) -> tuple[dict[str, tuple[int, str]], str | None]:
    """The files an earlier run listed in ``folder``'s manifest, and what is wrong with it.

    Returns:
        ``({name: (size, sha256)}, None)`` for a valid manifest, ``({}, None)`` when there
        is none, and ``({}, reason)`` when the file is there but is not a manifest gaussmix
        wrote (damaged, foreign, or listing a name outside the folder): it lists nothing.

    Example:
        >>> import tempfile
        >>> read_manifest(tempfile.mkdtemp())
        ({}, None)
    """
    path = Path(folder) / MANIFEST_NAME
    kind = _kind(Path(folder), MANIFEST_NAME)
    if kind == "missing":
        return {}, None
    if kind != "file":
        return {}, "it is not a regular file"
    try:
        with open(path, "rb") as file:
            text = file.read(_MANIFEST_BYTES + 1)
    except OSError as error:
        return {}, f"it cannot be read: {error.strerror}"
    if len(text) > _MANIFEST_BYTES:
        return {}, "it is too large"
    try:
        manifest = json.loads(text.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return {}, "it is not JSON"
    if (
        not isinstance(manifest, dict)
        or manifest.get("format") != MANIFEST_FORMAT
        or manifest.get("version") != MANIFEST_VERSION
        or not isinstance(manifest.get("files"), list)
    ):
        return {}, f"it is not a {MANIFEST_FORMAT} version {MANIFEST_VERSION}"
    entries: dict[str, tuple[int, str]] = {}
    for entry in manifest["files"]:
        name = entry.get("name") if isinstance(entry, dict) else None
        if not _plain_name(name):
            return {}, f"it lists {str(name)[:60]!r}, not a file name inside the folder"
        size, sha256 = entry.get("size"), entry.get("sha256")
        if (
            type(size) is not int
            or size < 0
            or not isinstance(sha256, str)
            or len(sha256) != 64
            or any(c not in "0123456789abcdef" for c in sha256)
            or name in entries
        ):
            return {}, f"its entry for {name!r} is damaged"
        entries[name] = (size, sha256)
    return entries, None


def _check_folder(destination: Path, names: Sequence[str]) -> dict[str, tuple[int, str]]:
    """The manifest's entries, after checking that writing ``names`` into ``destination``
    replaces only files gaussmix wrote there and the user has not changed since.

    Raises:
        UsageError: naming the first file in the way and what to do.
    """
    fix = "move it out of the folder or choose another --out"
    entries, problem = read_manifest(destination)
    if problem is not None:
        raise UsageError(
            f"--out {destination}: {MANIFEST_NAME} is not a manifest gaussmix wrote ({problem}); "
            f"{fix}"
        )
    for name, recorded in entries.items():
        kind = _kind(destination, name)
        if kind == "missing":
            continue
        if kind != "file" or _digest(destination / name) != recorded:
            raise UsageError(
                f"--out {destination}: {name} was changed since gaussmix wrote it; {fix}"
            )
    for name in names:
        if name not in entries and _kind(destination, name) != "missing":
            raise UsageError(
                f"--out {destination}: {name} exists and gaussmix did not write it "
                f"(its {MANIFEST_NAME} does not list it); {fix}"
            )
    return entries


def _written_files(folder: Path) -> list[str]:
    """Every file under ``folder``, as '/'-separated paths relative to it."""
    names = []
    for root, _, files in os.walk(folder):
        for file in files:
            names.append(Path(root, file).relative_to(folder).as_posix())
    return sorted(names)


def _manifest(folder: Path, names: Sequence[str], command: Sequence[str]) -> bytes:
    """The manifest of the files ``names`` in ``folder``."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        gaussmix_version = version("gaussmix")
    except PackageNotFoundError:
        gaussmix_version = None
    files = []
    for name in names:
        size, sha256 = _digest(folder / name)
        files.append({"name": name, "size": size, "sha256": sha256})
    manifest = {
        "format": MANIFEST_FORMAT,
        "version": MANIFEST_VERSION,
        "command": list(command),
        "gaussmix_version": gaussmix_version,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "files": files,
    }
    return (json.dumps(manifest, indent=1) + "\n").encode("utf-8")


def _remove_empty_folders(folder: Path, name: str) -> None:
    """Remove the folders on the way to ``folder/name`` that are left empty."""
    parent = PurePosixPath(name).parent
    while parent != PurePosixPath("."):
        try:
            (folder / parent).rmdir()
        except OSError:
            return
        parent = parent.parent


def _remove(temporary: Path | None, created: Sequence[Path]) -> None:
    """Remove the temporary folder, then the folders this run created (if empty)."""
    if temporary is not None:
        shutil.rmtree(temporary, ignore_errors=True)
    for folder in created:
        with contextlib.suppress(OSError):
            folder.rmdir()


@contextlib.contextmanager
def atomic_output(
    destination: str | os.PathLike,
    *,
    command: Sequence[str] = (),
    planned: Sequence[str] = (),
) -> Iterator[Path]:
    """A temporary folder inside ``destination`` whose files move into it when the block
    succeeds, with the manifest ``gaussmix-manifest.json`` listing them.

    A file in ``destination`` is replaced or removed only when the previous manifest
    lists it and it is unchanged (same size and SHA-256); anything else there is left
    alone. Before the block runs, ``planned`` (the names the run expects to write) is
    checked; when the block ends, every file it wrote is checked again before anything
    moves. The files move in one by one (``os.replace``), the manifest last, with SIGINT
    and SIGTERM held off. On an exception or an interrupt, the temporary folder and any
    folder this call created are removed: ``destination`` is left as it was.

    Args:
        destination: the output folder (created with its parents when missing).
        command: the command line, recorded in the manifest.
        planned: '/'-separated names of the files the run expects to write.

    Raises:
        UsageError: ``destination`` is not a folder, cannot be written, holds a file in
            the way (not listed, or changed since gaussmix wrote it), or its manifest is
            not one gaussmix wrote.

    Example:
        >>> import tempfile, pathlib
        >>> out = pathlib.Path(tempfile.mkdtemp()) / "out"
        >>> with atomic_output(out) as folder:
        ...     _ = (folder / "results.json").write_text("{}")
        >>> sorted(p.name for p in out.iterdir())
        ['gaussmix-manifest.json', 'results.json']
    """
    destination = Path(destination).absolute()
    try:
        mode = os.stat(destination).st_mode
    except FileNotFoundError:
        mode = None
    except OSError as error:
        raise UsageError(
            f"cannot use --out {destination}: {error.strerror}; choose a folder you can write"
        ) from None
    if mode is not None:
        if not stat.S_ISDIR(mode):
            raise UsageError(f"--out {destination} exists and is not a folder; choose a folder")
        _check_folder(destination, planned)
    created: list[Path] = []
    temporary = None
    committed = False
    try:
        # An interrupt that arrives while the folders are made is raised when this block
        # ends, inside the try below: the folders it made are removed like any others.
        with _INTERRUPTS.deferred():
            folder = destination
            while not folder.exists() and folder != folder.parent:
                created.append(folder)
                folder = folder.parent
            try:
                destination.mkdir(parents=True, exist_ok=True)
                temporary = Path(
                    tempfile.mkdtemp(
                        prefix=_TEMPORARY_PREFIX, suffix=_TEMPORARY_SUFFIX, dir=destination
                    )
                )
            except OSError as error:
                raise UsageError(
                    f"cannot create a folder in --out {destination}: {error.strerror}; "
                    "choose a folder you can write"
                ) from None
        yield temporary
        names = _written_files(temporary)
        entries = _check_folder(destination, names)
        (temporary / MANIFEST_NAME).write_bytes(_manifest(temporary, names, command))
        with _INTERRUPTS.deferred():
            for name in names:
                (destination / name).parent.mkdir(parents=True, exist_ok=True)
                os.replace(temporary / name, destination / name)
            for name in sorted(set(entries) - set(names)):
                with contextlib.suppress(FileNotFoundError):
                    (destination / name).unlink()
                _remove_empty_folders(destination, name)
            os.replace(temporary / MANIFEST_NAME, destination / MANIFEST_NAME)
            shutil.rmtree(temporary, ignore_errors=True)
            committed = True
    except BaseException as error:
        if committed:
            error.written = destination  # an interrupt held off until the files were in
            raise
        with _INTERRUPTS.deferred():
            _remove(temporary, created)
        raise


#: Warnings meant for developers, not shown in reports.
_DEVELOPER_WARNINGS = (DeprecationWarning, PendingDeprecationWarning, FutureWarning)


class _Run:
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


def _show_progress(args: argparse.Namespace) -> bool:
    """Progress bars only on a terminal, never under --quiet or CI."""
    if args.quiet or os.environ.get("CI"):
        return False
    return sys.stderr.isatty()


def _say(args: argparse.Namespace, message: str) -> None:
    if not args.quiet:
        print(message, flush=True)


def _arguments(args: argparse.Namespace) -> dict[str, Any]:
    return {
        key: list(value) if isinstance(value, tuple) else value
        for key, value in vars(args).items()
        if key not in ("run", "command_line")
    }


def write_posterior(tree: Any, folder: Path, name: str = "posterior") -> list[str]:
    """Write an ArviZ DataTree as one NetCDF-4 file ``name``.nc, one HDF5 group per ArviZ
    group (through h5netcdf); ``arviz.from_netcdf`` or ``xarray.open_datatree`` read it
    back. Returns the file names written.
    """
    tree.to_netcdf(folder / f"{name}.nc", engine="h5netcdf")
    return [f"{name}.nc"]


# ---------------------------------------------------------------------------------------
# Pieces of the report

#: Effective draws wanted per chain (the ESS threshold is this times the chains, at most
#: 400; Vehtari et al. 2021).
ESS_PER_CHAIN = 100

#: Largest number of parameter rows shown in an HTML table (all are in results.json).
_TABLE_ROWS = 60

_COVARIANCE_SITE = {
    "full": "covariances",
    "tied": "covariance",
    "diag": "variances",
    "spherical": "variances",
}


def _indexed(name: str, value: Any) -> list[tuple[str, float]]:
    """``[("means[0, 1]", 2.5), ...]``: every entry of an array, labelled like ArviZ."""
    array = np.asarray(value, dtype=float)
    if array.ndim == 0:
        return [(name, float(array))]
    return [
        (f"{name}[{', '.join(map(str, index))}]", float(array[index]))
        for index in np.ndindex(array.shape)
    ]


def _mixture_point(model: Any) -> dict[str, np.ndarray]:
    """A fitted GaussianMixture's parameters under the program's site names."""
    return {
        "weights": np.asarray(model.weights_),
        "means": np.asarray(model.means_),
        _COVARIANCE_SITE[model.covariance_type]: np.asarray(model.covariances_),
    }


def _mixture_figure(model: Any, x: np.ndarray, title: str, columns: Sequence[str]):
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


def _mixture_section(run: "_Run", model: Any, x: np.ndarray, columns: Sequence[str], title: str):
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
        "parameters": _mixture_point(model),
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


def _posterior_section(
    run: "_Run", tree: Any, point: dict[str, Any], title: str, label: str
) -> dict[str, Any]:
    """:func:`_posterior_section_named` writing ``posterior.nc``."""
    return _posterior_section_named(run, tree, point, title, label, "posterior")


def _posterior_section_named(
    run: "_Run", tree: Any, point: dict[str, Any], title: str, label: str, file_name: str
) -> dict[str, Any]:
    """NetCDF files, the point estimate next to the posterior, and the diagnostics
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
    if len(rows) > _TABLE_ROWS:
        caption += f"; first {_TABLE_ROWS} of {len(rows)} rows, all in results.json"
    run.report.table(columns, rows[:_TABLE_ROWS], caption=caption, flagged=flags[:_TABLE_ROWS])
    summary = _diagnostics_table(run, diagnostics, title)
    for problem in diagnostics.problems:
        run.warn(f"{title}: {problem}")
    return {
        "files": files,
        "summary": [dict(zip(columns, row, strict=True)) for row in rows],
        "diagnostics": summary,
        "problems": list(diagnostics.problems),
    }


def _diagnostics_table(run: "_Run", diagnostics: Any, title: str) -> dict[str, Any]:
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


def _progress(iterable, description: str, enabled: bool):
    """``iterable`` wrapped in a tqdm progress bar on stderr when ``enabled``."""
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=description, leave=False, file=sys.stderr)


def _sweep_components(
    x: np.ndarray,
    components: Sequence[int],
    covariance_type: str,
    criterion: str,
    *,
    n_init: int,
    seed: int,
    progress_bar: bool,
) -> tuple[list[dict[str, Any]], Any]:
    """Fit every K by EM (:func:`gaussmix.select_components`, one K at a time for the
    progress bar); rows with BIC, AIC, log-likelihood, convergence; the best by
    ``criterion`` (the smallest K among ties)."""
    from gaussmix import select_components

    rows, fitted = [], []
    for k in _progress(components, "K sweep", progress_bar):
        table, estimator = select_components(
            x, [k], covariance_type, criterion, n_init=n_init, random_state=seed
        )
        rows.append(
            {
                "n_components": int(k),
                "bic": float(estimator.bic(x)),
                "aic": float(estimator.aic(x)),
                "log_likelihood": float(table.log_likelihood[0]),
                "converged": bool(table.converged[0]),
            }
        )
        fitted.append(estimator)
    best = min(range(len(rows)), key=lambda i: (rows[i][criterion], rows[i]["n_components"]))
    return rows, fitted[best]


def _selection_report(run: _Run, rows: list[dict[str, Any]], criterion: str, title: str, name: str):
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


def _sample_mixture(model: Any, x: np.ndarray, settings: dict[str, int], seed: int, progress_bar):
    """NUTS for a fitted GaussianMixture (``sample_posterior``): chains start at its EM
    answer and the draws follow its labelling."""
    return model.sample_posterior(x, random_state=seed, progress_bar=progress_bar, **settings)


def _select_components(
    run: _Run, x: np.ndarray, components: Sequence[int], args: argparse.Namespace, progress_bar
):
    """The best K's EM fit, and the posterior when LOO chose it (else None)."""
    if args.criterion == "loo":
        return _select_by_loo(run, x, components, args, progress_bar)
    with run.collect_warnings("model selection"):
        rows, model = _sweep_components(
            x,
            components,
            args.covariance,
            args.criterion,
            n_init=args.n_init,
            seed=args.seed,
            progress_bar=progress_bar,
        )
    run.results["selection"] = _selection_report(
        run, rows, args.criterion, "Model selection", "selection"
    )
    return model, None


def _select_by_loo(
    run: _Run, x: np.ndarray, components: Sequence[int], args: argparse.Namespace, progress_bar
):
    """Every K by EM then NUTS (:func:`gaussmix.select_components` with ``criterion="loo"``,
    one K at a time for the progress bar), compared by PSIS-LOO (:func:`gaussmix.compare`);
    the best's EM fit and posterior."""
    from gaussmix import compare, select_components

    settings = _nuts_settings(args)
    run.report.paragraph(
        f"Each K is fitted by EM, then sampled by NUTS ({_nuts_text(settings)}); the "
        "posteriors are compared by PSIS-LOO (higher ELPD is better; LOOIC = -2 ELPD)."
    )
    models, trees, looic = {}, {}, {}
    for k in _progress(components, "K sweep (NUTS)", progress_bar):
        with run.collect_warnings(f"K = {k}"):
            table, model = select_components(
                x,
                [k],
                args.covariance,
                "loo",
                mcmc_options={**settings, "progress_bar": progress_bar},
                n_init=args.n_init,
                random_state=args.seed,
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


def _nuts_settings(args: argparse.Namespace) -> dict[str, int]:
    return {
        "num_warmup": args.num_warmup,
        "num_samples": args.num_samples,
        "num_chains": args.num_chains,
    }


def _nuts_text(settings: dict[str, int]) -> str:
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


def _mixture_posterior(
    run: _Run, model: Any, tree: Any, x: np.ndarray, columns: Sequence[str], title: str
) -> dict[str, Any]:
    """Report a mixture posterior next to its EM fit; returns its results."""
    results = _posterior_section(run, tree, _mixture_point(model), title, "EM estimate")
    if x.shape[1] >= 2:
        run.figure(
            _posterior_mixture_figure(tree, x, columns, f"{title}: posterior draws"),
            f"posterior-{_slug(title)}",
            f"{title}: 2-sd ellipses of 50 posterior draws over the data",
        )
    return results


def _slug(text: str) -> str:
    return "-".join("".join(c if c.isalnum() else " " for c in text.lower()).split())


def _spectrum_stems(names: Sequence[str]) -> list[str]:
    """One distinct file-name stem per spectrum column: its slug, numbered by the column's
    position where that is empty or already taken (``a b`` and ``a-b`` both slug to
    ``a-b``; without this their figures and posteriors would overwrite each other).

    Example:
        >>> _spectrum_stems(["a b", "a-b", "%", "c"])
        ['a-b', 'a-b-2', 'column-3', 'c']
    """
    stems: list[str] = []
    for position, name in enumerate(names, 1):
        stem = _slug(name) or f"column-{position}"
        if stem in stems:
            stem = f"{stem}-{position}"
        while stem in stems:
            stem += "-"
        stems.append(stem)
    return stems


def _run_fit_mixture(run: _Run, table: Table, args: argparse.Namespace, progress_bar: bool):
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
    run.results["em"] = _mixture_section(run, model, x, table.columns, "EM")
    run.figure(
        _mixture_figure(model, x, f"EM, K = {model.n_components}", table.columns),
        "mixture",
        "EM: components (ellipses at 1, 2, 3 sd) and points (size: responsibility)",
    )
    save(model, run.folder / "model.npz")
    run.files.append("model.npz")
    if args.backend != "mcmc":
        return
    settings = _nuts_settings(args)
    report.heading("NUTS posterior")
    report.paragraph(
        f"NUTS: {_nuts_text(settings)}, started at the EM answer; draws relabeled to the EM "
        "labelling before any summary."
    )
    if tree is None:
        with run.collect_warnings("NUTS"):
            tree = _sample_mixture(model, x, settings, args.seed, progress_bar)
    run.results["posterior"] = _mixture_posterior(run, model, tree, x, table.columns, "NUTS")


# ---------------------------------------------------------------------------------------
# Peaks


def _baseline_option(text: str | None) -> str | int | None:
    """``--baseline``: a name, a polynomial degree, or none."""
    if text is None or text.lower() == "none":
        return None
    return int(text) if text.isdigit() else text.lower()


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


def _peak_point(fit: Any, index: int | None) -> dict[str, float]:
    """The MAP values of spectrum ``index`` (None: the only one)."""
    return {name: float(_pick(value, index)) for name, value in fit.params.items()}


def _peak_section(run: _Run, fit: Any, names: Sequence[str], title: str) -> dict[str, Any]:
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
    if len(rows) > _TABLE_ROWS:
        caption += f"; first {_TABLE_ROWS} of {len(rows)} rows, all in results.json"
    run.report.table(
        ["spectrum", "parameter", "value", "standard error", "rel. error %"],
        rows[:_TABLE_ROWS],
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


def _peak_figure(run: _Run, fit: Any, index: int | None, name: str, stem: str, title: str) -> None:
    axis = fit.plot(index or 0)
    axis.set_title(f"{title}: {name}")
    run.figure(axis.figure, f"peaks-{_slug(title)}-{stem}", f"{title}: {name}")


def _run_fit_peaks(run: _Run, table: Table, args: argparse.Namespace, progress_bar: bool):
    from gaussmix import fit_peaks, save

    x = table.values[:, 0]
    spectra = table.values[:, 1:].T
    names = table.columns[1:]
    stems = _spectrum_stems(names)
    batched = len(names) > 1
    baseline = _baseline_option(args.baseline)
    run.report.heading("MAP fit")
    run.report.paragraph(
        f"x: column {table.columns[0]}; "
        + (f"{len(names)} spectra fitted as one batch. " if batched else "")
        + "Damped Gauss-Newton / Levenberg-Marquardt on the peak program's log posterior, "
        "starting values found automatically."
    )
    with run.collect_warnings("MAP"):
        fit = fit_peaks(x, spectra if batched else spectra[0], peaks=args.peaks, baseline=baseline)
    run.results["map"] = _peak_section(run, fit, names, "MAP")
    for index, name in list(enumerate(names))[:_PEAK_FIGURES]:
        _peak_figure(run, fit, index if batched else None, name, stems[index], "MAP")
    if len(names) > _PEAK_FIGURES:
        run.report.note(f"Figures of the first {_PEAK_FIGURES} spectra; all are in results.json.")
    save(fit, run.folder / "model.npz")
    run.files.append("model.npz")
    if args.backend != "mcmc":
        return
    settings = _nuts_settings(args)
    run.report.heading("NUTS posterior")
    run.report.paragraph(
        f"NUTS on the same program, one spectrum at a time: {_nuts_text(settings)}, "
        "started at the MAP."
    )
    posteriors = {}
    for index, name in enumerate(_progress(names, "spectra (NUTS)", progress_bar)):
        point = _peak_point(fit, index if batched else None)
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
        section = _posterior_section_named(
            run, posterior, point, f"NUTS {name}", "MAP estimate", f"posterior-{stems[index]}"
        )
        posteriors[name] = section
        if index < _PEAK_FIGURES:
            _peak_figure(run, sampled, None, name, stems[index], "NUTS")
    run.results["posterior"] = posteriors


#: Largest number of spectra drawn in a report.
_PEAK_FIGURES = 6


# ---------------------------------------------------------------------------------------
# The demo

#: Size of the tour: the full one (make demo) and the quick one the tests run.
_DEMO_SIZES = {
    False: {"nuts": {"num_warmup": 300, "num_samples": 300, "num_chains": 2}, "sweep": (1, 5)},
    True: {"nuts": {"num_warmup": 40, "num_samples": 40, "num_chains": 2}, "sweep": (1, 3)},
}

#: EM restarts in the demo (the same everywhere, so that fits of one shape compile once).
_DEMO_RESTARTS = 2

#: The bundled datasets with the K the demo fits to each.
_DEMO_DATASETS = {"sm1": 2, "sm2": 4, "blobs": 4, "stretched": 4, "moons": 2}


class _Stages:
    """Times the demo's stages; a tqdm bar over them on a terminal."""

    def __init__(self, names: Sequence[str], enabled: bool) -> None:
        self.timings: dict[str, float] = {}
        self.bar = None
        if enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=len(names), desc="demo", leave=False, file=sys.stderr)

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        if self.bar is not None:
            self.bar.set_postfix_str(name)
        start = time.perf_counter()
        yield
        self.timings[name] = time.perf_counter() - start
        if self.bar is not None:
            self.bar.update()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def adjusted_rand_index(labels_true: np.ndarray, labels_predicted: np.ndarray) -> float:
    """Agreement of two partitions corrected for chance (1: identical, ~0: random).

    .. math:: \\mathrm{ARI} = \\frac{\\sum_{ij}\\binom{n_{ij}}{2} - E}{\\tfrac12(A + B) - E},
        \\quad A = \\sum_i \\binom{a_i}{2},\\ B = \\sum_j \\binom{b_j}{2},\\
        E = AB / \\binom{n}{2}.

    Example:
        >>> adjusted_rand_index(np.array([0, 0, 1, 1]), np.array([1, 1, 0, 0]))
        1.0
    """
    _, true_codes = np.unique(labels_true, return_inverse=True)
    _, predicted_codes = np.unique(labels_predicted, return_inverse=True)
    contingency = np.zeros((true_codes.max() + 1, predicted_codes.max() + 1))
    np.add.at(contingency, (true_codes, predicted_codes), 1.0)

    def pairs(counts):
        return float(np.sum(counts * (counts - 1) / 2))

    index = pairs(contingency)
    rows, columns = pairs(contingency.sum(axis=1)), pairs(contingency.sum(axis=0))
    expected = rows * columns / pairs(np.array([len(true_codes)]))
    maximum = (rows + columns) / 2
    if maximum == expected:
        return 1.0
    return (index - expected) / (maximum - expected)


def _optional_module(name: str):
    """An optional test/benchmark dependency, or None when it is not installed."""
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def _demo_datasets(run: _Run, quick: bool) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    import matplotlib.pyplot as plt

    from gaussmix import datasets

    names = ("sm1", "stretched") if quick else tuple(_DEMO_DATASETS)
    # 400 moons points: the same shape as sm1, so both EM fits compile once.
    options = {"moons": {"n": 400}}
    data = {name: getattr(datasets, name)(**options.get(name, {})) for name in names}
    run.report.heading("The bundled datasets")
    run.report.table(
        ["dataset", "points", "features", "generating components", "what it shows"],
        [
            [name, len(x), x.shape[1], int(labels.max()) + 1, _DATASET_NOTES[name]]
            for name, (x, labels) in data.items()
        ],
        caption="gaussmix.datasets (seeded; the labels are the generating components)",
    )
    figure, axes = plt.subplots(1, len(data), figsize=(3.2 * len(data), 3.2))
    for axis, (name, (x, labels)) in zip(np.atleast_1d(axes), data.items(), strict=True):
        axis.scatter(x[:, 0], x[:, 1], c=labels, s=4, cmap="tab10")
        axis.set_title(name)
        axis.set_aspect("equal", adjustable="datalim")
    figure.tight_layout()
    run.figure(figure, "datasets", "The datasets, coloured by generating component")
    return data


_DATASET_NOTES = {
    "sm1": "two clusters of very different size and spread",
    "sm2": "four overlapping clusters in a row",
    "blobs": "four well separated isotropic blobs",
    "stretched": "elongated, correlated clusters (k-means fails)",
    "moons": "two non-Gaussian half circles",
}


def _demo_em(run: _Run, data: dict, seed: int) -> dict[str, Any]:
    """EM on every dataset, against scikit-learn when it is installed."""
    import matplotlib.pyplot as plt

    from gaussmix import GaussianMixture, plots

    sklearn_mixture = _optional_module("sklearn.mixture")
    run.report.heading("EM: GaussianMixture on each dataset")
    run.report.paragraph(
        f"Full covariances, k-means initialization, {_DEMO_RESTARTS} restarts. Time "
        "includes JAX compilation the first time a shape is seen. ARI: adjusted Rand index against "
        "the generating components (1 is perfect)."
    )
    models, rows, results = {}, [], {}
    figure, axes = plt.subplots(1, len(data), figsize=(3.2 * len(data), 3.2))
    for axis, (name, (x, labels)) in zip(np.atleast_1d(axes), data.items(), strict=True):
        k = _DEMO_DATASETS[name]
        start = time.perf_counter()
        with run.collect_warnings(f"EM on {name}"):
            model = GaussianMixture(k, n_init=_DEMO_RESTARTS, random_state=seed).fit(x)
        seconds = time.perf_counter() - start
        models[name] = model
        score = float(model.score(x))
        ari = adjusted_rand_index(labels, model.predict(x))
        row = [name, k, model.converged_, model.n_iter_, score, float(model.bic(x)), ari, seconds]
        if sklearn_mixture is not None:
            reference = sklearn_mixture.GaussianMixture(
                k, n_init=_DEMO_RESTARTS, random_state=seed
            ).fit(x)
            row.append(float(reference.score(x)))
        rows.append(row)
        results[name] = {
            "n_components": k,
            "converged": model.converged_,
            "n_iter": model.n_iter_,
            "mean_log_likelihood": score,
            "bic": float(model.bic(x)),
            "adjusted_rand_index": ari,
            "seconds": seconds,
            "parameters": _mixture_point(model),
        }
        plots.plot_mixture(model, x, ax=axis)
        axis.set_title(f"{name}: K = {k}")
    figure.tight_layout()
    columns = ["dataset", "K", "converged", "iterations", "mean log-lik.", "BIC", "ARI", "seconds"]
    if sklearn_mixture is not None:
        columns.append("scikit-learn mean log-lik.")
    run.report.table(columns, rows, caption="EM fits", flagged=[not row[2] for row in rows])
    if sklearn_mixture is None:
        run.report.note("scikit-learn is not installed: the comparison column is left out.")
    run.figure(figure, "em", "EM fits: ellipses at 1, 2, 3 sd; point size: responsibility")
    results["models"] = models
    return results


def _demo_kmeans(run: _Run, data: dict, models: dict, seed: int) -> dict[str, Any]:
    """k-means against the full-covariance mixture on the stretched clusters."""
    import matplotlib.pyplot as plt

    from gaussmix import KMeans, plots

    x, labels = data["stretched"]
    kmeans = KMeans(4, random_state=seed).fit(x)
    mixture = models["stretched"]
    kmeans_ari = adjusted_rand_index(labels, kmeans.labels_)
    mixture_ari = adjusted_rand_index(labels, mixture.predict(x))
    run.report.heading("k-means versus the mixture on stretched clusters")
    run.report.table(
        ["method", "ARI"],
        [["k-means (K = 4)", kmeans_ari], ["Gaussian mixture, full covariances", mixture_ari]],
        caption="Recovery of the generating clusters",
    )
    figure, axes = plt.subplots(1, 2, figsize=(8.0, 3.8))
    plots.plot_kmeans(kmeans, x, ax=axes[0])
    axes[0].set_title(f"k-means (ARI {kmeans_ari:.2f})")
    plots.plot_mixture(mixture, x, ax=axes[1])
    axes[1].set_title(f"mixture (ARI {mixture_ari:.2f})")
    figure.tight_layout()
    run.figure(figure, "kmeans", "k-means assumes round clusters; the mixture does not")
    return {"kmeans_ari": kmeans_ari, "mixture_ari": mixture_ari}


def _demo_selection(run: _Run, data: dict, sweep: tuple[int, int], seed: int) -> dict:
    """BIC and AIC against K on a dataset with known K."""
    name = "blobs" if "blobs" in data else "stretched"
    x, labels = data[name]
    run.report.heading(f"Model selection on {name}")
    with run.collect_warnings("model selection"):
        rows, _ = _sweep_components(
            x,
            range(sweep[0], sweep[1] + 1),
            "full",
            "bic",
            n_init=_DEMO_RESTARTS,
            seed=seed,
            progress_bar=False,
        )
    result = _selection_report(run, rows, "bic", f"K for {name}", "selection")
    truth = int(labels.max()) + 1
    text = f"BIC picks K = {result['best']}; the data were generated with {truth} components."
    (run.report.note if result["best"] == truth or truth > sweep[1] else run.warn)(text)
    result["dataset"] = name
    return result


def _demo_nuts(run: _Run, data: dict, models: dict, settings: dict, seed: int) -> dict:
    """NUTS on sm1 from the EM answer, the posterior next to the point estimate."""
    x, _ = data["sm1"]
    model = models["sm1"]
    run.report.heading("NUTS on sm1: the posterior next to the EM estimate")
    run.report.paragraph(
        f"NUTS on the same NumPyro program, {_nuts_text(settings)} on {len(x)} points, "
        "started at the EM answer. The demo keeps NUTS small to finish quickly: use "
        "gaussmix fit-mixture --backend mcmc (default 4 chains x 1000 + 1000) for real "
        "work. Draws are relabeled to the EM labelling before any summary."
    )
    with run.collect_warnings("NUTS on sm1"):
        tree = _sample_mixture(model, x, settings, seed, progress_bar=False)
    results = _mixture_posterior(run, model, tree, x, ["x0", "x1"], "NUTS on sm1")
    run.report.note(
        "EM here is maximum likelihood; the posterior also carries the program's default "
        "prior, weakly informative and scaled from the data (inverse Wishart with the data "
        "covariance as scale, means ~ N(data mean, covariance / 1)). For the small cluster "
        "far from the data mean, that prior on its mean widens its covariance: the "
        "difference between the two columns is the prior's doing, not a sampling error."
    )
    attributes = tree["sample_stats"].attrs
    results["compile_seconds"] = float(attributes.get("compile_time", math.nan))
    results["sampling_seconds"] = float(attributes.get("sampling_time", math.nan))
    run.report.paragraph(
        f"Compilation took {results['compile_seconds']:.1f} s, sampling "
        f"{results['sampling_seconds']:.1f} s."
    )
    return results


#: The reference material's two-Gaussian example and its starting values (curve_fit's p0).
_TWO_GAUSSIANS = {
    "x": np.arange(10.0),
    "y": np.array([0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 4.0, 3.0, 2.0, 1.0]),
    "start": {
        "peak0_height": 3.0,
        "peak0_center": 3.0,
        "peak0_sigma": 1.0,
        "peak1_height": 4.0,
        "peak1_center": 6.0,
        "peak1_sigma": 1.0,
    },
}

#: The demo's synthetic spectra: (height, center, sigma) of three Gaussian peaks on the
#: linear baseline c0 + c1 x, x in [0, 100], Normal noise.
_SPECTRUM_PEAKS = ((10.0, 25.0, 3.0), (6.0, 50.0, 5.0), (8.0, 70.0, 2.0))
_SPECTRUM_BASELINE = (1.0, 0.02)
_SPECTRUM_NOISE = 0.5


def _gaussian_peaks_function(n_peaks: int, baseline_degree: int | None):
    """curve_fit's model: Gaussian peaks (height, center, sigma each), then the
    polynomial baseline coefficients c0, c1, ..."""

    def curve(x, *theta):
        total = np.zeros_like(x, dtype=float)
        for index in range(n_peaks):
            height, center, sigma = theta[3 * index : 3 * index + 3]
            total = total + height * np.exp(-0.5 * ((x - center) / sigma) ** 2)
        if baseline_degree is not None:
            coefficients = theta[3 * n_peaks :]
            total = total + sum(c * x**k for k, c in enumerate(coefficients))
        return total

    return curve


def _curve_fit(x, y, start: dict[str, float], n_peaks: int, baseline_degree: int | None):
    """scipy's curve_fit from ``start``: (values, standard errors, RSS) by gaussmix name."""
    from scipy.optimize import curve_fit

    names = [f"peak{i}_{p}" for i in range(n_peaks) for p in ("height", "center", "sigma")]
    if baseline_degree is not None:
        names += [f"baseline_c{k}" for k in range(baseline_degree + 1)]
    function = _gaussian_peaks_function(n_peaks, baseline_degree)
    values, covariance = curve_fit(function, x, y, p0=[start[name] for name in names])
    rss = float(np.sum((y - function(x, *values)) ** 2))
    errors = np.sqrt(np.diag(covariance))
    return dict(zip(names, values, strict=True)), dict(zip(names, errors, strict=True)), rss


def _moved_off(truth: dict[str, float]) -> dict[str, float]:
    """Starting values near the truth: + 10 %, centres + half the peak's width."""
    start = {name: 1.1 * value for name, value in truth.items()}
    for name, value in truth.items():
        if name.endswith("_center"):
            start[name] = value + 0.5 * truth[name.replace("_center", "_sigma")]
    return start


def _synthetic_spectra(n_spectra: int, n_points: int, seed: int):
    x = np.linspace(0.0, 100.0, n_points)
    truth = _gaussian_peaks_function(len(_SPECTRUM_PEAKS), 1)(
        x, *np.ravel(_SPECTRUM_PEAKS), *_SPECTRUM_BASELINE
    )
    rng = np.random.default_rng(seed)
    return x, truth + _SPECTRUM_NOISE * rng.standard_normal((n_spectra, n_points))


def _demo_two_gaussians(run: _Run, scipy_optimize: Any) -> dict[str, Any]:
    from gaussmix import fit_peaks

    example = _TWO_GAUSSIANS
    run.report.heading("Peaks: the two-Gaussian example next to curve_fit", level=3)
    run.report.paragraph(
        "x = 0 ... 9, y = 0 1 2 3 4 5 4 3 2 1, starting values heights 3 and 4, centres 3 "
        "and 6, widths 1 and 1 (curve_fit's p0). gaussmix: Levenberg-Marquardt on the peak "
        "program's log posterior, standard errors from the Laplace approximation."
    )
    with run.collect_warnings("two Gaussians"):
        fit = fit_peaks(example["x"], example["y"], ("gaussian", "gaussian"), init=example["start"])
    names = list(example["start"])
    columns = ["parameter", "gaussmix", "gaussmix stderr"]
    rows = [[name, float(fit.params[name]), float(fit.stderr[name])] for name in names]
    rows.append(["RSS", float(fit.rss), None])
    results = {"gaussmix": {"params": fit.params, "stderr": fit.stderr, "rss": fit.rss}}
    if scipy_optimize is not None:
        values, errors, rss = _curve_fit(example["x"], example["y"], example["start"], 2, None)
        columns += ["curve_fit", "curve_fit stderr", "relative difference"]
        for row in rows[:-1]:
            row += [
                values[row[0]],
                errors[row[0]],
                abs(row[1] - values[row[0]]) / abs(values[row[0]]),
            ]
        rows[-1] += [rss, None, abs(float(fit.rss) - rss) / rss]
        results["curve_fit"] = {"params": values, "stderr": errors, "rss": rss}
    run.report.table(columns, rows, caption="Two Gaussians: gaussmix MAP and curve_fit")
    axis = fit.plot()
    axis.set_title("two Gaussians (MAP)")
    run.figure(axis.figure, "peaks-two-gaussians", "The two-Gaussian example: data, fit, peaks")
    return results


def _demo_spectra(run: _Run, scipy_optimize: Any, n_spectra: int, n_points: int, seed: int):
    """A batch of synthetic spectra in one MAP call, against curve_fit spectrum by spectrum."""
    from gaussmix import fit_peaks

    x, spectra = _synthetic_spectra(n_spectra, n_points, seed)
    run.report.heading(f"Peaks: {n_spectra} spectra fitted as one batch", level=3)
    run.report.paragraph(
        f"Three Gaussian peaks (heights, centres, widths {_SPECTRUM_PEAKS}) on the baseline "
        f"{_SPECTRUM_BASELINE[0]} + {_SPECTRUM_BASELINE[1]} x, noise sd {_SPECTRUM_NOISE}, "
        f"{n_points} points each. gaussmix finds its starting values itself and fits the "
        "batch in one compiled call; curve_fit runs in a loop from the true values moved "
        "off (heights, widths and baseline + 10 %, centres + half a width)."
    )
    start = time.perf_counter()
    with run.collect_warnings("spectra"):
        fit = fit_peaks(x, spectra, ("gaussian",) * 3, baseline="linear")
    seconds = time.perf_counter() - start
    truth = {
        f"peak{i}_{name}": value
        for i, peak in enumerate(_SPECTRUM_PEAKS)
        for name, value in zip(("height", "center", "sigma"), peak, strict=True)
    }
    truth.update(baseline_c0=_SPECTRUM_BASELINE[0], baseline_c1=_SPECTRUM_BASELINE[1])
    columns = ["spectrum", "converged", "iterations", "RSS", "peak1_center", "peak1_center stderr"]
    rows = [
        [
            index,
            bool(fit.converged[index]),
            int(fit.n_iter[index]),
            float(fit.rss[index]),
            float(fit.params["peak1_center"][index]),
            float(fit.stderr["peak1_center"][index]),
        ]
        for index in range(n_spectra)
    ]
    results: dict[str, Any] = {"gaussmix_seconds": seconds, "rss": fit.rss, "truth": truth}
    if scipy_optimize is not None:
        columns += ["curve_fit RSS", "relative RSS difference"]
        start = time.perf_counter()
        curve_fit_rss = [
            _curve_fit(x, spectra[i], _moved_off(truth), 3, 1)[2] for i in range(n_spectra)
        ]
        results["curve_fit_seconds"] = time.perf_counter() - start
        results["curve_fit_rss"] = curve_fit_rss
        for row, rss in zip(rows, curve_fit_rss, strict=True):
            row += [rss, abs(row[3] - rss) / rss]
    run.report.table(
        columns,
        rows,
        caption=f"Batched MAP fit ({seconds:.2f} s with compilation"
        + (
            f"; curve_fit loop {results['curve_fit_seconds']:.2f} s)"
            if scipy_optimize is not None
            else ")"
        )
        + f"; true peak1_center {_SPECTRUM_PEAKS[1][1]}",
        flagged=[not row[1] for row in rows],
    )
    axis = fit.plot(0)
    axis.set_title("spectrum 0 (MAP)")
    run.figure(axis.figure, "peaks-spectrum", "Spectrum 0 of the batch: data, fit, components")
    return fit, x, spectra, results


def _demo_peaks(run: _Run, settings: dict[str, int], seed: int, quick: bool) -> dict[str, Any]:
    from gaussmix import fit_peaks, save

    scipy_optimize = _optional_module("scipy.optimize")
    run.report.heading("Peak fitting")
    if scipy_optimize is None:
        run.report.note(
            "scipy is not installed, so the curve_fit columns are left out "
            "(pip install scipy to compare)."
        )
    two_gaussians = _demo_two_gaussians(run, scipy_optimize)
    n_spectra, n_points = (2, 200) if quick else (3, 400)
    fit, x, spectra, batch = _demo_spectra(run, scipy_optimize, n_spectra, n_points, seed)
    save(fit, run.folder / "model-peaks.npz")
    run.files.append("model-peaks.npz")
    run.report.heading("Peaks: NUTS on spectrum 0", level=3)
    run.report.paragraph(
        f"NUTS on the same peak program, {_nuts_text(settings)}, started at the MAP (kept "
        "small in the demo). Curves: posterior medians with 90 % bands."
    )
    point = _peak_point(fit, 0)
    with run.collect_warnings("NUTS on spectrum 0"):
        sampled = fit_peaks(
            x, spectra[0], ("gaussian",) * 3, baseline="linear", init=point, backend="mcmc",
            seed=seed, progress_bar=False, **settings,
        )  # fmt: skip
    posterior = _posterior_section_named(
        run, sampled.posterior, point, "NUTS on spectrum 0", "MAP estimate", "posterior-peaks"
    )
    attributes = sampled.posterior["sample_stats"].attrs
    posterior["compile_seconds"] = float(attributes.get("compile_time", math.nan))
    posterior["sampling_seconds"] = float(attributes.get("sampling_time", math.nan))
    axis = sampled.plot()
    axis.set_title("spectrum 0 (NUTS)")
    run.figure(axis.figure, "peaks-nuts", "Spectrum 0 by NUTS: posterior medians, 90 % bands")
    return {"two_gaussians": two_gaussians, "batch": batch, "nuts": posterior}


def _run_demo(run: _Run, args: argparse.Namespace, progress_bar: bool) -> None:
    from gaussmix import save

    sizes = _DEMO_SIZES[bool(args.quick)]
    names = ["datasets", "em", "kmeans", "selection", "nuts", "peaks"]
    stages = _Stages(names, progress_bar)
    run.report.paragraph(
        "The tour: EM and NUTS for Gaussian mixtures on the bundled datasets, k-means "
        "against the mixture, choosing K, a peak fit next to scipy's curve_fit, all from "
        "one NumPyro program per model."
        + (" Quick mode: smaller data and NUTS runs." if args.quick else "")
    )
    try:
        with stages.stage("datasets"):
            data = _demo_datasets(run, args.quick)
        with stages.stage("em"):
            em = _demo_em(run, data, args.seed)
            models = em.pop("models")
            save(models["sm1"], run.folder / "model-sm1.npz")
            run.files.append("model-sm1.npz")
        with stages.stage("kmeans"):
            kmeans = _demo_kmeans(run, data, models, args.seed)
        with stages.stage("selection"):
            selection = _demo_selection(run, data, sizes["sweep"], args.seed)
        with stages.stage("nuts"):
            nuts = _demo_nuts(run, data, models, sizes["nuts"], args.seed)
        with stages.stage("peaks"):
            peaks = _demo_peaks(run, sizes["nuts"], args.seed, args.quick)
    finally:
        stages.close()
    run.report.heading("Timings")
    run.report.paragraph("Wall-clock seconds of each stage, JAX compilation included.")
    run.report.table(
        ["stage", "seconds"], [[name, seconds] for name, seconds in stages.timings.items()]
    )
    run.results.update(
        em=em,
        kmeans=kmeans,
        selection=selection,
        nuts=nuts,
        peaks=peaks,
        timings=stages.timings,
        settings=sizes,
    )


# ---------------------------------------------------------------------------------------
# Commands


def _fit_mixture_command(args: argparse.Namespace) -> int:
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
    _configure_numerics()
    with _output(args, _mixture_files(args, n_features)) as folder:
        run = _Run(
            folder,
            f"gaussmix fit-mixture {table.path.name}",
            args.quiet,
            subtitle=_data_line(table),
        )
        run.results["data"] = _data_summary(table)
        _run_fit_mixture(run, table, args, progress_bar=_show_progress(args))
        run.finish("fit-mixture", _arguments(args))
    _say(args, f"wrote {Path(args.out) / 'report.html'}")
    return 0


def _fit_peaks_command(args: argparse.Namespace) -> int:
    names = [args.x, *args.y]
    if len(set(names)) != len(names):
        raise UsageError("--x and --y must name different columns, each once")
    baseline = _baseline_option(args.baseline)
    if isinstance(baseline, int) and baseline > _MAX_BASELINE_DEGREE:
        raise UsageError(
            f"--baseline {args.baseline[:20]}: polynomial degrees above "
            f"{_MAX_BASELINE_DEGREE} are numerically meaningless; give a lower degree"
        )
    table = drop_missing(read_table(args.data, names, "--x/--y"), args.drop_nan)
    if len(np.unique(table.values[:, 0])) < 2:
        raise UsageError(f"column {table.columns[0]!r} holds one x value; a fit needs a range")
    _check_peaks_memory(args, table)
    _configure_numerics()
    with _output(args, _peak_files(args, table.columns[1:])) as folder:
        run = _Run(folder, f"gaussmix fit-peaks {table.path.name}", args.quiet, _data_line(table))
        run.results["data"] = _data_summary(table)
        _run_fit_peaks(run, table, args, progress_bar=_show_progress(args))
        run.finish("fit-peaks", _arguments(args))
    _say(args, f"wrote {Path(args.out) / 'report.html'}")
    return 0


def _demo_command(args: argparse.Namespace) -> int:
    _configure_numerics()
    start = time.perf_counter()
    with _output(args, _DEMO_FILES) as folder:
        run = _Run(folder, "gaussmix demo", args.quiet)
        _run_demo(run, args, progress_bar=_show_progress(args))
        run.results["elapsed_seconds"] = time.perf_counter() - start
        run.finish("demo", _arguments(args))
    _say(args, f"wrote {Path(args.out) / 'report.html'} in {time.perf_counter() - start:.0f} s")
    return 0


def _output(args: argparse.Namespace, planned: Sequence[str]):
    """:func:`atomic_output` for ``--out``, recording the command line in the manifest."""
    command = getattr(args, "command_line", ["gaussmix", args.command])
    return atomic_output(args.out, command=command, planned=planned)


#: What every command writes.
_ALWAYS_WRITTEN = ("results.json", "report.html")

#: What ``gaussmix demo`` writes (with or without --quick).
_DEMO_FILES = (
    *_ALWAYS_WRITTEN,
    *("datasets.png", "em.png", "model-sm1.npz", "kmeans.png", "selection.png"),
    *("posterior.nc", "posterior-nuts-on-sm1.png"),
    *("peaks-two-gaussians.png", "peaks-spectrum.png", "model-peaks.npz"),
    *("posterior-peaks.nc", "peaks-nuts.png"),
)


def _mixture_files(args: argparse.Namespace, n_features: int) -> list[str]:
    """The files ``fit-mixture`` will write (checked against --out before the fit)."""
    files = [*_ALWAYS_WRITTEN, "model.npz", "mixture.png"]
    if len(args.components) > 1 and args.criterion != "loo":
        files.append("selection.png")
    if args.backend == "mcmc":
        files.append("posterior.nc")
        if n_features >= 2:
            files.append("posterior-nuts.png")
    return files


def _peak_files(args: argparse.Namespace, names: Sequence[str]) -> list[str]:
    """The files ``fit-peaks`` will write (checked against --out before the fit)."""
    stems = _spectrum_stems(names)
    files = [*_ALWAYS_WRITTEN, "model.npz"]
    files += [f"peaks-map-{stem}.png" for stem in stems[:_PEAK_FIGURES]]
    if args.backend == "mcmc":
        files += [f"posterior-{stem}.nc" for stem in stems]
        files += [f"peaks-nuts-{stem}.png" for stem in stems[:_PEAK_FIGURES]]
    return files


# ---------------------------------------------------------------------------------------
# What the options cost, checked before anything is allocated

#: Copies of the largest arrays a fit holds at once (inputs, outputs, temporaries).
_MEMORY_FACTOR = 4


def _available_memory() -> int | None:
    """Bytes of memory available now (MemAvailable on Linux), or None when unknown."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        with open("/proc/meminfo", encoding="ascii") as file:
            for line in file:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    with contextlib.suppress(OSError, ValueError, AttributeError):
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return None


def _check_memory(needed: float, what: str, fix: str) -> None:
    """Stop when ``needed`` bytes exceed the memory available."""
    available = _available_memory()
    if available is not None and needed > available:
        raise UsageError(
            f"{what} need about {needed / 2**30:.1f} GiB of memory, more than the "
            f"{available / 2**30:.1f} GiB available; {fix}"
        )


def _check_sampling(args: argparse.Namespace) -> None:
    """NUTS settings the diagnostics can use."""
    if args.num_samples < _MIN_DRAWS_PER_CHAIN:
        raise UsageError(
            f"--num-samples {args.num_samples} is too few: ArviZ's R-hat and ESS need at "
            f"least {_MIN_DRAWS_PER_CHAIN} draws per chain; use --num-samples "
            f"{_MIN_DRAWS_PER_CHAIN} or more (default 1000)"
        )
    if args.num_samples * args.num_chains < _MIN_DRAWS:
        raise UsageError(
            f"--num-samples {args.num_samples} x --num-chains {args.num_chains} = "
            f"{args.num_samples * args.num_chains} draws are too few: PSIS-LOO needs at "
            f"least {_MIN_DRAWS}; raise --num-samples or --num-chains"
        )


def _draws_bytes(args: argparse.Namespace, n_values: int) -> float:
    """Bytes of ``n_values`` float64 values per draw, for every stored draw."""
    return 8.0 * args.num_samples * args.num_chains * n_values * _MEMORY_FACTOR


def _check_mixture_memory(args: argparse.Namespace, n_rows: int, n_features: int) -> None:
    """EM restarts and the (N, K) responsibilities; NUTS draws of every parameter and of
    the pointwise log-likelihood (one posterior per K when LOO compares them)."""
    largest = max(args.components)
    parameters = largest * (1 + n_features + n_features * n_features)
    em = 8.0 * _MEMORY_FACTOR * (args.n_init * parameters + n_rows * largest)
    _check_memory(
        em,
        f"EM with --components {largest} and --n-init {args.n_init} on {n_rows} rows",
        "use fewer components or restarts",
    )
    sampled = args.backend == "mcmc" or (args.criterion == "loo" and len(args.components) > 1)
    if not sampled:
        return
    _check_sampling(args)
    counts = args.components if args.criterion == "loo" else (largest,)
    values = sum(k * (1 + n_features + n_features * n_features) + n_rows for k in counts)
    _check_memory(
        _draws_bytes(args, values),
        f"{args.num_chains} chains x {args.num_samples} draws of {len(counts)} posterior(s) "
        f"with {n_rows} pointwise log-likelihoods",
        "use fewer --num-samples or --num-chains",
    )


def _check_peaks_memory(args: argparse.Namespace, table: Table) -> None:
    """The batched MAP fit's Jacobian (spectra x points x parameters); NUTS draws of the
    parameters, derived quantities and pointwise log-likelihood of one spectrum."""
    n_points, n_spectra = table.values.shape[0], table.values.shape[1] - 1
    parameters = 7 * len(args.peaks) + _MAX_BASELINE_DEGREE + 3
    _check_memory(
        8.0 * _MEMORY_FACTOR * n_spectra * n_points * parameters,
        f"{n_spectra} spectra of {n_points} points with {len(args.peaks)} peaks",
        "fit fewer spectra at a time",
    )
    if args.backend == "mcmc":
        _check_sampling(args)
        _check_memory(
            _draws_bytes(args, parameters + n_points),
            f"{args.num_chains} chains x {args.num_samples} draws of {n_points} points",
            "use fewer --num-samples or --num-chains",
        )


def _data_line(table: Table) -> str:
    text = f"Data: {table.path.name}, {len(table.values)} rows, columns {', '.join(table.columns)}."
    if table.dropped:
        text += f" {len(table.dropped)} rows with missing values omitted (--drop-nan)."
    return text


def _data_summary(table: Table) -> dict[str, Any]:
    return {
        "path": str(table.path),
        "n_rows": int(table.values.shape[0]),
        "columns": table.columns,
        "dropped_rows": table.dropped,
    }


def _configure_numerics() -> None:
    """float64 in JAX (the command's choice; the library never flips it) and Agg."""
    import jax
    import matplotlib

    jax.config.update("jax_enable_x64", True)
    matplotlib.use("Agg")


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


#: What to do about an operating-system error, by errno.
_OS_ERROR_FIXES = {
    errno.ENOSPC: "free some disk space or choose another --out",
    errno.EDQUOT: "free some of your disk quota or choose another --out",
    errno.EROFS: "the file system is read-only; choose another --out",
    errno.EACCES: "check the permissions or choose another path",
    errno.EPERM: "check the permissions or choose another path",
}


def _os_error_line(error: OSError) -> str:
    """'Permission denied: /x/y; check the permissions or choose another path'."""
    reason = error.strerror or _one_line(error)
    where = f": {error.filename}" if error.filename is not None else ""
    fix = _OS_ERROR_FIXES.get(error.errno, "check the path and try again")
    return f"{reason}{where}; {fix}"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; returns the exit code.

    0 on success; 2 for bad input or an operating-system error (one line on stderr);
    130 after SIGINT and 143 after SIGTERM (one line on stderr; nothing half-written
    is left). SIGINT and SIGTERM handlers are installed for the run only and the previous
    ones put back.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser().parse_args(argv)
    except UsageError as error:
        print(f"gaussmix: error: {_one_line(error)}", file=sys.stderr)
        return EXIT_USAGE
    except SystemExit as exit_:  # --help
        return int(exit_.code or 0)
    args.command_line = ["gaussmix", *argv]
    try:
        with _INTERRUPTS.installed():
            return args.run(args)
    except KeyboardInterrupt as interrupt:
        number = getattr(interrupt, "signal_number", signal.SIGINT)
        out = getattr(args, "out", None)
        if getattr(interrupt, "written", None) is not None:
            what = f"interrupted after {out} was written"
        else:
            what = "interrupted; nothing was written" + (f" to {out}" if out else "")
        print(f"gaussmix {args.command}: {what}", file=sys.stderr)
        return EXIT_INTERRUPTED[number]
    except (UsageError, ValueError, OSError) as error:
        if os.environ.get("GAUSSMIX_DEBUG"):
            raise
        line = _os_error_line(error) if isinstance(error, OSError) else _one_line(error)
        print(f"gaussmix {args.command}: error: {line}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
