"""One self-contained HTML report, and the JSON written next to it.

A :class:`Report` collects headings, paragraphs, warnings, tables and figures, and renders
them as ONE HTML file: figures are embedded as base64 PNG ``data:`` URIs, the style sheet
is inline, nothing is fetched from the network and no script runs. Warnings carry the CSS
class ``warning`` (a red box); table rows flagged as warnings carry the same class.

:func:`json_safe` turns results (NumPy / JAX arrays, NumPy scalars, nested mappings) into
plain JSON values: NaN and infinities become ``null`` so that the file is strict JSON
(no ``NaN`` tokens); :func:`write_json` writes it with ``allow_nan=False``.
:func:`versions` lists the versions of the packages a result depends on.

Importing this module does not import matplotlib: figures are rendered by calling their
own ``savefig``.

Example:
    >>> report = Report("Example")
    >>> report.table(["K", "BIC"], [[1, 10.5], [2, float("nan")]], caption="criteria")
    >>> report.warning("component 2 collapsed")
    >>> html = report.render()
    >>> html.count("<tr"), 'class="warning"' in html
    (3, True)
"""

import base64
import html
import importlib.metadata
import io
import json
import math
import os
import platform
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["Report", "figure_png", "format_value", "json_safe", "versions", "write_json"]

#: Packages whose versions every result records.
VERSIONED_PACKAGES = ("gaussmix", "jax", "jaxlib", "numpyro", "arviz", "numpy")

#: Optional packages recorded when installed.
OPTIONAL_PACKAGES = ("scipy", "matplotlib", "xarray")

_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto;
       max-width: 70em; padding: 0 1em; color: #1a1a1a; line-height: 1.45; }
