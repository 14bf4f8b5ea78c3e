#!/usr/bin/env python
"""Mutation check: the test suite must fail on small deliberate errors in the numerics.

Each mutation below is a tiny, plausible slip (a covariance off by 1e-6 relative, a constant
off in its 7th digit, a sign, an off-by-one) applied as an exact text replacement to one
source file of a temporary copy of the project. The tests named for it then run on that
copy and must fail ("killed"); a mutation under which they still pass ("survived") shows a
regression the suite cannot see. Before any mutation, all the named tests run once on an
unmutated copy and must pass with nothing skipped, otherwise the check would prove nothing.

How the copy is imported. The project is installed in editable mode: setuptools' finder
maps ``gaussmix``, ``gaussmix.models`` and ``gaussmix.inference`` to the working tree, but
it sits at the end of ``sys.meta_path``, after the ordinary path finder. So the copy lays
the packages out as a wheel would (``site/gaussmix``, ``site/gaussmix/models``,
``site/gaussmix/inference``, read from ``[tool.setuptools] package-dir`` in
pyproject.toml) and runs pytest with ``PYTHONPATH=site``: the path finder answers first for
all three packages. After the tests, the runner checks that every imported ``gaussmix``
module, and the mutated module itself, came from the copy; a selection that did not
import the mutated module is an error, not a kill.

A snippet that is not found exactly once in its file stops the check with an error: when
the code moves, the mutation must be updated, never silently skipped.

Usage::

    .venv/bin/python scripts/mutation_check.py            # all mutations (exit 1 if any survives)
    .venv/bin/python scripts/mutation_check.py --list     # the mutations and their tests
    .venv/bin/python scripts/mutation_check.py --only fwhm-constant --verbose
    .venv/bin/python scripts/mutation_check.py --only chunk-boundary --tests NODEID  # try a test

Exit status: 0 when the baseline passes and every mutation is killed; 1 when a mutation
survives or the baseline fails; 2 on bad usage or a mutation that no longer applies.
"""

import argparse
import concurrent.futures
import dataclasses
import os
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
import xml.etree.ElementTree as ElementTree
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclasses.dataclass(frozen=True)
class Mutation:
    """One deliberate error.

    Attributes:
        name: short identifier (``--only``).
        path: the source file, relative to the repository root (e.g. ``inference/em/maximization.py``).
        original: the exact text replaced; it must occur exactly once in ``path``.
        mutated: the text put in its place.
        description: what the error is, in words.
        tests: pytest node ids (relative to the repository root) expected to kill it.
    """

    name: str
    path: str
    original: str
    mutated: str
    description: str
    tests: tuple[str, ...]


