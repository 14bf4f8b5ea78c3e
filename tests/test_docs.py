"""The site (docs/) cannot drift from the code.

* Every public name of ``gaussmix``, ``gaussmix.models`` and ``gaussmix.inference`` (their
  ``__all__``) has an entry in the API reference (``docs/api/*.rst``), and every entry
  names something that exists.
* Every ``python`` code block of every guide (``docs/guides/*.md``) runs, in order, in one
  namespace per guide; the blocks assert their own claims. A script the reader saves (a
  ``{code-block} python`` with ``:caption: NAME.py``, e.g. the multi-process ``fit.py``
  of the scaling guide, which the guide's next block starts as two processes) is written
  into the guide's folder first: such a guide runs in a fresh folder, the others from
  the repository's root (they read its reference files). A ``console`` block's
  ``$ gaussmix ...`` lines run through the command's ``main``. Any other block must be
  one of :data:`NOT_CODE`'s languages, each with the reason it is not run.
* Every docstring example (``>>>``) of the modules of the three packages runs (doctest).
* The command's page renders every subcommand's ``--help``, and the text the site shows
  (docs/_ext/gaussmix_cli_help.py) is what ``python -m gaussmix.cli CMD --help`` prints.
* The gallery picks up every ``examples/*.py``, and its page of a script carries the
  script's title, figures, printed output and source (a script is run here with a stub
  in place of the example, so that this file stays small; tests/test_examples.py runs
  the real ones).

The Sphinx build itself (``make docs``, warnings as errors) runs in ``.ci/run``.
"""

import ast
import doctest
import importlib
import importlib.util
import os
import pkgutil
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
sys.path.insert(0, str(DOCS / "_ext"))

import gaussmix_cli_help  # noqa: E402
import gaussmix_gallery  # noqa: E402
import gaussmix_references  # noqa: E402

GUIDES = sorted((DOCS / "guides").glob("*.md"))
PACKAGES = ("gaussmix", "gaussmix.models", "gaussmix.inference")

#: Modules whose docstring examples are known to fail, with the reason and the fix asked
#: of the module's owner. strict: once fixed, the test fails until the entry is removed.
KNOWN_DOCTEST_FAILURES: dict[str, str] = {}


# --- the API reference ---------------------------------------------------------------


def public_names(package: str) -> list[str]:
    """The package's ``__all__``; for a package without one, the keys of the ``_LAZY``
    table of its ``__init__`` (its names loaded on first use), read from the source."""
    module = importlib.import_module(package)
    if hasattr(module, "__all__"):
        return list(module.__all__)
    tree = ast.parse(Path(module.__file__).read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "_LAZY" for t in node.targets
        ):
            return [key.value for key in node.value.keys]
    raise AssertionError(f"{package} has neither __all__ nor a _LAZY table")


_DIRECTIVE = re.compile(
    r"^\.\. (?:auto)?(function|class|data|module|currentmodule|automodule)::\s*(\S+)", re.M
)


def documented_names(page: Path) -> set[str]:
    """Fully qualified names the page documents (autodoc entries and ``.. data::``)."""
    names, current = set(), None
    for kind, name in _DIRECTIVE.findall(page.read_text()):
        if kind == "currentmodule":
            current = name
        elif kind in ("module", "automodule"):
            names.add(name)
        else:
            names.add(f"{current}.{name}" if current and "." not in name else name)
    return names


PAGES = {
    "gaussmix": "gaussmix.rst",
    "gaussmix.models": "models.rst",
    "gaussmix.inference": "inference.rst",
}


@pytest.mark.parametrize("package", PACKAGES)
def test_every_public_name_is_in_the_api_reference(package):
    page = DOCS / "api" / PAGES[package]
    documented = documented_names(page)
    missing = [n for n in public_names(package) if f"{package}.{n}" not in documented]
    assert not missing, f"add to {page.relative_to(ROOT)}: {missing}"


def test_documented_names_exist():
    for page in sorted((DOCS / "api").glob("*.rst")):
        for name in documented_names(page):
            module_name, _, attribute = name.rpartition(".")
            try:
                importlib.import_module(name)
                continue
            except ImportError:
                pass
            module = importlib.import_module(module_name)
            assert hasattr(module, attribute), f"{page.name}: {name} does not exist"


def test_public_names_lookup_fails_on_a_missing_entry(tmp_path):
    """The check above can fail: a page without one entry misses that name."""
    page = tmp_path / "gaussmix.rst"
    text = (DOCS / "api" / "gaussmix.rst").read_text()
    page.write_text(text.replace(".. autofunction:: fit_peaks\n", ""))
    assert "gaussmix.fit_peaks" in documented_names(DOCS / "api" / "gaussmix.rst")
    assert "gaussmix.fit_peaks" not in documented_names(page)


