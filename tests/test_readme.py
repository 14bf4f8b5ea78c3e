"""The README's tour is code a newcomer copies first: it must run as written."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def tour_blocks() -> list[str]:
    """The python code blocks of the README's "A short tour" section, in order."""
    text = README.read_text()
    section = text[text.index("## A short tour") :]
    section = section[: section.index("\n## ", 1)]
    return re.findall(r"```python\n(.*?)```", section, re.S)


@pytest.mark.slow
def test_readme_tour_runs_as_written():
    blocks = tour_blocks()
    assert len(blocks) >= 2, "the tour lost its code blocks"
    namespace: dict = {"__name__": "readme_tour"}
    for block in blocks:  # later blocks use names the earlier ones defined
        exec(compile(block, str(README), "exec"), namespace)
    assert namespace["model"].converged_
    assert namespace["best"].n_components == 4  # SM2 has four clusters
    assert bool(namespace["fit"].converged.all())