MUTATIONS: tuple[Mutation, ...] = (
    Mutation(
        name="covariance-m-step",
        path="inference/em/maximization.py",
        original="covariances = scatter / regularized_counts[:, None, None] + reg_covar",
        mutated="covariances = scatter / regularized_counts[:, None, None] * (1 + 1e-6) + reg_covar",
        description="full-covariance maximum-likelihood M-step off by 1e-6 relative",
        tests=(
            "tests/inference/test_em.py::"
            "test_matches_scikit_learn_at_every_iteration[full-one-block]",
        ),
    ),
    Mutation(
        name="fwhm-constant",
        path="models/lineshapes.py",
        original="GAUSSIAN_FWHM = 2.0 * math.sqrt(2.0 * math.log(2.0))",
        mutated="GAUSSIAN_FWHM = 2.354821",  # 2.35482004503...: the 7th digit off by one
        description="Gaussian FWHM constant 2 sqrt(2 ln 2) off in the 7th digit (4e-7 relative)",
        tests=(
            "tests/models/test_lineshapes.py::test_height_and_fwhm_match_a_root_finder[gaussian]",
        ),
    ),
    Mutation(
        name="prior-gradient-sign",
        path="inference/map/levenberg_marquardt.py",
        original="gradient = -(jacobian.T @ score) - unit * prior_gradient",
        mutated="gradient = -(jacobian.T @ score) + unit * prior_gradient",
        description="wrong sign of the log prior's gradient in the peak MAP (Levenberg-Marquardt)",
        tests=(
            "tests/inference/test_map.py::"
            "test_conjugate_linear_model_gives_the_exact_posterior_mode_and_covariance",
        ),
    ),
    Mutation(
        name="chunk-boundary",
        path="inference/streaming/chunks.py",
        original=(
            "x = np.array(array[start : start + rows])\n"
            "            w = None if weight is None else np.array(weight[start : start + rows])"
        ),
        mutated=(
            "x = np.array(array[start : start + rows + 1])\n"
            "            w = None if weight is None else np.array(weight[start : start + rows + 1])"
        ),
        description="out-of-core chunk reader: each chunk ends one row late (rows read twice)",
        tests=(
            "tests/inference/test_streaming.py::test_chunk_source_reads_memmap_in_bounded_chunks",
        ),
    ),
    Mutation(
        name="online-share",
        path="inference/streaming/online.py",
        original="share = chunk.total_weight / (state.total_weight + chunk.total_weight)",
        mutated=(
            "share = chunk.total_weight / (state.total_weight + chunk.total_weight) * (1 + 1e-6)"
        ),
        description="online EM continuing a fit: a chunk's share of all weight off by 1e-6 "
        "relative",
        tests=(
            "tests/inference/test_streaming.py::"
            "test_continuing_a_fit_a_chunk_moves_the_model_by_its_share[full]",
        ),
    ),
    Mutation(
        name="inverse-wishart-mode",
        path="inference/em/maximization.py",
        original="covariances = numerator / (counts + nu + n_features + 2)[:, None, None]",
        mutated="covariances = numerator / (counts + nu + n_features + 1)[:, None, None]",
        description="conjugate MAP M-step: inverse-Wishart mode's denominator off by one",
        tests=(
            "tests/inference/test_em.py::"
            "test_default_map_is_a_stationary_point_of_the_program[full]",
        ),
    ),
    Mutation(
        name="log-2pi-constant",
        path="inference/em/parameters.py",
        original="LOG_2PI = math.log(2.0 * math.pi)",
        mutated="LOG_2PI = math.log(6.283185)",  # 2 pi = 6.2831853...: 5e-8 relative
        description="Gaussian normalizing constant log(2 pi) from 2 pi cut to 7 digits "
        "(moves only the log-likelihood and lower bound, not the fit)",
        tests=(
            "tests/inference/test_em.py::"
            "test_matches_scikit_learn_at_every_iteration[diag-one-block]",
        ),
    ),
)

#: Run in the subprocess: pytest, then where every imported gaussmix module came from.
_RUNNER = """
import sys
from pathlib import Path

import pytest

site, module, report, *arguments = sys.argv[1:]
status = pytest.main(arguments)
site = Path(site).resolve()
outside = sorted(
    name for name, loaded in list(sys.modules.items())
    if (name == "gaussmix" or name.startswith("gaussmix."))
    and getattr(loaded, "__file__", None)
    and not Path(loaded.__file__).resolve().is_relative_to(site)
)
mutated = sys.modules.get(module)
lines = []
if outside:
    lines.append("imported from outside the copy: " + ", ".join(outside))
if mutated is None:
    lines.append(f"the tests never imported {module}")
Path(report).write_text("\\n".join(lines))
sys.exit(status if not lines else 3)
"""


class MutationError(Exception):
    """A mutation that no longer applies, or a copy that cannot be made."""


def package_directories(root: Path) -> dict[str, Path]:
    """Package name -> its source folder, from ``[tool.setuptools] package-dir``."""
    with open(root / "pyproject.toml", "rb") as file:
        setuptools = tomllib.load(file)["tool"]["setuptools"]
    mapping = setuptools.get("package-dir", {})

    def folder(name: str) -> Path:
        # setuptools' rule: the longest mapped parent, then the rest of the name as folders
        parts = name.split(".")
        for cut in range(len(parts), 0, -1):
            parent = ".".join(parts[:cut])
            if parent in mapping:
                return root / mapping[parent] / "/".join(parts[cut:])
        return root / "/".join(parts)

    return {name: folder(name) for name in setuptools["packages"]}


def _ignored(directory: str, names: list[str]) -> set[str]:
    return {
        name
        for name in names
        if name in {"__pycache__", ".pytest_cache", ".hypothesis", ".ruff_cache"}
        or name.endswith(".pyc")
    }


