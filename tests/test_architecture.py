"""The architecture rules of docs/architecture.md, read from the source by ``ast``.

* no module of 900 lines or more;
* no module imports another module's private names (``from x import _name`` or
  ``x._name`` on an imported module; NamedTuple's ``_replace``/``_asdict``/``_fields``/
  ``_make`` are public API);
* dependencies point one way: ``gaussmix`` (user layer) -> ``inference`` -> ``models``.
"""

import ast
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAX_LINES = 900
NAMEDTUPLE_METHODS = {"_replace", "_asdict", "_fields", "_make", "_field_defaults"}


def _package_dirs() -> dict[str, Path]:
    with open(ROOT / "pyproject.toml", "rb") as file:
        setuptools = tomllib.load(file)["tool"]["setuptools"]
    return {name: ROOT / folder for name, folder in setuptools["package-dir"].items()}


def _modules() -> dict[str, Path]:
    """Module name -> file, for every module of the three packages."""
    modules = {}
    for package, folder in _package_dirs().items():
        for path in sorted(folder.rglob("*.py")):
            relative = path.relative_to(folder).with_suffix("")
            parts = [p for p in relative.parts if p != "__init__"]
            if package == "gaussmix" and parts and parts[0] in ("models", "inference"):
                continue
            modules[".".join([package, *parts])] = path
    return modules


MODULES = _modules()


def _layer(module: str) -> str:
    parts = module.split(".")
    if len(parts) > 1 and parts[1] in ("models", "inference"):
        return parts[1]
    return "gaussmix"


def _is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _resolve(module: str, node: ast.ImportFrom) -> str:
    """Absolute module name of a (possibly relative) ``from ... import``."""
    if node.level == 0:
        return node.module or ""
    is_package = MODULES[module].name == "__init__.py"
    base = module.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(module: str, tree: ast.Module):
    """(imported module, imported name or None, bound local name, line) of every import."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                bound = alias.asname or alias.name.split(".")[0]
                yield alias.name, None, bound if alias.asname else None, node.lineno
        elif isinstance(node, ast.ImportFrom):
            source = _resolve(module, node)
            for alias in node.names:
                yield source, alias.name, alias.asname or alias.name, node.lineno


def _project_module(name: str) -> bool:
    return name == "gaussmix" or name.startswith("gaussmix.")


@pytest.mark.parametrize("module", sorted(MODULES))
def test_module_is_small(module):
    lines = MODULES[module].read_text().count("\n")
    assert lines < MAX_LINES, (
        f"{MODULES[module].relative_to(ROOT)} has {lines} lines; split it by concern "
        f"(at most {MAX_LINES - 1})."
    )


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_private_names_of_other_modules(module):
    tree = ast.parse(MODULES[module].read_text())
    problems = []
    module_aliases = {}
    for source, name, bound, line in _imports(module, tree):
        if not _project_module(source):
            continue
        if name is None:
            if bound:
                module_aliases[bound] = source
            continue
        candidate = f"{source}.{name}"
        if candidate in MODULES:
            module_aliases[bound] = candidate
        elif _is_private(name) and source != module:
            problems.append(f"line {line}: from {source} import {name}")
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in module_aliases
            and _is_private(node.attr)
            and node.attr not in NAMEDTUPLE_METHODS
        ):
            problems.append(f"line {node.lineno}: {node.value.id}.{node.attr}")
    assert not problems, f"{module} uses private names of other modules: {problems}"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_dependencies_point_one_way(module):
    allowed = {
        "models": {"models"},
        "inference": {"models", "inference"},
        "gaussmix": {"models", "inference", "gaussmix"},
    }[_layer(module)]
    tree = ast.parse(MODULES[module].read_text())
    wrong = set()
    for source, name, _, line in _imports(module, tree):
        if not _project_module(source):
            continue
        # `from gaussmix import models` names a layer; `from gaussmix import x` the user layer
        target = f"gaussmix.{name}" if source == "gaussmix" and name else source
        if _layer(target) not in allowed:
            wrong.add(f"line {line}: {target}")
    assert not wrong, f"{module} ({_layer(module)}) imports a layer above it: {sorted(wrong)}"


def test_scan_sees_the_packages():
    """The scan covers all three packages (a wrong pyproject path would scan nothing)."""
    layers = {_layer(module) for module in MODULES}
    assert layers == {"gaussmix", "models", "inference"}
    assert "gaussmix.inference.native" in MODULES and "gaussmix.models.peaks" in MODULES
