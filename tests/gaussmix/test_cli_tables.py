"""Reading DATA for the ``gaussmix`` command (:func:`gaussmix.cli.read_table`): pandas
parses the cells, and every message names the line as the file numbers it (blank lines
counted), whether pandas or the line-by-line reader found the problem.

No JAX here: these tests read files only."""

import subprocess
import sys

import numpy as np
import pytest

from gaussmix.cli import UsageError, drop_missing, read_table


def read(tmp_path, text: str, columns=None, *, name: str = "d.csv", encoding: str = "utf-8"):
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return read_table(path, columns)


def error(tmp_path, text: str, columns=None) -> str:
    with pytest.raises(UsageError) as raised:
        read(tmp_path, text, columns)
    message = str(raised.value)
    assert "\n" not in message
    return message


# -- line numbers ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a,b\n1,2\n3\n", "line 3 has 1 fields but the header has 2"),  # too few
        ("a,b\n1,2\n3,4,5\n", "line 3 has 3 fields but the header has 2"),  # too many
        ("\n\na,b\n\n1,2\n  \n3\n", "line 7 has 1 fields but the header has 2"),  # blank lines
        ("a,b\r\n1,2\r\n\r\n3,4,5\r\n", "line 4 has 3 fields"),  # Windows line ends
        ("a,b\r1,2\r3\r", "line 3 has 1 fields"),  # old Mac line ends
        ('a,b\n"1,5",2\n"3",4,5\n', "line 3 has 3 fields"),  # a quoted comma is no delimiter
        ("a b\n1 2\n\n3 4 5\n", "line 4 has 3 fields"),  # whitespace-separated
        ("a;b\n1;2\n3;4;;\n", "line 3 has 4 fields"),
    ],
)
def test_ragged_lines_are_named_by_their_line_in_the_file(tmp_path, text, expected):
    assert expected in error(tmp_path, text)


def test_the_first_ragged_line_is_named_even_far_down(tmp_path):
    rows = ["1,2"] * 5000
    rows[3999] = "1"
    rows[4500] = "1,2,3"
    message = error(tmp_path, "a,b\n" + "\n".join(rows) + "\n")
    assert "line 4001 has 1 fields" in message


@pytest.mark.parametrize(
    ("text", "line", "cell"),
    [
        ("a,b\n1,2\n3,x\n", 3, "'x'"),
        ("a,b\n\n1,2\n\n3,4\n5,foo\n", 6, "'foo'"),  # blank lines counted
        ("a,b\n1,2\n3,True\n", 3, "'True'"),  # pandas would read booleans
        ("a,b\n1,2\n3,0x10\n", 3, "'0x10'"),
        ("a b\n1 2\n3 4,5\n", 3, "'4,5'"),
    ],
)
def test_a_non_numeric_cell_is_named_with_its_column_and_line(tmp_path, text, line, cell):
    message = error(tmp_path, text)
    assert "column 'b' of d.csv is not numeric" in message
    assert f"(line {line}: {cell})" in message


def test_the_first_non_numeric_column_in_the_order_chosen_is_named(tmp_path):
    text = "a,b,c\n1,x,3\n4,5,y\n"
    assert "column 'c'" in error(tmp_path, text, ["c", "b"])
    assert "column 'b'" in error(tmp_path, text, ["b", "c"])
    # Columns not chosen may hold anything.
    assert read(tmp_path, text.replace("y", "6"), ["a", "c"]).values.tolist() == [
        [1.0, 3.0],
        [4.0, 6.0],
    ]


def test_line_numbers_of_the_rows_count_blank_lines(tmp_path):
    table = read(tmp_path, "\n a , b \n\n1,2\n \t\n3,4\n\n")
    assert table.columns == ["a", "b"]
    assert table.lines.tolist() == [4, 6]
    assert table.rows.tolist() == [1, 2]


# -- what is a number, what is missing ---------------------------------------------------


def test_cells_read_exactly_as_python_float_reads_them(tmp_path):
    """pandas' parser against ``float`` on awkward spellings; any difference, even in the
    last bit, fails (values compared with ==)."""
    rng = np.random.default_rng(7)
    values = (rng.standard_normal(500) * 10.0 ** rng.integers(-300, 300, 500)).tolist()
    cells = [repr(v) for v in values] + [f"{v:.17g}" for v in values] + [f"{v:.3E}" for v in values]
    cells += ["123456789012345678901234567890", "-0", "5.", ".5", "+1.5", "1e-400", "1e999"]
    cells += ["-inf", "Infinity", "2.2250738585072011e-308", "4.9406564584124654e-324"]
    table = read(tmp_path, "x\n" + "\n".join(cells) + "\n")
    expected = np.array([float(cell) for cell in cells])
    np.testing.assert_array_equal(table.values[:, 0], expected)
    assert np.signbit(table.values[cells.index("-0"), 0])