# --- the guides -------------------------------------------------------------------------


#: Fenced-block languages of the guides that are not code, and why they are not run.
NOT_CODE: dict[str, str] = {
    "text": "output or a file layout shown to the reader, not something to run",
}

_FENCE = re.compile(r"^(`{3,})(.*)$")


def fenced_blocks(guide: Path) -> list[tuple[int, str, str, str]]:
    """(line number of the first code line, language, caption, code) of each fenced block
    of a MyST guide, in order. The language of a ``{code-block} LANG`` directive is LANG
    and its ``:caption:`` the caption (its option lines are not code)."""
    blocks, lines = [], guide.read_text().splitlines()
    index = 0
    while index < len(lines):
        opened = _FENCE.match(lines[index].strip())
        if not opened:
            index += 1
            continue
        fence, info = opened.groups()
        start = index + 1
        language, caption = info.strip(), ""
        if language.startswith("{code-block}"):
            language = language.removeprefix("{code-block}").strip()
            while start < len(lines) and lines[start].startswith(":"):
                name, _, value = lines[start][1:].partition(":")
                caption = value.strip() if name == "caption" else caption
                start += 1
        end = start
        while end < len(lines) and lines[end].strip() != fence:
            end += 1
        assert end < len(lines), f"{guide.name}: the block opened at line {index + 1} is not closed"
        while start < end and not lines[start].strip():
            start += 1  # the blank line after a directive's options
        blocks.append((start + 1, language, caption, "\n".join(lines[start:end]) + "\n"))
        index = end + 1
    return blocks


def code_blocks(guide: Path) -> list[tuple[int, str]]:
    """(line number, code) of each ```python block of a MyST guide, in order."""
    return [
        (line, code)
        for line, language, caption, code in fenced_blocks(guide)
        if language == "python" and not caption
    ]


def saved_files(guide: Path) -> dict[str, str]:
    """{file name: code} of the guide's scripts that the reader saves (a ``{code-block}
    python`` with ``:caption: NAME``)."""
    return {
        caption: code
        for _, language, caption, code in fenced_blocks(guide)
        if language == "python" and caption
    }


def test_guides_are_in_the_table_of_contents():
    index = (DOCS / "index.md").read_text()
    assert GUIDES
    for guide in GUIDES:
        assert f"guides/{guide.stem}\n" in index, guide.name


@pytest.mark.parametrize("guide", GUIDES, ids=[g.stem for g in GUIDES])
def test_every_block_of_a_guide_runs_or_is_not_code(guide):
    """A block the test would not run must say it is not code (NOT_CODE), so that no
    command or program of a guide escapes the tests."""
    for line, language, caption, _ in fenced_blocks(guide):
        if language.startswith("{") or language in NOT_CODE:
            continue  # a MyST directive (a table of contents, a figure) or not code
        assert language in ("python", "console"), (
            f"{guide.name}:{line}: a ```{language} block is never run: write it as python, "
            f"as a console block of gaussmix commands, or as one of {sorted(NOT_CODE)}"
        )
        if caption:
            assert language == "python" and re.fullmatch(r"[\w.-]+\.py", caption), caption


def test_fenced_blocks_reads_saved_scripts_and_languages(tmp_path):
    """The block reader itself: a captioned script, a plain block, an unknown language."""
    guide = tmp_path / "guide.md"
    guide.write_text(
        "# A guide\n\n```{code-block} python\n:caption: job.py\n\nprint(1)\n```\n\n"
        "```python\nx = 2\n```\n\n```bash\nrm -rf /\n```\n"
    )
    assert saved_files(guide) == {"job.py": "print(1)\n"}
    assert code_blocks(guide) == [(10, "x = 2\n")]
    assert [block[1] for block in fenced_blocks(guide)] == ["python", "python", "bash"]
    with pytest.raises(AssertionError, match="never run"):
        test_every_block_of_a_guide_runs_or_is_not_code(guide)


def run_console(code: str, guide: Path) -> None:
    """Run the ``$ gaussmix ...`` lines of a console block through the command's main
    (lines without ``$`` are its output, shown to the reader); any other command fails."""
    from gaussmix.cli import main

    for line in code.splitlines():
        if not line.startswith("$ "):
            continue
        words = shlex.split(line[2:])
        assert words[0] == "gaussmix", f"{guide.name}: {line!r} is not a gaussmix command"
        try:
            code = main(words[1:])
        except SystemExit as exit:  # argparse's --help and usage errors
            code = exit.code
        assert code == 0, f"{guide.name}: {line!r} exited with {code}"


