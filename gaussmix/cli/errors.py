"""The error every command reports as one line with exit code 2."""


class UsageError(Exception):
    """Bad input on the command line: reported as one line with exit code 2."""


#: Exit code of bad input (argparse's convention).
EXIT_USAGE = 2
