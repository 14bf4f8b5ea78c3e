"""The gallery: every ``examples/*.py`` run in its ``--quick`` mode, one page each.

At ``builder-inited`` each script runs as ``python examples/NAME.py --quick --out DIR``
would run it, but inside the Sphinx process (as tests/test_examples.py does: JAX is
imported once and the programs the examples share compile once). Its page shows the
script's docstring, the figures it wrote, what it printed, and its source; the full-run
figures of ``docs/gallery/`` (the README's, made without ``--quick``) follow when the
script made figures of those names. A script that fails (an exception or a failed claim)
fails the build; one that exits with status 0 (an optional requirement missing, e.g.
scikit-learn or the NIST data) gets a page saying so with what it printed.

Why not sphinx-gallery: the scripts draw on :class:`matplotlib.figure.Figure` objects
(no pyplot, nothing for its scraper), take ``--quick --out DIR``, may end with
``sys.exit(0)`` (which would stop sphinx-gallery's whole build) and have a one-line
title rather than an rst heading; each of these would need a hook or an edit to every
script, new ones included. This module is the small, explicit equivalent.
"""

import contextlib
import hashlib
import io
import runpy
import shutil
import sys
import tempfile
import textwrap
import time
import traceback
from pathlib import Path

from sphinx.errors import ExtensionError
from sphinx.util import logging

LOGGER = logging.getLogger(__name__)
GALLERY_FIGURES = "gallery"  # docs/gallery: the full runs' PNGs (the README's)


def example_scripts(folder: Path) -> list[Path]:
    """Every example script: ``folder/*.py`` not starting with ``_``, sorted by name."""
    return sorted(p for p in folder.glob("*.py") if not p.name.startswith("_"))


def split_docstring(script: Path) -> tuple[str, str]:
    """(title, body) of the script's module docstring: its first line and the rest."""
    import ast

    docstring = ast.get_docstring(ast.parse(script.read_text()), clean=True)
    if not docstring:
        raise ExtensionError(f"{script}: an example needs a module docstring (its title)")
    title, _, body = docstring.partition("\n")
    return title.strip(), body.strip()


def run_example(script: Path, out: Path) -> tuple[str, str | None, float]:
    """Run SCRIPT with ``--quick --out OUT`` as ``__main__``; (stdout, exit note, seconds).

    The exit note is None for a normal end, else what a ``sys.exit(0)`` said. Any other
    exit or exception raises ExtensionError naming the script.
    """
    argv = sys.argv[:]
    sys.argv = [str(script), "--quick", "--out", str(out)]
    printed = io.StringIO()
    note = None
    start = time.perf_counter()
    try:
        with contextlib.redirect_stdout(printed):
            runpy.run_path(str(script), run_name="__main__")
    except SystemExit as stop:
        if stop.code not in (None, 0):
            raise ExtensionError(
                f"gallery: {script.name} exited with {stop.code}:\n{printed.getvalue()[-3000:]}"
            ) from None
        note = "The script stopped early (status 0): an optional requirement is missing."
    except Exception as error:
        # Where it failed, too: Sphinx's own report keeps only the extension's frames.
        where = "".join(traceback.format_exception(error))[-3000:]
        raise ExtensionError(
            f"gallery: {script.name} --quick failed: {error!r}\n"
            f"{printed.getvalue()[-3000:]}\n{where}"
        ) from error
    finally:
        sys.argv = argv
    # The temporary output folder's name changes with every build: show it as OUT.
    return printed.getvalue().replace(str(out), "OUT"), note, time.perf_counter() - start


def _literal(text: str) -> str:
    return textwrap.indent(text.rstrip() or "(nothing printed)", "   ")


