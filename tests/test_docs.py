"""The site (docs/) cannot drift from the code.

* Every public name of ``gaussmix``, ``gaussmix.models`` and ``gaussmix.inference`` (their
  ``__all__``) has an entry in the API reference (``docs/api/*.rst``), and every entry
  names something that exists.
* Every ``python`` code block of every guide (``docs/guides/*.md``) runs, in order, in one
  namespace per guide, from the repository's root; the blocks assert their own claims.
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
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
sys.path.insert(0, str(DOCS / "_ext"))

import gaussmix_cli_help  # noqa: E402
import gaussmix_gallery  # noqa: E402

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


def code_blocks(guide: Path) -> list[tuple[int, str]]:
    """(line number, code) of each ```python block of a MyST guide, in order."""
    blocks, lines = [], guide.read_text().splitlines()
    start = None
    for number, line in enumerate(lines, 1):
        if start is None and line.strip() == "```python":
            start = number
        elif start is not None and line.strip() == "```":
            blocks.append((start + 1, "\n".join(lines[start : number - 1]) + "\n"))
            start = None
    assert start is None, f"{guide.name}: a python block opened at line {start} is not closed"
    return blocks


def test_guides_are_in_the_table_of_contents():
    index = (DOCS / "index.md").read_text()
    assert GUIDES
    for guide in GUIDES:
        assert f"guides/{guide.stem}\n" in index, guide.name


@pytest.mark.slow
@pytest.mark.parametrize("guide", GUIDES, ids=[g.stem for g in GUIDES])
def test_guide_code_blocks_run_in_order(guide, monkeypatch, capsys):
    blocks = code_blocks(guide)
    assert blocks, f"{guide.name} has no python code block"
    monkeypatch.chdir(ROOT)
    namespace = {"__name__": f"guide_{guide.stem}"}
    for line, code in blocks:
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
    return ">>>" in Path(spec.origin).read_text()


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
    with pytest.raises(ExtensionError, match=r"failing\.py --quick failed.*a claim"):
        gaussmix_gallery.run_example(failing, tmp_path)
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
    broken = {"numpy": ("https://numpy.org/doc/stable/", {"numpy.no_such_name": ("class", "x")})}
    monkeypatch.setattr(gaussmix_inventories, "INVENTORIES", broken)
    with pytest.raises(ValueError, match="no_such_name"):
        gaussmix_inventories.write_inventories(tmp_path / "again")


def test_gallery_removes_the_pages_of_scripts_that_are_gone(tmp_path):
    (tmp_path / "images" / "old").mkdir(parents=True)
    (tmp_path / "images" / "kept").mkdir()
    for name in ("old.rst", "kept.rst", "index.rst"):
        (tmp_path / name).write_text("page\n")
    gaussmix_gallery.remove_stale_pages(tmp_path, [Path("examples/kept.py")])
    assert sorted(p.name for p in tmp_path.glob("*.rst")) == ["index.rst", "kept.rst"]
    assert [p.name for p in (tmp_path / "images").iterdir()] == ["kept"]
