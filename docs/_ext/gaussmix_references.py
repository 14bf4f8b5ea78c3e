"""Cross-references to gaussmix names that resolve, and fail the build when they do not.

The site is built with ``nitpicky = True``: a reference whose target Sphinx cannot find
is a warning, and ``-W`` makes it an error. Two kinds of references to real gaussmix
names have no target of their own, and this extension gives them one:

* Modules. ``:mod:`gaussmix.inference.em.background``` names a module that the API
  reference does not document with ``automodule``. The ``gaussmix-modules`` directive
  (``docs/api/modules.rst``) renders every module of the packages it is given that no
  ``.. automodule::`` of the site's pages covers, with its docstring (no members): the
  list is read from the installed packages when the site is built, so a new module has
  its entry without an edit.
* Names reached through another import path, or defined in a module without being
  documented there. :func:`resolve_missing` (Sphinx's ``missing-reference`` event)
  imports the target (absolute, or relative to the object whose docstring refers to it,
  then to its class and modules). A function or class documented under another name (a
  re-export: ``gaussmix.inference.mcmc.sample`` is documented as
  ``gaussmix.inference.sample``) links to that entry; an attribute of a documented class
  to the class's entry (or the attribute's); anything else that exists (a constant, an
  undocumented helper) to the entry of the module that defines it.

A target that cannot be imported (a typo, a renamed or removed name) is left
unresolved: nitpicky reports it and the build fails. Only ``py`` references whose
target is a gaussmix name (or a short name inside a gaussmix docstring) are handled.

:func:`split_attribute_lists` makes napoleon's ``Attributes:`` entries that name several
attributes (``a, b: text``) one field per name, as napoleon does for ``Args:``.
"""

import importlib
import pkgutil
import re
from pathlib import Path

from docutils import nodes
from docutils.parsers.rst import Directive
from docutils.statemachine import StringList
from sphinx.util.nodes import nested_parse_with_titles

PACKAGE = "gaussmix"
_AUTOMODULE = re.compile(r"^\.\. automodule::\s*(\S+)", re.M)
_DOCSTRING_OF = re.compile(r"docstring of (\S+)")
_IVAR = re.compile(r"^(\s*):ivar (\w+(?:, \w+)+):(.*)$")
_MISSING = object()
_MODULE = type(importlib)


# --- the modules page -------------------------------------------------------------------


def every_module(packages: list[str]) -> list[str]:
    """The packages and every module under them (private ones too: their docstrings
    describe the names they define), without ``__main__`` modules, sorted."""
    names = set(packages)
    for package in packages:
        path = getattr(importlib.import_module(package), "__path__", [])  # [] for a module
        for info in pkgutil.walk_packages(path, prefix=f"{package}."):
            if not info.name.endswith("__main__"):
                names.add(info.name)
    return sorted(names)


def site_pages(srcdir: Path) -> list[Path]:
    """The site's hand-written pages (not the build's, not the gallery's)."""
    pages = [*srcdir.glob("*.md"), *srcdir.glob("*/*.md"), *srcdir.glob("*/*.rst")]
    skipped = ("_build", "gallery_examples")
    return sorted(p for p in pages if p.relative_to(srcdir).parts[0] not in skipped)


def automodules(pages: list[Path]) -> set[str]:
    """The modules that an ``.. automodule::`` of one of PAGES documents."""
    return {name for page in pages for name in _AUTOMODULE.findall(page.read_text())}


def shadowed(name: str) -> bool:
    """Whether the package's attribute of the module's name is something else (the
    function ``gaussmix.models.peaks`` hides the module ``gaussmix.models.peaks``)."""
    parent, _, last = name.rpartition(".")
    value = getattr(importlib.import_module(parent), last, None) if parent else None
    return value is not None and not isinstance(value, _MODULE)


def modules_page_lines(packages: list[str], documented: set[str]) -> list[str]:
    """rst of the modules not in DOCUMENTED: one ``automodule`` (docstring only) each;
    a module hidden by a function of its name is left out (the name is the function's)."""
    lines = []
    for name in every_module(packages):
        if name in documented or shadowed(name):
            continue
        lines += [name, "-" * len(name), "", f".. automodule:: {name}", "   :no-members:", ""]
    return lines


class ModulesDirective(Directive):
    """``.. gaussmix-modules:: gaussmix gaussmix.models gaussmix.inference``."""

    required_arguments = 1
    final_argument_whitespace = True

    def run(self):
        env = self.state.document.settings.env
        pages = site_pages(Path(env.srcdir))
        lines = modules_page_lines(self.arguments[0].split(), automodules(pages))
        for page in pages:
            env.note_dependency(str(page))
        container = nodes.container()
        nested_parse_with_titles(self.state, StringList(lines, "gaussmix-modules"), container)
        return container.children


# --- references -------------------------------------------------------------------------


