"""Writing --out safely: a temporary folder moved into place at the end, a manifest of
what gaussmix wrote, and SIGINT/SIGTERM held off while files move (see the package's
docstring for the contract)."""

import contextlib
import hashlib
import json
import os
import shutil
import signal
import stat
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from gaussmix.cli.errors import UsageError

#: The file in an output folder that lists what gaussmix wrote there.
MANIFEST_NAME = "gaussmix-manifest.json"


#: The manifest's ``format`` and ``version`` fields.
MANIFEST_FORMAT = "gaussmix-manifest"


MANIFEST_VERSION = 1


#: Largest manifest read (a real one lists a few dozen files).
_MANIFEST_BYTES = 1 << 22


#: The temporary folder a run writes into, inside the output folder.
_TEMPORARY_PREFIX = ".gaussmix-"


_TEMPORARY_SUFFIX = ".partial"


_INTERRUPT_SIGNALS = (signal.SIGINT, signal.SIGTERM)


#: Exit code of an interrupted run: 128 + the signal's number (130 SIGINT, 143 SIGTERM).
EXIT_INTERRUPTED = {signal.SIGINT: 130, signal.SIGTERM: 143}


class _Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM received while :func:`main` ran (its handler raises this)."""

    def __init__(self, signal_number: int) -> None:
        super().__init__(signal.Signals(signal_number).name)
        self.signal_number = signal_number


class _InterruptHandler:
    """The SIGINT and SIGTERM handler :func:`main` installs while it runs.

    It raises :class:`_Interrupted`; inside :meth:`deferred` it records the signal instead
    and the block raises it at its end. A signal sent to the process may be delivered to
    any of its threads (JAX runs several), so blocking it in the main thread alone cannot
    hold it off; Python runs handlers in the main thread, so the handler can.
    """

    def __init__(self) -> None:
        self.depth = 0
        self.pending: int | None = None

    def __call__(self, signal_number: int, frame: Any) -> None:
        if self.depth:
            self.pending = self.pending or signal_number
            return
        raise _Interrupted(signal_number)

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        """SIGINT and SIGTERM wait until the block ends (blocked in this thread, deferred
        by the handler when :func:`main` installed it), then raise."""
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, _INTERRUPT_SIGNALS)
        self.depth += 1
        try:
            yield
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            _run_signal_handlers()
            self.depth -= 1
            if not self.depth and self.pending is not None:
                pending, self.pending = self.pending, None
                raise _Interrupted(pending)

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        """Handle SIGINT and SIGTERM during the block (main thread only; a signal the
        caller ignores or handles itself is left alone); the previous handlers return."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {}
        for number, default in (
            (signal.SIGINT, signal.default_int_handler),
            (signal.SIGTERM, signal.SIG_DFL),
        ):
            if signal.getsignal(number) is default:
                previous[number] = signal.signal(number, self)
        try:
            yield
        finally:
            for number, handler in previous.items():
                signal.signal(number, handler)
            self.pending = None


def _run_signal_handlers() -> None:
    """Calling a Python function lets the interpreter run handlers of signals just
    unblocked, here rather than at some later line."""


INTERRUPTS = _InterruptHandler()


def _digest(path: Path) -> tuple[int, str]:
    """(size in bytes, SHA-256 in hex) of a file."""
    hasher = hashlib.sha256()
    size = 0
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            hasher.update(block)
            size += len(block)
    return size, hasher.hexdigest()


def _plain_name(name: Any) -> bool:
    """Whether ``name`` is a path inside a folder as a manifest may list it: relative,
    '/'-separated, no empty, '.' or '..' parts, no backslash or NUL, not the manifest
    itself nor inside a temporary folder."""
    if not isinstance(name, str) or not name or "\\" in name or "\0" in name:
        return False
    parts = name.split("/")
    return (
        all(part not in ("", ".", "..") for part in parts)
        and name != MANIFEST_NAME
        and not parts[0].startswith(_TEMPORARY_PREFIX)
    )


def _kind(folder: Path, name: str) -> str:
    """'missing', 'file' (a regular file reached without symbolic links), or 'other'."""
    path = folder
    parts = name.split("/")
    for index, part in enumerate(parts):
        path = path / part
        try:
            mode = os.lstat(path).st_mode
        except FileNotFoundError:
            return "missing"
        except OSError:
            return "other"
        if index == len(parts) - 1:
            return "file" if stat.S_ISREG(mode) else "other"
        if not stat.S_ISDIR(mode):
            return "other"
    return "other"


