"""The mutation check (scripts/mutation_check.py): the suite fails on each small deliberate
error in the numerics. See tests/README.md for the mutations and the tests that catch them."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "mutation_check.py"


def load_script():
    specification = importlib.util.spec_from_file_location("mutation_check", SCRIPT)
    module = importlib.util.module_from_spec(specification)
    specification.loader.exec_module(module)
    return module


def run_script(*arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *arguments],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.mark.slow
def test_every_mutation_is_killed_and_the_baseline_passes():
    """Exit 0 only when the unmutated tests pass in the copy and every mutant fails them."""
    completed = run_script()
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output
    table = completed.stdout.splitlines()
    assert any(line.startswith("(none: baseline)") and " passes " in line for line in table)
    for mutation in load_script().MUTATIONS:
        row = [line for line in table if line.startswith(mutation.name + " ")]
        assert len(row) == 1 and " killed " in row[0], output


@pytest.mark.slow
def test_a_mutant_that_the_tests_miss_fails_the_check():
    """The check can fail: the Lorentzian's FWHM does not use the Gaussian constant, so its
    test passes under the fwhm-constant mutation, which must then be reported as survived."""
    completed = run_script(
        "--only",
        "fwhm-constant",
        "--tests",
        "tests/models/test_lineshapes.py::test_height_and_fwhm_match_a_root_finder[lorentzian]",
    )
    assert completed.returncode == 1, completed.stdout + completed.stderr
    assert "SURVIVED" in completed.stdout


def test_every_mutation_still_applies_to_the_code():
    """Each snippet occurs exactly once in its file (else the check would test nothing)."""
    mutations = load_script().MUTATIONS
    assert len(mutations) >= 4
    for mutation in mutations:
        text = (ROOT / mutation.path).read_text()
        assert text.count(mutation.original) == 1, mutation.name
        assert mutation.original != mutation.mutated, mutation.name
        assert mutation.tests, mutation.name


def test_a_snippet_that_moved_is_an_error_not_a_skip(tmp_path):
    script = load_script()
    mutation = script.MUTATIONS[0]
    target = tmp_path / "em.py"
    target.write_text("nothing to mutate here\n")
    with pytest.raises(script.MutationError, match="occurs 0 times"):
        script.apply(mutation, target)
    target.write_text(mutation.original + "\n" + mutation.original + "\n")
    with pytest.raises(script.MutationError, match="occurs 2 times"):
        script.apply(mutation, target)


def test_an_unknown_mutation_is_refused_with_the_choices():
    completed = run_script("--only", "no-such-mutation")
    assert completed.returncode == 2
    assert "unknown mutation no-such-mutation; choose from" in completed.stderr