def make_copy(destination: Path) -> tuple[Path, dict[str, Path]]:
    """Copy the packages (as installed: ``site/gaussmix/models``, ...), tests/ and
    pyproject.toml into ``destination``; return the site folder and a map from each
    source folder of the repository to its place in the copy."""
    site = destination / "site"
    places = {}
    for name, source in sorted(
        package_directories(ROOT).items(), key=lambda item: item[0].count(".")
    ):
        target = site.joinpath(*name.split("."))
        shutil.copytree(source, target, ignore=_ignored, dirs_exist_ok=True)
        places[source.relative_to(ROOT).as_posix()] = target
    shutil.copytree(ROOT / "tests", destination / "tests", ignore=_ignored)
    shutil.copy2(ROOT / "pyproject.toml", destination / "pyproject.toml")
    return site, places


def locate(mutation: Mutation, places: dict[str, Path], site: Path) -> tuple[Path, str]:
    """The copied file a mutation edits, and its module name."""
    folder, _, filename = mutation.path.rpartition("/")
    if folder not in places:
        raise MutationError(f"{mutation.name}: {mutation.path} is not in a package of the project")
    target = places[folder] / filename
    module = ".".join(target.relative_to(site).with_suffix("").parts)
    return target, module


def apply(mutation: Mutation, target: Path) -> None:
    """Replace the snippet (exactly one occurrence) and check the result still compiles."""
    text = target.read_text()
    count = text.count(mutation.original)
    if count != 1:
        raise MutationError(
            f"{mutation.name}: the snippet occurs {count} times in {mutation.path} (expected "
            f"exactly once); update the mutation to the current code:\n    {mutation.original!r}"
        )
    mutated = text.replace(mutation.original, mutation.mutated)
    try:
        compile(mutated, str(target), "exec")
    except SyntaxError as error:
        raise MutationError(
            f"{mutation.name}: the mutated file does not compile: {error}"
        ) from error
    target.write_text(mutated)


@dataclasses.dataclass
class Outcome:
    status: int
    tests: int
    failed: int
    skipped: int
    seconds: float
    output: str
    problem: str