def test_console_blocks_run_gaussmix_commands_only(capsys):
    guide = Path("guide.md")
    run_console("$ gaussmix fit-mixture --help\nusage: gaussmix fit-mixture ...\n", guide)
    assert capsys.readouterr().out.startswith("usage: gaussmix fit-mixture")
    with pytest.raises(AssertionError, match="not a gaussmix command"):
        run_console("$ rm -rf data\n", guide)
    with pytest.raises(AssertionError, match="exited with 2"):
        run_console("$ gaussmix no-such-command\n", guide)


@pytest.mark.slow
@pytest.mark.parametrize("guide", GUIDES, ids=[g.stem for g in GUIDES])
def test_guide_code_blocks_run_in_order(guide, monkeypatch, capsys, tmp_path):
    blocks = [b for b in fenced_blocks(guide) if b[1] in ("python", "console") and not b[2]]
    assert blocks, f"{guide.name} has no python code block"
    scripts = saved_files(guide)
    monkeypatch.chdir(tmp_path if scripts else ROOT)
    for name, code in scripts.items():
        (tmp_path / name).write_text(code)  # as the reader saves it
    namespace = {"__name__": f"guide_{guide.stem}"}
    for line, language, _, code in blocks:
        if language == "console":
            run_console(code, guide)
            continue
        # compile with the guide's line numbers, so a traceback points into the guide
        program = compile("\n" * (line - 1) + code, str(guide), "exec")
        exec(program, namespace)  # the guide's own code
    capsys.readouterr()


# --- docstring examples -----------------------------------------------------------------


def public_modules() -> list[str]:
    """Every module of the three packages (private modules too: their docstrings are
    the reference of the public names they define), but not ``__main__`` modules."""
    names = set(PACKAGES)
    for package in PACKAGES:
        module = importlib.import_module(package)
        for info in pkgutil.walk_packages(module.__path__, prefix=f"{package}."):
            if not info.name.endswith("__main__"):
                names.add(info.name)
    return sorted(names)


def _has_examples(name: str) -> bool:
    spec = importlib.util.find_spec(name)
    # a folder without __init__.py (a namespace package) has no docstring
    return spec.origin is not None and ">>>" in Path(spec.origin).read_text()


def _doctest_modules() -> list:
    params = []
    for name in filter(_has_examples, public_modules()):
        marks = []
        if name in KNOWN_DOCTEST_FAILURES:
            marks.append(pytest.mark.xfail(reason=KNOWN_DOCTEST_FAILURES[name], strict=True))
        params.append(pytest.param(name, marks=marks, id=name))
    return params


@pytest.mark.slow
@pytest.mark.parametrize("module_name", _doctest_modules())
def test_docstring_examples_run(module_name, monkeypatch):
    module = importlib.import_module(module_name)
    finder = doctest.DocTestFinder(exclude_empty=True)
    tests = [t for t in finder.find(module, module_name) if t.examples]
    assert tests, f"{module_name}: '>>>' in its source but no docstring example found"
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    environment = dict(os.environ)
    monkeypatch.chdir(ROOT)
    failures = []
    for test in tests:
        result = runner.run(test, out=failures.append, clear_globs=True)
        # an example that changes the environment (cache_root's) must not leak
        os.environ.clear()
        os.environ.update(environment)
        del result
    assert runner.failures == 0, "".join(failures)[-6000:]


# --- the command's page -----------------------------------------------------------------


def test_cli_page_renders_every_command():
    page = (DOCS / "cli.md").read_text()
    assert re.search(r"```\{gaussmix-cli-help\}\s*\n```", page), "gaussmix --help"
    for command in gaussmix_cli_help.commands():
        assert re.search(rf"```\{{gaussmix-cli-help\}} {command}\s*\n```", page), command


@pytest.mark.parametrize("command", [None, "fit-mixture", "fit-peaks", "demo"])
def test_cli_help_on_the_site_is_what_the_command_prints(command):
    arguments = [] if command is None else [command]
    environment = {**os.environ, "COLUMNS": str(gaussmix_cli_help.HELP_COLUMNS)}
    printed = subprocess.run(
        [sys.executable, "-m", "gaussmix.cli", *arguments, "--help"],
        capture_output=True,
        text=True,
        env=environment,
        cwd=ROOT,
        check=True,
    ).stdout
    assert gaussmix_cli_help.help_text(*arguments) == printed
    assert printed.startswith("usage: gaussmix")


