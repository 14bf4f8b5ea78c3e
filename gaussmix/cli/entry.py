"""The ``gaussmix`` command's entry point: parse, run one command, map errors to exit codes."""

import errno
import os
import signal
import sys
from collections.abc import Sequence

from gaussmix.cli.arguments import build_parser
from gaussmix.cli.demo import demo_command
from gaussmix.cli.errors import EXIT_USAGE, UsageError
from gaussmix.cli.fit_mixture import fit_mixture_command
from gaussmix.cli.fit_peaks import fit_peaks_command
from gaussmix.cli.output import EXIT_INTERRUPTED, INTERRUPTS

#: What each command runs, by its name on the command line.
COMMANDS = {
    "fit-mixture": fit_mixture_command,
    "fit-peaks": fit_peaks_command,
    "demo": demo_command,
}


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


#: What to do about an operating-system error, by errno.
_OS_ERROR_FIXES = {
    errno.ENOSPC: "free some disk space or choose another --out",
    errno.EDQUOT: "free some of your disk quota or choose another --out",
    errno.EROFS: "the file system is read-only; choose another --out",
    errno.EACCES: "check the permissions or choose another path",
    errno.EPERM: "check the permissions or choose another path",
}


def _os_error_line(error: OSError) -> str:
    """'Permission denied: /x/y; check the permissions or choose another path'."""
    reason = error.strerror or _one_line(error)
    where = f": {error.filename}" if error.filename is not None else ""
    fix = _OS_ERROR_FIXES.get(error.errno, "check the path and try again")
    return f"{reason}{where}; {fix}"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; returns the exit code.

    0 on success; 2 for bad input or an operating-system error (one line on stderr);
    130 after SIGINT and 143 after SIGTERM (one line on stderr; nothing half-written
    is left). SIGINT and SIGTERM handlers are installed for the run only and the previous
    ones put back.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser().parse_args(argv)
    except UsageError as error:
        print(f"gaussmix: error: {_one_line(error)}", file=sys.stderr)
        return EXIT_USAGE
    except SystemExit as exit_:  # --help
        return int(exit_.code or 0)
    args.command_line = ["gaussmix", *argv]
    try:
        with INTERRUPTS.installed():
            return COMMANDS[args.command](args)
    except KeyboardInterrupt as interrupt:
        number = getattr(interrupt, "signal_number", signal.SIGINT)
        out = getattr(args, "out", None)
        if getattr(interrupt, "written", None) is not None:
            what = f"interrupted after {out} was written"
        else:
            what = "interrupted; nothing was written" + (f" to {out}" if out else "")
        print(f"gaussmix {args.command}: {what}", file=sys.stderr)
        return EXIT_INTERRUPTED[number]
    except (UsageError, ValueError, OSError) as error:
        if os.environ.get("GAUSSMIX_DEBUG"):
            raise
        line = _os_error_line(error) if isinstance(error, OSError) else _one_line(error)
        print(f"gaussmix {args.command}: error: {line}", file=sys.stderr)
        return EXIT_USAGE