def run_tests(copy: Path, site: Path, module: str, tests: tuple[str, ...]) -> Outcome:
    """Run ``tests`` with pytest inside ``copy`` (the copy's packages imported)."""
    report, junit = copy / "import-report.txt", copy / "junit.xml"
    environment = dict(os.environ)
    environment["PYTHONPATH"] = os.pathsep.join(
        [str(site), *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    environment["PYTHONDONTWRITEBYTECODE"] = "1"
    # tests/conftest.py finds ../shared/data from its own place; point it at the real one.
    environment.setdefault("GAUSSMIX_DATA", str(ROOT.parent / "shared" / "data"))
    command = [
        sys.executable, "-c", _RUNNER, str(site), module, str(report),
        "-x", "-q", "-p", "no:cacheprovider", f"--junitxml={junit}", *tests,
    ]  # fmt: skip
    start = time.perf_counter()
    completed = subprocess.run(
        command, cwd=copy, env=environment, capture_output=True, text=True, check=False
    )
    seconds = time.perf_counter() - start
    counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    if junit.exists():
        suite = ElementTree.parse(junit).getroot()
        suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
        counts = {key: int(suite.get(key, 0)) for key in counts}
    return Outcome(
        status=completed.returncode,
        tests=counts["tests"],
        failed=counts["failures"] + counts["errors"],
        skipped=counts["skipped"],
        seconds=seconds,
        output=completed.stdout + completed.stderr,
        problem=report.read_text() if report.exists() else "the runner wrote no import report",
    )


def check_snippets(mutations: tuple[Mutation, ...]) -> None:
    """Every snippet occurs exactly once in the repository's file (before any copy is made)."""
    for mutation in mutations:
        count = (ROOT / mutation.path).read_text().count(mutation.original)
        if count != 1:
            raise MutationError(
                f"{mutation.name}: the snippet occurs {count} times in {mutation.path} "
                f"(expected exactly once); update the mutation to the current code:\n"
                f"    {mutation.original!r}"
            )


def _baseline(copy: Path, tests: tuple[str, ...]) -> tuple[tuple, str, bool]:
    site, _ = make_copy(copy)
    outcome = run_tests(copy, site, "gaussmix", tests)
    failed = bool(
        outcome.status != 0
        or outcome.failed
        or outcome.skipped
        or not outcome.tests
        or outcome.problem
    )
    verdict = "BASELINE FAILED" if failed else "passes"
    text = f"--- baseline: the unmutated tests\n{outcome.output}{outcome.problem}\n"
    return ("(none: baseline)", outcome.tests, verdict, outcome.seconds), text, failed


def _mutant(copy: Path, mutation: Mutation) -> tuple[tuple, str, bool]:
    site, places = make_copy(copy)
    target, module = locate(mutation, places, site)
    apply(mutation, target)
    outcome = run_tests(copy, site, module, mutation.tests)
    if outcome.problem:
        verdict = "ERROR"
    elif outcome.failed:
        verdict = "killed"
    elif outcome.status == 0:
        verdict = "SURVIVED"
    else:
        verdict = f"ERROR (pytest exit {outcome.status})"
    text = f"--- {mutation.name}: {mutation.description}\n{outcome.output}{outcome.problem}\n"
    shutil.rmtree(copy)
    return (mutation.name, outcome.tests, verdict, outcome.seconds), text, verdict != "killed"


def check(mutations: tuple[Mutation, ...], *, jobs: int = 2, verbose: bool = False) -> int:
    """The baseline and each mutation (``jobs`` pytest processes at a time); print a table;
    return the exit status (0: baseline passes and every mutant is killed, else 1)."""
    check_snippets(mutations)
    start = time.perf_counter()
    all_tests = tuple(dict.fromkeys(test for m in mutations for test in m.tests))
    with tempfile.TemporaryDirectory(prefix="gaussmix-mutation-") as scratch:
        scratch = Path(scratch)
        with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
            futures = [pool.submit(_baseline, scratch / "baseline", all_tests)]
            futures += [
                pool.submit(_mutant, scratch / f"mutant-{index}", mutation)
                for index, mutation in enumerate(mutations)
            ]
            results = [future.result() for future in futures]
    rows = [row for row, _, _ in results]
    failed = any(bad for _, _, bad in results)
    for _, text, bad in results:
        if verbose or bad:
            print(text)
    width = max(len(row[0]) for row in rows)
    print(f"{'mutation':<{width}}  {'tests run':>9}  {'result':<16}  {'seconds':>7}")
    for name, tests, verdict, seconds in rows:
        print(f"{name:<{width}}  {tests:>9}  {verdict:<16}  {seconds:>7.1f}")
    print(f"{'(wall time)':<{width}}  {'':>9}  {'':<16}  {time.perf_counter() - start:>7.1f}")
    if failed:
        print("mutation check FAILED: see the output above.")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--list", action="store_true", help="print the mutations and exit")
    parser.add_argument(
        "--only", action="append", default=[], metavar="NAME", help="run this mutation only"
    )
    parser.add_argument(
        "--tests",
        action="append",
        default=[],
        metavar="NODEID",
        help="with one --only: try these tests instead of the mutation's own (to find which "
        "tests kill it)",
    )
    parser.add_argument(
        "--jobs", type=int, default=2, help="pytest processes at a time (default: 2)"
    )
    parser.add_argument("--verbose", action="store_true", help="print pytest's output")
    arguments = parser.parse_args(argv)
    if arguments.jobs < 1:
        print(f"error: --jobs must be at least 1, got {arguments.jobs}", file=sys.stderr)
        return 2
    names = {mutation.name for mutation in MUTATIONS}
    unknown = sorted(set(arguments.only) - names)
    if unknown:
        print(
            f"error: unknown mutation {', '.join(unknown)}; choose from {', '.join(sorted(names))}",
            file=sys.stderr,
        )
        return 2
    mutations = tuple(m for m in MUTATIONS if not arguments.only or m.name in arguments.only)
    if arguments.tests:
        if len(mutations) != 1:
            print("error: --tests needs exactly one --only NAME", file=sys.stderr)
            return 2
        mutations = (dataclasses.replace(mutations[0], tests=tuple(arguments.tests)),)
    if arguments.list:
        for mutation in mutations:
            print(f"{mutation.name}: {mutation.description} ({mutation.path})")
            for test in mutation.tests:
                print(f"    {test}")
        return 0
    try:
        return check(mutations, jobs=arguments.jobs, verbose=arguments.verbose)
    except MutationError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