def test_cli_help_of_an_unknown_command_fails_clearly():
    with pytest.raises(RuntimeError, match="exited with 2"):
        gaussmix_cli_help.help_text("no-such-command")


# --- the gallery ------------------------------------------------------------------------


def test_gallery_lists_every_example_script():
    scripts = gaussmix_gallery.example_scripts(ROOT / "examples")
    on_disk = sorted(p for p in (ROOT / "examples").glob("*.py") if not p.name.startswith("_"))
    assert scripts == on_disk
    index = gaussmix_gallery.index_page(scripts)
    for script in scripts:
        title, _ = gaussmix_gallery.split_docstring(script)
        assert title and not title.startswith(" "), script.name
        assert f"   {script.stem}\n" in index
        assert f"<gallery-{script.stem}>" in index


EXAMPLE = '''"""A stub example: it prints, asserts and draws.

Its body is rst, with :math:`x^2`.
"""

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
from matplotlib.figure import Figure

parser = argparse.ArgumentParser()
parser.add_argument("--quick", action="store_true")
parser.add_argument("--out", type=Path, default=Path("out"))
args = parser.parse_args()
assert args.quick
figure = Figure(figsize=(2, 1))
figure.add_subplot().plot([0, 1], [1, 0])
figure.savefig(args.out / "stub.png", dpi=20)
print(f"wrote {args.out / 'stub.png'}")
print("claims hold: 42")
'''


def test_gallery_page_shows_title_figures_printed_output_and_source(tmp_path):
    script = tmp_path / "stub.py"
    script.write_text(EXAMPLE)
    out = tmp_path / "out"
    out.mkdir()
    printed, note, _ = gaussmix_gallery.run_example(script, out)
    assert note is None
    assert "claims hold: 42" in printed and "wrote OUT/stub.png" in printed
    assert (out / "stub.png").exists()
    page = gaussmix_gallery.example_page(script, ["stub.png"], [], printed, note, 1.0)
    assert page.splitlines()[2:4] == ["A stub example: it prints, asserts and draws.", "=" * 45]
    assert ".. figure:: images/stub/stub.png" in page
    assert "   claims hold: 42" in page
    assert ".. literalinclude:: ../../examples/stub.py" in page


def test_gallery_reports_a_failed_claim_and_a_clean_early_exit(tmp_path):
    from sphinx.errors import ExtensionError

    failing = tmp_path / "failing.py"
    failing.write_text('"""Fails."""\nprint("before")\nassert 1 == 2, "a claim"\n')
    with pytest.raises(ExtensionError, match=r"failing\.py --quick failed.*a claim") as error:
        gaussmix_gallery.run_example(failing, tmp_path)
    assert "before" in str(error.value)  # what it printed
    assert f'File "{failing}", line 3' in str(error.value)  # and where it failed
    early = tmp_path / "early.py"
    early.write_text('"""Needs data."""\nimport sys\nprint("data absent")\nsys.exit(0)\n')
    printed, note, _ = gaussmix_gallery.run_example(early, tmp_path)
    assert "data absent" in printed and "optional requirement" in note
    broken = tmp_path / "broken.py"
    broken.write_text('"""Exits 3."""\nimport sys\nsys.exit(3)\n')
    with pytest.raises(ExtensionError, match="exited with 3"):
        gaussmix_gallery.run_example(broken, tmp_path)
    untitled = tmp_path / "untitled.py"
    untitled.write_text("print(1)\n")
    with pytest.raises(ExtensionError, match="needs a module docstring"):
        gaussmix_gallery.split_docstring(untitled)


# --- the local intersphinx inventories ------------------------------------------------


def test_local_inventories_parse_and_name_installed_objects(tmp_path, monkeypatch):
    import gaussmix_inventories
    from sphinx.util.inventory import InventoryFile

    mapping = gaussmix_inventories.write_inventories(tmp_path)
    assert {"python", "numpy", "jax", "numpyro", "sklearn"} <= set(mapping)
    url, path = mapping["numpy"]
    inventory = InventoryFile.loads(Path(path).read_bytes(), uri=url)
    assert inventory.data["py:class"]["numpy.ndarray"].uri == (
        "https://numpy.org/doc/stable/reference/generated/numpy.ndarray.html#numpy.ndarray"
    )
    for top in gaussmix_inventories.uninstalled_packages():  # optional ones, if any
        assert importlib.util.find_spec(top) is None and top not in mapping
    broken = {"numpy": ("https://numpy.org/doc/stable/", {"numpy.no_such_name": ("class", "x")})}
    monkeypatch.setattr(gaussmix_inventories, "INVENTORIES", broken)
    with pytest.raises(ValueError, match="no_such_name"):
        gaussmix_inventories.write_inventories(tmp_path / "again")
    # an optional package that is not installed: no inventory, its names ignored
    absent = {"no_such_package": ("https://example.org/", {"no_such_package.f": ("function", "x")})}
    monkeypatch.setattr(gaussmix_inventories, "INVENTORIES", absent)
    assert gaussmix_inventories.write_inventories(tmp_path / "absent") == {}
    assert gaussmix_inventories.uninstalled_packages() == ["no_such_package"]