def read_manifest(folder: str | os.PathLike) -> tuple[dict[str, tuple[int, str]], str | None]:
    """The files an earlier run listed in ``folder``'s manifest, and what is wrong with it.

    Returns:
        ``({name: (size, sha256)}, None)`` for a valid manifest, ``({}, None)`` when there
        is none, and ``({}, reason)`` when the file is there but is not a manifest gaussmix
        wrote (damaged, foreign, or listing a name outside the folder): it lists nothing.

    Example:
        >>> import tempfile
        >>> read_manifest(tempfile.mkdtemp())
        ({}, None)
    """
    path = Path(folder) / MANIFEST_NAME
    kind = _kind(Path(folder), MANIFEST_NAME)
    if kind == "missing":
        return {}, None
    if kind != "file":
        return {}, "it is not a regular file"
    try:
        with open(path, "rb") as file:
            text = file.read(_MANIFEST_BYTES + 1)
    except OSError as error:
        return {}, f"it cannot be read: {error.strerror}"
    if len(text) > _MANIFEST_BYTES:
        return {}, "it is too large"
    try:
        manifest = json.loads(text.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return {}, "it is not JSON"
    if (
        not isinstance(manifest, dict)
        or manifest.get("format") != MANIFEST_FORMAT
        or manifest.get("version") != MANIFEST_VERSION
        or not isinstance(manifest.get("files"), list)
    ):
        return {}, f"it is not a {MANIFEST_FORMAT} version {MANIFEST_VERSION}"
    entries: dict[str, tuple[int, str]] = {}
    for entry in manifest["files"]:
        name = entry.get("name") if isinstance(entry, dict) else None
        if not _plain_name(name):
            return {}, f"it lists {str(name)[:60]!r}, not a file name inside the folder"
        size, sha256 = entry.get("size"), entry.get("sha256")
        if (
            type(size) is not int
            or size < 0
            or not isinstance(sha256, str)
            or len(sha256) != 64
            or any(c not in "0123456789abcdef" for c in sha256)
            or name in entries
        ):
            return {}, f"its entry for {name!r} is damaged"
        entries[name] = (size, sha256)
    return entries, None


def _check_folder(destination: Path, names: Sequence[str]) -> dict[str, tuple[int, str]]:
    """The manifest's entries, after checking that writing ``names`` into ``destination``
    replaces only files gaussmix wrote there and the user has not changed since.

    Raises:
        UsageError: naming the first file in the way and what to do.
    """
    fix = "move it out of the folder or choose another --out"
    entries, problem = read_manifest(destination)
    if problem is not None:
        raise UsageError(
            f"--out {destination}: {MANIFEST_NAME} is not a manifest gaussmix wrote ({problem}); "
            f"{fix}"
        )
    for name, recorded in entries.items():
        kind = _kind(destination, name)
        if kind == "missing":
            continue
        if kind != "file" or _digest(destination / name) != recorded:
            raise UsageError(
                f"--out {destination}: {name} was changed since gaussmix wrote it; {fix}"
            )
    for name in names:
        if name not in entries and _kind(destination, name) != "missing":
            raise UsageError(
                f"--out {destination}: {name} exists and gaussmix did not write it "
                f"(its {MANIFEST_NAME} does not list it); {fix}"
            )
    return entries


def _written_files(folder: Path) -> list[str]:
    """Every file under ``folder``, as '/'-separated paths relative to it."""
    names = []
    for root, _, files in os.walk(folder):
        for file in files:
            names.append(Path(root, file).relative_to(folder).as_posix())
    return sorted(names)


def _manifest(folder: Path, names: Sequence[str], command: Sequence[str]) -> bytes:
    """The manifest of the files ``names`` in ``folder``."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        gaussmix_version = version("gaussmix")
    except PackageNotFoundError:
        gaussmix_version = None
    files = []
    for name in names:
        size, sha256 = _digest(folder / name)
        files.append({"name": name, "size": size, "sha256": sha256})
    manifest = {
        "format": MANIFEST_FORMAT,
        "version": MANIFEST_VERSION,
        "command": list(command),
        "gaussmix_version": gaussmix_version,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "files": files,
    }
    return (json.dumps(manifest, indent=1) + "\n").encode("utf-8")


def _remove_empty_folders(folder: Path, name: str) -> None:
    """Remove the folders on the way to ``folder/name`` that are left empty."""
    parent = PurePosixPath(name).parent
    while parent != PurePosixPath("."):
        try:
            (folder / parent).rmdir()
        except OSError:
            return
        parent = parent.parent


def _remove(temporary: Path | None, created: Sequence[Path]) -> None:
    """Remove the temporary folder, then the folders this run created (if empty)."""
    if temporary is not None:
        shutil.rmtree(temporary, ignore_errors=True)
    for folder in created:
        with contextlib.suppress(OSError):
            folder.rmdir()


@contextlib.contextmanager
def atomic_output(
    destination: str | os.PathLike,
    *,
    command: Sequence[str] = (),
    planned: Sequence[str] = (),
) -> Iterator[Path]:
    """A temporary folder inside ``destination`` whose files move into it when the block
    succeeds, with the manifest ``gaussmix-manifest.json`` listing them.

    A file in ``destination`` is replaced or removed only when the previous manifest
    lists it and it is unchanged (same size and SHA-256); anything else there is left
    alone. Before the block runs, ``planned`` (the names the run expects to write) is
    checked; when the block ends, every file it wrote is checked again before anything
    moves. The files move in one by one (``os.replace``), the manifest last, with SIGINT
    and SIGTERM held off. On an exception or an interrupt, the temporary folder and any
    folder this call created are removed: ``destination`` is left as it was.

    Args:
        destination: the output folder (created with its parents when missing).
        command: the command line, recorded in the manifest.
        planned: '/'-separated names of the files the run expects to write.

    Raises:
        UsageError: ``destination`` is not a folder, cannot be written, holds a file in
            the way (not listed, or changed since gaussmix wrote it), or its manifest is
            not one gaussmix wrote.

    Example:
        >>> import tempfile, pathlib
        >>> out = pathlib.Path(tempfile.mkdtemp()) / "out"
        >>> with atomic_output(out) as folder:
        ...     _ = (folder / "results.json").write_text("{}")
        >>> sorted(p.name for p in out.iterdir())
        ['gaussmix-manifest.json', 'results.json']
    """
    destination = Path(destination).absolute()
    try:
        mode = os.stat(destination).st_mode
    except FileNotFoundError:
        mode = None
    except OSError as error:
        raise UsageError(
            f"cannot use --out {destination}: {error.strerror}; choose a folder you can write"
        ) from None
    if mode is not None:
        if not stat.S_ISDIR(mode):
            raise UsageError(f"--out {destination} exists and is not a folder; choose a folder")
        _check_folder(destination, planned)
    created: list[Path] = []
    temporary = None
    committed = False
    try:
        # An interrupt that arrives while the folders are made is raised when this block
        # ends, inside the try below: the folders it made are removed like any others.
        with INTERRUPTS.deferred():
            folder = destination
            while not folder.exists() and folder != folder.parent:
                created.append(folder)
                folder = folder.parent
            try:
                destination.mkdir(parents=True, exist_ok=True)
                temporary = Path(
                    tempfile.mkdtemp(
                        prefix=_TEMPORARY_PREFIX, suffix=_TEMPORARY_SUFFIX, dir=destination
                    )
                )
            except OSError as error:
                raise UsageError(
                    f"cannot create a folder in --out {destination}: {error.strerror}; "
                    "choose a folder you can write"
                ) from None
        yield temporary
        names = _written_files(temporary)
        entries = _check_folder(destination, names)
        (temporary / MANIFEST_NAME).write_bytes(_manifest(temporary, names, command))
        with INTERRUPTS.deferred():
            for name in names:
                (destination / name).parent.mkdir(parents=True, exist_ok=True)
                os.replace(temporary / name, destination / name)
            for name in sorted(set(entries) - set(names)):
                with contextlib.suppress(FileNotFoundError):
                    (destination / name).unlink()
                _remove_empty_folders(destination, name)
            os.replace(temporary / MANIFEST_NAME, destination / MANIFEST_NAME)
            shutil.rmtree(temporary, ignore_errors=True)
            committed = True
    except BaseException as error:
        if committed:
            error.written = destination  # an interrupt held off until the files were in
            raise
        with INTERRUPTS.deferred():
            _remove(temporary, created)
        raise
