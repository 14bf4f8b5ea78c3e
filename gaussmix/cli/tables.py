"""Reading DATA: numeric columns of a CSV file with a header row, or of a ``.npy`` array."""

import contextlib
import csv
import math
import os
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gaussmix.cli.errors import UsageError

_MISSING = frozenset({"", "nan", "na", "n/a", "null", "none", "-"})


_LISTED = 8


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
