"""Reading DATA: numeric columns of a CSV file with a header row, or of a ``.npy`` array."""

import contextlib
import csv
import io
import itertools
import math
import operator
import os
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gaussmix.cli.errors import UsageError

#: Cells read as missing (after stripping whitespace, in any letter case).
_MISSING = frozenset({"", "nan", "na", "n/a", "null", "none", "-"})
#: Most row numbers listed in a message.
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


def _read_text(path: Path) -> str:
    """The file's text (UTF-8, a leading byte-order mark dropped)."""
    with _open_data(path) as file:
        try:
            data = file.read()
        except OSError as error:
            raise UsageError(
                f"cannot read {path}: {error.strerror}; give a file you may read"
            ) from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise UsageError(
            f"cannot read {path}: it is not UTF-8 text; give a CSV file with a header row "
            "or a .npy array"
        ) from None


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


@dataclass
class _Lines:
    """A CSV file's non-blank lines: the header's names, the data lines and their numbers
    in the file (1-based, blank lines counted).

    Attributes:
        source: the data lines as the file holds them, when pandas splits them into the
            same lines as ``str.splitlines`` (no blank line; ASCII without the control
            characters ``splitlines`` or ``str.split`` take as breaks); else None.
        quoted: whether the file holds a quote character.
    """

    path: Path
    header: list[str]
    rows: list[str]
    numbers: np.ndarray
    delimiter: str | None
    source: str | None
    quoted: bool

    def cells(self, line: str, number: int) -> list[str]:
        """The fields of one line: split on the delimiter with Python's ``csv`` (quotes
        read), or on whitespace when the header holds no comma, semicolon or tab."""
        if self.delimiter is None:
            return line.split()
        try:
            return next(csv.reader([line], delimiter=self.delimiter))
        except csv.Error as error:
            raise UsageError(f"cannot read {self.path} as CSV: line {number}: {error}") from None


#: Characters ``str.splitlines`` or ``str.split`` take as line breaks or spaces and
#: pandas does not (besides non-ASCII ones).
_CONTROL_BREAKS = "\x0b\x0c\x1c\x1d\x1e\x1f"


def _read_lines(path: Path) -> _Lines:
    """The header and data lines, after checking the header names distinct columns and
    every data line has as many fields."""
    text = _read_text(path)
    lines = text.splitlines()
    blank = "" in lines or any(map(str.isspace, lines))
    if blank:
        numbers = np.array([n for n, line in enumerate(lines, 1) if line and not line.isspace()])
        rows = [lines[n - 1] for n in numbers[1:]]
    else:
        numbers, rows = np.arange(1, len(lines) + 1), lines[1:]
    if not numbers.size:
        raise UsageError(f"cannot read {path}: the file is empty")
    header_line = lines[numbers[0] - 1]
    source = None
    if not blank and text.isascii() and not any(c in text for c in _CONTROL_BREAKS):
        end = len(header_line)
        source = text[end + 2 if text.startswith("\r\n", end) else end + 1 :]
    table = _Lines(path, [], rows, numbers[1:], _delimiter(header_line), source, '"' in text)
    table.header = [name.strip() for name in table.cells(header_line, int(numbers[0]))]
    numeric_header = True
    for name in table.header:
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
    if len(set(table.header)) != len(table.header) or not all(table.header):
        raise UsageError(
            f"cannot read {path} as CSV: the header row needs distinct, non-empty column names"
        )
    if not rows:
        raise UsageError(f"cannot read {path}: it has a header row but no data rows")
    _check_fields(table)
    return table


def _check_fields(table: _Lines) -> None:
    """Stop at the first data line whose number of fields is not the header's.

    Fields are counted without splitting where that gives the same count: whitespace-
    separated fields by ``str.split``, delimited ones as delimiters + 1 when no line
    holds a quote or a field longer than ``csv``'s limit; else line by line with ``csv``.
    """
    rows, delimiter, width = table.rows, table.delimiter, len(table.header)
    if delimiter is not None and (table.quoted or max(map(len, rows)) > csv.field_size_limit()):
        for row, number in zip(rows, table.numbers, strict=True):
            count = len(table.cells(row, int(number)))
            if count != width:
                break
        else:
            return
    else:
        if delimiter is None:
            counts = map(len, map(str.split, rows))
        else:
            counts = map(operator.methodcaller("count", delimiter), rows)
        counts = np.fromiter(counts, dtype=np.int64, count=len(rows)) + (delimiter is not None)
        wrong = np.flatnonzero(counts != width)
        if not wrong.size:
            return
        count, number = counts[wrong[0]], table.numbers[wrong[0]]
    raise UsageError(
        f"cannot read {table.path} as CSV: line {number} has {count} fields but the "
        f"header has {width}"
    )