h1 { border-bottom: 2px solid #3a6ea5; padding-bottom: .2em; }
h2 { margin-top: 2em; color: #234a70; border-bottom: 1px solid #c8d3df; }
h3 { margin-top: 1.4em; color: #234a70; }
table { border-collapse: collapse; margin: .8em 0 1.4em; font-size: .92em; }
caption { caption-side: top; text-align: left; font-weight: 600; padding: .3em 0; }
th, td { border: 1px solid #c8d3df; padding: .25em .6em; text-align: right; }
th { background: #eaf0f6; }
td.text, th.text { text-align: left; }
td.text { white-space: nowrap; }
tr:nth-child(even) td { background: #f7f9fb; }
tr.warning td { background: #fde8e8; color: #8a1010; }
.warning { background: #fde8e8; border-left: 4px solid #c0392b; color: #8a1010;
           padding: .4em .8em; margin: .6em 0; }
.note { background: #eef5e9; border-left: 4px solid #5a8f3c; padding: .4em .8em; }
figure { margin: 1em 0 1.6em; }
figure img { max-width: 100%; border: 1px solid #dde3ea; }
figcaption { font-size: .9em; color: #444; }
code, pre { background: #f3f5f7; padding: 0 .25em; }
footer { margin-top: 3em; font-size: .85em; color: #555; }
"""


def format_value(value: Any, digits: int = 4) -> str:
    """A table cell's text: floats to ``digits`` significant digits, NaN as "nan".

    Args:
        value: a number, a string, a boolean, None, or a small array (shown as a list).
        digits: significant digits for floating-point numbers.

    Example:
        >>> format_value(3.14159265), format_value(12345678.0), format_value(None)
        ('3.142', '1.235e+07', '')
    """
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool | np.bool_):
        return "yes" if value else "no"
    if isinstance(value, int | np.integer):
        return str(int(value))
    array = np.asarray(value)
    if array.ndim == 0:
        number = float(array)
        if math.isnan(number):
            return "nan"
        if math.isinf(number):
            return "inf" if number > 0 else "-inf"
        return f"{number:.{digits}g}"
    return "[" + ", ".join(format_value(v, digits) for v in array.ravel().tolist()) + "]"


def figure_png(figure: Any, dpi: int = 100) -> bytes:
    """A matplotlib figure rendered as PNG bytes (matplotlib is not imported here).

    Args:
        figure: anything with matplotlib's ``savefig(buffer, format="png", ...)``.
        dpi: resolution.
    """
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    return buffer.getvalue()


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class Report:
    """An HTML report built piece by piece and rendered as one self-contained page.

    Args:
        title: the page title and top heading.
        subtitle: an optional line under the title.

    Example:
        >>> report = Report("Fit")
        >>> report.heading("Parameters")
        >>> report.table(["name", "value"], [["mean", 1.0]])
        >>> "<h2>Parameters</h2>" in report.render()
        True
    """

    def __init__(self, title: str, subtitle: str | None = None) -> None:
        self.title = title
        self.subtitle = subtitle
        self._parts: list[str] = []
        self.warnings: list[str] = []

    def heading(self, text: str, level: int = 2) -> None:
        """A section heading (``level`` 2 or 3; 1 is the title)."""
        if level not in (2, 3, 4):
            raise ValueError(f"heading level must be 2, 3 or 4, got {level}.")
        self._parts.append(f"<h{level}>{html.escape(text)}</h{level}>")

    def paragraph(self, text: str, *, css_class: str | None = None) -> None:
        """A paragraph of plain text (escaped); ``css_class`` "note" or "warning" styles it."""
        attribute = f' class="{html.escape(css_class)}"' if css_class else ""
        self._parts.append(f"<p{attribute}>{html.escape(text)}</p>")

    def note(self, text: str) -> None:
        """A highlighted note (green box)."""
        self.paragraph(text, css_class="note")

    def warning(self, text: str) -> None:
        """A highlighted warning (class ``warning``), also listed in :attr:`warnings`."""
        self.warnings.append(text)
        self.paragraph(text, css_class="warning")

    def preformatted(self, text: str) -> None:
        """Monospaced text such as a fit report."""
        self._parts.append(f"<pre>{html.escape(text)}</pre>")

    def table(
        self,
        columns: Sequence[str],
        rows: Iterable[Sequence[Any]],
        *,
        caption: str | None = None,
        flagged: Iterable[bool] | None = None,
        digits: int = 4,
    ) -> None:
        """A table; numbers are formatted by :func:`format_value`.

        Args:
            columns: C column names.
            rows: rows of C cells each.
            caption: shown above the table.
            flagged: one boolean per row; true rows get the CSS class ``warning``.
            digits: significant digits of floating-point cells.
        """
        rows = [list(row) for row in rows]
        flags = [False] * len(rows) if flagged is None else [bool(f) for f in flagged]
        if len(flags) != len(rows):
            raise ValueError(f"flagged has {len(flags)} entries for {len(rows)} rows.")
        for index, row in enumerate(rows):
            if len(row) != len(columns):
                raise ValueError(
                    f"row {index} has {len(row)} cells but there are {len(columns)} columns."
                )
        lines = ["<table>"]
        if caption:
            lines.append(f"<caption>{html.escape(caption)}</caption>")
        kinds = [
            "text" if rows and all(isinstance(row[c], str) for row in rows) else "number"
            for c in range(len(columns))
        ]
        header = "".join(
            f'<th class="{kind}">{html.escape(str(name))}</th>'
            for name, kind in zip(columns, kinds, strict=True)
        )
        lines.append(f"<thead><tr>{header}</tr></thead><tbody>")
        for row, flag in zip(rows, flags, strict=True):
            cells = "".join(
                f'<td class="{kind}">{html.escape(format_value(cell, digits))}</td>'
                for cell, kind in zip(row, kinds, strict=True)
            )
            attribute = ' class="warning"' if flag else ""
            lines.append(f"<tr{attribute}>{cells}</tr>")
        lines.append("</tbody></table>")
        self._parts.append("\n".join(lines))

    def dataframe(self, frame: Any, *, caption: str | None = None, index_name: str = "") -> None:
        """A pandas DataFrame (for example ArviZ's summary) as a table, index first."""
        columns = [index_name or (frame.index.name or ""), *map(str, frame.columns)]
        rows = [[str(index), *values] for index, *values in frame.itertuples()]
        self.table(columns, rows, caption=caption)

    def figure(self, figure: Any, caption: str | None = None, *, dpi: int = 100) -> bytes:
        """Embed a figure as a base64 PNG; returns the PNG bytes (to save them as a file too).

        Args:
            figure: a matplotlib figure, PNG bytes, or the path of a PNG file.
            caption: shown under the figure (also the image's alt text).
            dpi: resolution when ``figure`` is a matplotlib figure.
        """
        if isinstance(figure, bytes):
            png = figure
        elif isinstance(figure, str | os.PathLike):
            png = Path(figure).read_bytes()
        else:
            png = figure_png(figure, dpi=dpi)
        if not png.startswith(_PNG_SIGNATURE):
            raise ValueError("figure is not a PNG image; give a matplotlib figure or PNG bytes.")
        encoded = base64.b64encode(png).decode("ascii")
        alt = html.escape(caption or "figure")
        parts = [f'<figure><img alt="{alt}" src="data:image/png;base64,{encoded}">']
        if caption:
            parts.append(f"<figcaption>{html.escape(caption)}</figcaption>")
        parts.append("</figure>")
        self._parts.append("".join(parts))
        return png

    def render(self) -> str:
        """The whole page as one HTML string."""
        subtitle = f"<p>{html.escape(self.subtitle)}</p>" if self.subtitle else ""
        summary = ""
        if self.warnings:
            summary = (
                f'<p class="warning">{len(self.warnings)} warning(s) below, highlighted like '
                "this one.</p>"
            )
        created = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        versions_text = ", ".join(f"{name} {version}" for name, version in versions().items())
        return "\n".join(
            [
                "<!DOCTYPE html>",
                '<html lang="en"><head><meta charset="utf-8">',
                '<meta name="viewport" content="width=device-width, initial-scale=1">',
                f"<title>{html.escape(self.title)}</title>",
                f"<style>{_STYLE}</style></head><body>",
                f"<h1>{html.escape(self.title)}</h1>",
                subtitle,
                summary,
                *self._parts,
                f"<footer>Written by gaussmix on {created}. {html.escape(versions_text)}.</footer>",
                "</body></html>",
                "",
            ]
        )

    def write(self, path: str | os.PathLike) -> Path:
        """Render and write the page (UTF-8); returns the path."""
        path = Path(path)
        path.write_text(self.render(), encoding="utf-8")
        return path


def json_safe(value: Any) -> Any:
    """Plain JSON values from results: arrays to (nested) lists, NaN and inf to None.

    Mappings keep their order (keys become strings); tuples and sets become lists; NumPy
    and JAX scalars become Python numbers; anything else becomes its ``str``.

    Example:
        >>> json_safe({"a": np.array([1.0, np.nan]), "b": np.int64(3), 4: (True, None)})
        {'a': [1.0, None], 'b': 3, '4': [True, None]}
    """
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        number = float(value)
        return number if math.isfinite(number) else None
    if isinstance(value, Mapping):
        return {str(key): json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [json_safe(item) for item in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if hasattr(value, "__array__") or isinstance(value, np.ndarray):
        array = np.asarray(value)
        if array.dtype.kind in "biuf":
            if array.ndim == 0:
                return json_safe(array[()])
            return [json_safe(item) for item in array.tolist()]
        if array.dtype.kind in "US":
            return array.tolist()
    return str(value)


def write_json(path: str | os.PathLike, value: Any) -> Path:
    """Write :func:`json_safe` ``(value)`` as strict, indented JSON; returns the path."""
    path = Path(path)
    text = json.dumps(json_safe(value), indent=2, allow_nan=False)
    path.write_text(text + "\n", encoding="utf-8")
    return path


def versions() -> dict[str, str]:
    """Versions of Python, gaussmix, jax, jaxlib, numpyro, arviz, numpy (and scipy,
    matplotlib, xarray when installed).

    Example:
        >>> sorted(versions())[:3]
        ['arviz', 'gaussmix', 'jax']
    """
    found = {}
    for name in VERSIONED_PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = "not installed"
    for name in OPTIONAL_PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    found["python"] = platform.python_version()
    return found