def test_gallery_removes_the_pages_of_scripts_that_are_gone(tmp_path):
    (tmp_path / "images" / "old").mkdir(parents=True)
    (tmp_path / "images" / "kept").mkdir()
    for name in ("old.rst", "kept.rst", "index.rst"):
        (tmp_path / name).write_text("page\n")
    gaussmix_gallery.remove_stale_pages(tmp_path, [Path("examples/kept.py")])
    assert sorted(p.name for p in tmp_path.glob("*.rst")) == ["index.rst", "kept.rst"]
    assert [p.name for p in (tmp_path / "images").iterdir()] == ["kept"]


# --- cross-references (nitpicky) ------------------------------------------------------


def build_small_site(tmp_path: Path, page: str) -> str:
    """Build a one-page site with the docs' reference extension, nitpicky; its warnings."""
    import io

    from sphinx.application import Sphinx

    source = tmp_path / "source"
    (source / "api").mkdir(parents=True)
    (source / "conf.py").write_text(
        f"import sys\nsys.path.insert(0, {str(DOCS / '_ext')!r})\n"
        "extensions = ['sphinx.ext.autodoc', 'sphinx.ext.napoleon', 'gaussmix_references']\n"
        "napoleon_use_ivar = True\nnitpicky = True\n"
    )
    (source / "index.rst").write_text(page)
    warnings = io.StringIO()
    app = Sphinx(
        source,
        source,
        tmp_path / "html",
        tmp_path / "doctrees",
        "html",
        status=None,
        warning=warnings,
        freshenv=True,
    )
    app.build()
    return warnings.getvalue()


def test_a_broken_gaussmix_reference_is_reported_and_real_ones_resolve(tmp_path):
    """nitpicky: a name that does not exist is a warning (an error under -W); a re-export
    links to the documented name, a module to the modules page, a constant or an
    undocumented helper to its module, a dataclass field to its class."""
    page = (
        "Site\n====\n\n"
        ".. autofunction:: gaussmix.inference.sample\n\n"
        ".. autoclass:: gaussmix.inference.diagnostics.DiagnosticsReport\n\n"
        "Links: :func:`gaussmix.inference.mcmc.sample`, :mod:`gaussmix.inference.relabel`,\n"
        ":data:`gaussmix.inference.compilation.MAX_PROGRAMS`,\n"
        ":attr:`gaussmix.inference.diagnostics.DiagnosticsReport.problems`,\n"
        ":func:`gaussmix.inference.no_such_function`, :mod:`gaussmix.no_such_module`.\n\n"
        "Modules\n-------\n\n"
        ".. gaussmix-modules:: gaussmix.inference.relabel gaussmix.inference.compilation\n"
    )
    warnings = build_small_site(tmp_path, page)
    missing = set(re.findall(r"reference target not found: (gaussmix\S*)", warnings))
    assert {"gaussmix.inference.no_such_function", "gaussmix.no_such_module"} <= missing
    resolved = {
        "gaussmix.inference.mcmc.sample": 'href="#gaussmix.inference.sample"',
        "gaussmix.inference.relabel": 'href="#module-gaussmix.inference.relabel"',
        "gaussmix.inference.compilation.MAX_PROGRAMS": (
            'href="#module-gaussmix.inference.compilation"'
        ),
        "gaussmix.inference.diagnostics.DiagnosticsReport.problems": (
            'href="#gaussmix.inference.diagnostics.DiagnosticsReport"'
        ),
    }
    html = (tmp_path / "html" / "index.html").read_text()
    for name, link in resolved.items():
        assert name not in missing
        assert link in html, name


def test_attribute_lists_become_one_field_per_name():
    lines = [
        "Intro.",
        "",
        ":ivar a, b: shared text",
        "             continued.",
        ":ivar c: alone.",
    ]
    gaussmix_references.split_attribute_lists(None, "class", "X", None, {}, lines)
    assert lines == [
        "Intro.",
        "",
        ":ivar a: shared text",
        "             continued.",
        ":ivar b: shared text",
        "             continued.",
        ":ivar c: alone.",
    ]