def example_page(
    script: Path,
    figures: list[str],
    full_figures: list[str],
    printed: str,
    note: str | None,
    seconds: float,
) -> str:
    title, body = split_docstring(script)
    lines = [f".. _gallery-{script.stem}:", "", title, "=" * len(title), "", body, ""]
    lines += [
        "This page ran it with ``--quick`` (small sizes, short chains) while the"
        f" site was built ({seconds:.0f} s).",
        "",
    ]
    if note:
        lines += [".. note::", "", f"   {note}", ""]
    if figures:
        lines += ["Figures (this build, ``--quick``)", "-" * 33, ""]
        for name in figures:
            lines += [
                f".. figure:: images/{script.stem}/{name}",
                "   :width: 100%",
                "",
                f"   ``{name}``",
                "",
            ]
    lines += ["Printed output", "-" * 14, "", "::", "", _literal(printed), ""]
    if full_figures:
        lines += ["Full run (``docs/gallery/``, made without ``--quick``)", "-" * 54, ""]
        for name in full_figures:
            lines += [
                f".. figure:: ../{GALLERY_FIGURES}/{name}",
                "   :width: 100%",
                "",
                f"   ``{name}`` (full run)",
                "",
            ]
    lines += [
        "Source",
        "-" * 6,
        "",
        f":download:`examples/{script.name} <../../examples/{script.name}>`",
        "",
        f".. literalinclude:: ../../examples/{script.name}",
        "   :language: python",
        "",
    ]
    return "\n".join(lines)


def index_page(scripts: list[Path]) -> str:
    lines = [
        "Gallery",
        "=======",
        "",
        "Every script of ``examples/``, run while this site was built (``--quick``: small",
        "sizes and short chains), with the figures it wrote and the numbers it printed and",
        "asserted. ``examples/README.md`` lists what each asserts and needs.",
        "",
        ".. list-table::",
        "   :header-rows: 1",
        "",
        "   * - example",
        "     - what it shows",
    ]
    for script in scripts:
        title, _ = split_docstring(script)
        lines += [f"   * - :ref:`{script.stem} <gallery-{script.stem}>`", f"     - {title}"]
    lines += ["", ".. toctree::", "   :hidden:", ""]
    lines += [f"   {script.stem}" for script in scripts]
    return "\n".join(lines) + "\n"


def _write_if_changed(path: Path, text: str) -> None:
    if not path.exists() or path.read_text() != text:
        path.write_text(text)


def _same_file(a: Path, b: Path) -> bool:
    digest = lambda p: hashlib.sha256(p.read_bytes()).hexdigest()  # noqa: E731
    return b.exists() and digest(a) == digest(b)


def remove_stale_pages(output: Path, scripts: list[Path]) -> None:
    """Delete the pages and figures of scripts that no longer exist (a renamed example
    would otherwise leave a page outside every table of contents: a build warning)."""
    current = {script.stem for script in scripts}
    for page in output.glob("*.rst"):
        if page.stem != "index" and page.stem not in current:
            page.unlink()
    for folder in (output / "images").iterdir():
        if folder.is_dir() and folder.name not in current:
            shutil.rmtree(folder)


def build_gallery(app) -> None:
    examples = Path(app.config.gaussmix_gallery_examples)
    output = Path(app.srcdir) / app.config.gaussmix_gallery_output
    full = Path(app.srcdir) / GALLERY_FIGURES
    scripts = example_scripts(examples)
    output.mkdir(exist_ok=True)
    (output / "images").mkdir(exist_ok=True)
    remove_stale_pages(output, scripts)
    if not app.config.gaussmix_gallery_run:  # sphinx-build -D gaussmix_gallery_run=0
        LOGGER.info("gallery: not run (gaussmix_gallery_run = 0); pages kept as they were")
        _write_if_changed(output / "index.rst", index_page(scripts))
        for script in scripts:
            if not (output / f"{script.stem}.rst").exists():
                page = example_page(script, [], [], "(not run in this build)", None, 0.0)
                _write_if_changed(output / f"{script.stem}.rst", page)
        return
    for script in scripts:
        with tempfile.TemporaryDirectory() as folder:
            LOGGER.info(f"gallery: running {script.name} --quick")
            printed, note, seconds = run_example(script, Path(folder))
            images = output / "images" / script.stem
            images.mkdir(exist_ok=True)
            figures = sorted(p.name for p in Path(folder).glob("*.png"))
            for name in figures:
                if not _same_file(Path(folder) / name, images / name):
                    shutil.copyfile(Path(folder) / name, images / name)
        full_figures = [name for name in figures if (full / name).exists()]
        page = example_page(script, figures, full_figures, printed, note, seconds)
        _write_if_changed(output / f"{script.stem}.rst", page)
    _write_if_changed(output / "index.rst", index_page(scripts))


def setup(app):
    app.add_config_value("gaussmix_gallery_examples", "../examples", "env")
    app.add_config_value("gaussmix_gallery_output", "gallery_examples", "env")
    app.add_config_value("gaussmix_gallery_run", True, "env", types=(bool, int))
    app.connect("builder-inited", build_gallery)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
