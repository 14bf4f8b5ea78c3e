"""The ``gaussmix-cli-help`` directive: the ``gaussmix`` command's ``--help`` text.

``.. gaussmix-cli-help:: fit-peaks`` renders what ``gaussmix fit-peaks --help`` prints,
produced by the command's own parser (:func:`gaussmix.cli.entry.main`) at a fixed width,
so the site and the command cannot disagree (tests/test_docs.py compares the two).
Without an argument it renders ``gaussmix --help``.
"""

import contextlib
import io
import os

from docutils import nodes
from docutils.parsers.rst import Directive

#: Terminal width the help is formatted for (argparse reads $COLUMNS).
HELP_COLUMNS = 88


def help_text(*command: str) -> str:
    """What ``gaussmix [COMMAND] --help`` prints on a terminal HELP_COLUMNS wide."""
    from gaussmix.cli.entry import main

    saved = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = str(HELP_COLUMNS)
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            code = main([*command, "--help"])
    finally:
        if saved is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = saved
    if code != 0:
        raise RuntimeError(f"gaussmix {' '.join(command)} --help exited with {code}")
    return out.getvalue()


def commands() -> list[str]:
    """The subcommands, in the order the command lists them."""
    from gaussmix.cli.entry import COMMANDS

    return list(COMMANDS)


class CliHelp(Directive):
    optional_arguments = 1
    has_content = False

    def run(self):
        text = help_text(*self.arguments)
        block = nodes.literal_block(text, text)
        block["language"] = "text"
        return [block]


def setup(app):
    app.add_directive("gaussmix-cli-help", CliHelp)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