class _Field:
    """An annotated attribute of a class that has no class attribute of that name."""

    def __init__(self, owner: type, name: str):
        self.owner, self.name = owner, name


def import_name(name: str):
    """The object NAME denotes (a module, or attributes of one), or _MISSING. An
    annotated field of a class without a class attribute (a dataclass's field without a
    default) is a :class:`_Field`."""
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            value = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for index, attribute in enumerate(parts[cut:], cut):
            owner, value = value, getattr(value, attribute, _MISSING)
            if value is _MISSING:
                annotated = isinstance(owner, type) and any(
                    attribute in getattr(k, "__annotations__", {}) for k in owner.__mro__
                )
                return _Field(owner, attribute) if annotated and index == len(parts) - 1 else value
        return value
    return _MISSING


def candidates(target: str, node) -> list[str]:
    """Full names TARGET may denote: itself when it is a gaussmix name, else relative to
    the object whose docstring refers to it and its enclosing class and modules
    (innermost first), then to the page's current class and module."""
    target = target.lstrip("~.")
    if target.split(".")[0] == PACKAGE:
        return [target]
    scopes = []
    found = _DOCSTRING_OF.search(node.source or "")
    if found:
        parts = found.group(1).split(".")
        scopes += [".".join(parts[:cut]) for cut in range(len(parts), 1, -1)]
    module, klass = node.get("py:module"), node.get("py:class")
    if module:
        scopes += [f"{module}.{klass}", module] if klass else [module]
    scopes = [scope for scope in scopes if scope.split(".")[0] == PACKAGE]
    return [f"{scope}.{target}" for scope in dict.fromkeys(scopes)]


def documented_objects(app) -> dict[int, str]:
    """id(object) -> the name a function, class or method is documented under; built
    once per build, when the first reference is resolved (all pages are read)."""
    cache = getattr(app, "_gaussmix_documented", None)
    if cache is None:
        cache = {}
        for name, entry in sorted(app.env.get_domain("py").objects.items()):
            if entry.objtype in ("function", "class", "exception", "method") and not entry.aliased:
                value = import_name(name)
                if value is not _MISSING and not isinstance(value, _Field):
                    cache.setdefault(id(value), name)
        app._gaussmix_documented = cache
    return cache


def resolve_missing(app, env, node, contnode):
    """Sphinx's ``missing-reference``: see the module docstring."""
    if node.get("refdomain") != "py":
        return None
    domain = env.get_domain("py")
    documented = documented_objects(app)
    for name in candidates(node["reftarget"], node):
        value = import_name(name)
        if value is _MISSING:
            continue
        if isinstance(value, _Field):
            owner = value.owner
        else:
            parent = import_name(name.rpartition(".")[0]) if "." in name else None
            owner = parent if isinstance(parent, type) else None
        if isinstance(value, _MODULE):
            target, role = value.__name__, "mod"
        elif callable(value) and id(value) in documented:
            target, role = documented[id(value)], "obj"
        elif owner is not None and id(owner) in documented:
            # an attribute of a documented class: its entry, else the class's
            target, role = f"{documented[id(owner)]}.{name.rpartition('.')[2]}", "obj"
            if target not in domain.objects:
                target = documented[id(owner)]
        else:
            defined_in = getattr(value, "__module__", None) if callable(value) else None
            target, role = defined_in or name.rpartition(".")[0], "mod"
            while target and target not in domain.modules:
                target = target.rpartition(".")[0]  # a class's attribute: the module
        if target:
            builder = app.builder
            return domain.resolve_xref(env, node["refdoc"], builder, role, target, node, contnode)
    return None


# --- napoleon's attribute lists ---------------------------------------------------------


def split_attribute_lists(app, what, name, obj, options, lines) -> None:
    """``autodoc-process-docstring`` after napoleon: ``:ivar a, b: text`` (an
    ``Attributes:`` entry naming several attributes) becomes one ``:ivar:`` per name,
    as napoleon itself does for ``Args:`` (Sphinx would read ``a,`` as a type)."""
    index = 0
    while index < len(lines):
        match = _IVAR.match(lines[index])
        if not match:
            index += 1
            continue
        indent, names, first = match.groups()
        end = index + 1
        while end < len(lines) and (not lines[end].strip() or lines[end].startswith(indent + " ")):
            end += 1
        while end > index + 1 and not lines[end - 1].strip():
            end -= 1
        body = lines[index + 1 : end]
        block = []
        for attribute in names.split(", "):
            block += [f"{indent}:ivar {attribute}:{first}", *body]
        lines[index:end] = block
        index += len(block)


def setup(app):
    app.add_directive("gaussmix-modules", ModulesDirective)
    app.connect("missing-reference", resolve_missing)
    app.connect("autodoc-process-docstring", split_attribute_lists, priority=600)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
