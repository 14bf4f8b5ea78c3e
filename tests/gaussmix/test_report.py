"""The HTML report is one self-contained page; results JSON is strict."""

import base64
import json
import math
import re
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest

from gaussmix.report import Report, figure_png, format_value, versions, write_json


def small_figure():
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(2, 2))
    axis.plot([0, 1], [0, 1])
    return figure


def test_figures_are_embedded_as_the_png_they_were():
    import matplotlib.pyplot as plt

    figure = small_figure()
    report = Report("t")
    png = report.figure(figure, caption="a line")
    plt.close(figure)
    page = report.render()
    (encoded,) = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert base64.b64decode(encoded) == png
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert "<figcaption>a line</figcaption>" in page


def test_page_is_self_contained_and_scriptless():
    report = Report("Title <x>", subtitle="sub")
    report.figure(figure_png(small_figure()))
    report.table(["a"], [[1.0]])
    page = report.render()
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert "<script" not in page and "<link" not in page
    assert not re.search(r'(src|href)="(https?:)?//', page)
    assert "Title &lt;x&gt;" in page


def test_table_cells_are_escaped_formatted_and_flagged():
    report = Report("t")
    report.table(
        ["name", "value"],
        [["<b>mean</b>", 1 / 3], ["r_hat", 1.2], ["n", 5], ["bad", float("nan")]],
        caption="estimates",
        flagged=[False, True, False, False],
    )
    page = report.render()
    assert "&lt;b&gt;mean&lt;/b&gt;" in page and "<b>mean" not in page
    assert ">0.3333<" in page and ">5<" in page and ">nan<" in page
    rows = re.findall(r"<tr( class=\"warning\")?>", page)
    assert rows.count(' class="warning"') == 1
    assert "<caption>estimates</caption>" in page


def test_warnings_are_highlighted_and_counted():
    report = Report("t")
    report.warning("R-hat 1.2 > 1.01 for means[0]")
    page = report.render()
    assert '<p class="warning">R-hat 1.2 &gt; 1.01 for means[0]</p>' in page
    assert "1 warning(s)" in page
    assert report.warnings == ["R-hat 1.2 > 1.01 for means[0]"]


def test_bad_pieces_are_refused():
    report = Report("t")
    with pytest.raises(ValueError, match="not a PNG"):
        report.figure(b"GIF89a")
    with pytest.raises(ValueError, match="row 0 has 1 cells"):
        report.table(["a", "b"], [[1]])
    with pytest.raises(ValueError, match="flagged has 2 entries"):
        report.table(["a"], [[1]], flagged=[True, False])


def test_dataframe_tables():
    pandas = pytest.importorskip("pandas")
    frame = pandas.DataFrame({"mean": [1.0, 2.0], "r_hat": [1.0, 1.001]}, index=["a", "b"])
    report = Report("t")
    report.dataframe(frame, index_name="parameter")
    page = report.render()
    assert page.count("<tr") == 3 and ">parameter<" in page and ">1.001<" in page


def test_format_value():
    assert format_value(2.0) == "2"
    assert format_value(np.float32(0.1)) == "0.1"
    assert format_value(np.array([1.0, np.inf])) == "[1, inf]"
    assert format_value(True) == "yes"
    assert format_value(-np.inf) == "-inf"


def test_json_safe_has_no_nan_tokens(tmp_path):
    value = {
        "a": np.array([[1.0, np.nan], [np.inf, -np.inf]]),
        "b": jnp.arange(3.0),
        "c": np.float32(0.5),
        "d": (np.bool_(True), None, "text"),
        "e": {1: np.int32(7)},
        "f": float("nan"),
    }
    path = write_json(tmp_path / "r.json", value)
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text

    def refuse(token):
        raise AssertionError(f"non-standard JSON token {token}")

    loaded = json.loads(text, parse_constant=refuse)
    assert loaded == {
        "a": [[1.0, None], [None, None]],
        "b": [0.0, 1.0, 2.0],
        "c": 0.5,
        "d": [True, None, "text"],
        "e": {"1": 7},
        "f": None,
    }
    assert math.isfinite(loaded["c"])


def test_versions_name_the_stack():
    found = versions()
    for name in ("gaussmix", "jax", "jaxlib", "numpyro", "arviz", "numpy", "python"):
        assert found[name] and found[name] != "not installed"


def test_report_module_does_not_import_matplotlib():
    probe = (
        "import sys, gaussmix.report, gaussmix.cli, gaussmix.io;"
        "assert 'matplotlib' not in sys.modules, 'matplotlib imported'"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
