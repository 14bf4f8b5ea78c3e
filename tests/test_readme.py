"""The README's tour is code a newcomer copies first: it must run as written."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def tour_blocks() -> list[str]:
    """The python code blocks of the README's "A short tour" section, in order."""
    text = README.read_text()
    section = text[text.index("## A short tour") :]
    section = section[: section.index("\n## ", 1)]
    return re.findall(r"```python\n(.*?)```", section, re.S)


CHECKS = """
assert model.converged_
assert best.n_components == 4  # SM2 has four clusters
assert bool(fit.converged.all())
"""


@pytest.mark.slow
def test_readme_tour_runs_as_written(tmp_path):
    blocks = tour_blocks()
    assert len(blocks) >= 2, "the tour lost its code blocks"
    # A fresh interpreter, as a newcomer runs it (later blocks use the earlier ones' names).
    script = tmp_path / "tour.py"
    script.write_text("\n".join(blocks) + CHECKS)
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, done.stderr[-4000:]