@pytest.mark.parametrize(
    "missing", ["", "nan", "NaN", "NAN", "NA", "na", "N/A", "n/a", "null", "NULL", "None", "-"]
)
def test_missing_value_words_in_any_case_are_nan(tmp_path, missing):
    table = read(tmp_path, f"a,b\n1,2\n3,{missing}\n5,6\n")
    assert np.isnan(table.values[1, 1]) and np.isfinite(np.delete(table.values.ravel(), 3)).all()


def test_what_float_reads_and_pandas_does_not_is_still_read(tmp_path):
    """Spaces around a missing-value word, digit separators, ``-nan``, a no-break space:
    read as before pandas parsed the files (Python's ``float`` after ``strip``)."""
    table = read(tmp_path, "a,b\n1_000, NA \n-nan,\u00a02\u00a0\n")
    np.testing.assert_array_equal(table.values, [[1000.0, np.nan], [np.nan, 2.0]])


def test_quoted_cells_and_a_quoted_delimiter(tmp_path):
    table = read(tmp_path, 'name,x,y\n"Smith, J","1.5",2\n"Doe, A",3,"4"\n', ["x", "y"])
    np.testing.assert_array_equal(table.values, [[1.5, 2.0], [3.0, 4.0]])


def test_whitespace_separated_with_unicode_spaces(tmp_path):
    """No comma, semicolon or tab in the header: fields split on any whitespace, as
    ``str.split`` does (a no-break space or an em space included)."""
    table = read(tmp_path, "a b\n1\u00a02\n  3\u2003 4  \n")
    np.testing.assert_array_equal(table.values, [[1.0, 2.0], [3.0, 4.0]])


def test_a_byte_order_mark_is_not_part_of_the_first_name(tmp_path):
    table = read(tmp_path, "\ufeffa;b\n1;2\n", ["a"])
    assert table.columns == ["a"] and table.values.tolist() == [[1.0]]


def test_a_column_chosen_twice_is_read_twice(tmp_path):
    table = read(tmp_path, "a,b\n1,2\n3,4\n", ["b", "b", "0"])
    assert table.columns == ["b", "b", "a"]
    np.testing.assert_array_equal(table.values, [[2.0, 2.0, 1.0], [4.0, 4.0, 3.0]])


def test_nan_rows_are_named_by_row_and_line_with_blank_lines_counted(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("a,b\n\n1,2\nNA,3\n\n4,5\n6,null\n")
    with pytest.raises(UsageError, match=r"2 rows 2, 4 \(file lines 4, 7\)"):
        drop_missing(read_table(path), drop=False)
    table = drop_missing(read_table(path), drop=True)
    assert table.values.tolist() == [[1.0, 2.0], [4.0, 5.0]]
    assert table.lines.tolist() == [3, 6] and table.dropped == [2, 4]


# -- files that hold no table ------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (" \n\t\n\n", "the file is empty"),
        ("a,b\n\n  \n", "it has a header row but no data rows"),
        ("1.5,2\n3,4\n", "its first line holds numbers, not column names"),
        ("a, a\n1,2\n", "distinct, non-empty column names"),
        ("a,,b\n1,2,3\n", "distinct, non-empty column names"),
    ],
)
def test_files_without_a_table(tmp_path, text, expected):
    assert expected in error(tmp_path, text)


def test_an_unknown_column_lists_the_columns(tmp_path):
    message = error(tmp_path, "a,b\n1,2\n", ["c"])
    assert "--columns 'c': no such column in d.csv; its columns are a, b" in message


def test_not_utf8_is_said(tmp_path):
    with pytest.raises(UsageError, match="it is not UTF-8 text"):
        read(tmp_path, "a,b\n1,\u00e9\n", encoding="latin-1")


# -- pandas is imported only to read a table ---------------------------------------------


def test_the_command_and_its_help_do_not_import_pandas():
    script = (
        "import sys, contextlib, io, gaussmix, gaussmix.cli\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    assert gaussmix.cli.main(['fit-mixture', '--help']) == 0\n"
        "assert 'pandas' not in sys.modules, 'pandas imported'\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True)