#: The missing-value spellings as pandas' exact-match ``na_values``: every letter case.
_MISSING_SPELLINGS = sorted(
    "".join(letters)
    for word in _MISSING
    for letters in itertools.product(*({c.lower(), c.upper()} for c in word))
)


def _parse_with_pandas(table: _Lines, indices: Sequence[int]) -> np.ndarray | None:
    """The columns ``indices`` parsed by ``pandas.read_csv`` (C parser, correctly rounded
    like ``float``), or None where pandas refuses a cell or splits the lines differently
    from :meth:`_Lines.cells`: the caller then parses line by line."""
    import pandas

    text = table.source
    if text is None:
        text = "\n".join(table.rows)
        if table.delimiter is None and not (text.isascii() and "\x1f" not in text):
            # str.split also splits on Unicode whitespace; pandas on spaces and tabs only.
            text = "\n".join(" ".join(row.split()) for row in table.rows)
    try:
        frame = pandas.read_csv(
            io.BytesIO(text.encode()),
            sep=r"\s+" if table.delimiter is None else table.delimiter,
            quoting=csv.QUOTE_NONE if table.delimiter is None else csv.QUOTE_MINIMAL,
            header=None,
            names=list(range(len(table.header))),
            usecols=sorted(set(indices)),
            index_col=False,
            dtype=np.float64,
            keep_default_na=False,
            na_values=_MISSING_SPELLINGS,
            skip_blank_lines=False,
            engine="c",
        )
    except (ValueError, OverflowError):  # a cell float() may read ("1_000", " NA ") or not
        return None
    if len(frame) != len(table.rows):  # a quoted field ran over a line end
        return None
    return frame[list(indices)].to_numpy(dtype=np.float64)


def _parse_line_by_line(table: _Lines, indices: Sequence[int], hint: str) -> np.ndarray:
    """The columns ``indices``, each cell read by :func:`_parse_float`; stops at the first
    cell that is not a number, naming its column and line."""
    cells = [
        [row[i] for i in indices]
        for row in (
            table.cells(line, int(number))
            for line, number in zip(table.rows, table.numbers, strict=True)
        )
    ]
    values = np.empty((len(cells), len(indices)), dtype=np.float64)
    for column, index in enumerate(indices):
        name = table.header[index]
        for row, line in enumerate(cells):
            cell = line[column]
            try:
                values[row, column] = _parse_float(cell)
            except ValueError:
                raise UsageError(
                    f"column {name!r} of {table.path.name} is not numeric "
                    f"(line {table.numbers[row]}: {cell.strip()[:30]!r}); {hint}"
                ) from None
    return values


def read_table(
    path: str | os.PathLike, columns: Sequence[str] | None = None, option: str = "--columns"
) -> Table:
    """Read numeric columns of a CSV file (with a header row) or a ``.npy`` array.

    Only the selected columns must be numeric. Missing values (empty cells, ``nan``,
    ``NA``, ``null``, ``none``, ``-``, in any letter case) become NaN; :func:`drop_missing`
    reports or omits those rows. Blank lines are skipped; line numbers count them.

    ``pandas.read_csv`` parses the cells. Where it refuses one, the lines are read again
    one by one with Python's ``csv`` and ``float``: that names the first cell that is not
    a number with its line, and reads what ``float`` reads and pandas does not (``1_000``,
    a missing-value word between spaces), so the result never depends on the parser.

    Args:
        path: the file.
        columns: names or indices of the columns to keep (None: all).
        option: the command-line option that chose ``columns``, named in messages.

    Raises:
        UsageError: the file is missing, unreadable or not a regular file (a folder, a
            FIFO, a socket or a device, checked before it is opened), empty, without a
            header row or data rows, a line has more or fewer fields than the header
            (named by its number), a column is unknown or not numeric (with the line of
            the first bad cell); the message is one line saying what to do.

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
    lines = _read_lines(path)
    header = lines.header
    table = Table(
        np.empty((len(lines.rows), len(header))),
        header,
        np.arange(1, len(lines.rows) + 1),
        lines.numbers,
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
    values = _parse_with_pandas(lines, indices)
    if values is None:
        values = _parse_line_by_line(lines, indices, hint)
    return Table(values, [header[i] for i in indices], table.rows, table.lines, path)


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
