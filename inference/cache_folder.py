"""gaussmix's cache folder: where it is, and the checks that make reading it safe.

gaussmix keeps two kinds of files it would otherwise rebuild: the compiled E-step kernel
(:mod:`gaussmix.inference.native`) and compiled programs
(:mod:`gaussmix.inference.compilation`). Both are code that gaussmix loads, so both live in
a folder only their owner can write: ``$GAUSSMIX_CACHE_DIR``, else
``$XDG_CACHE_HOME/gaussmix``, else ``~/.cache/gaussmix``. :func:`private_folder` creates
the missing folders on the way with mode 0700 and refuses (:class:`Refused`) a folder that
is a symbolic link, is owned by someone else or is writable by group or others;
:func:`check_file` refuses a cached file with the same faults. No shared fallback (such as
``/tmp``) is ever used: without a home folder the cache is :class:`Unavailable`.
"""

import contextlib
import io
import os
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path

__all__ = [
    "Refused",
    "Unavailable",
    "cache_root",
    "check_file",
    "check_folder",
    "claim",
    "private_folder",
    "trim",
    "write_private",
]


class Unavailable(Exception):
    """The cache cannot be used for a reason that is nobody's fault (no home folder, a
    folder that cannot be created or read)."""


class Refused(Exception):
    """The cache must not be used until the user fixes something (a folder or file that
    is not the user's own, or that others can write)."""


def cache_root() -> Path:
    """``$GAUSSMIX_CACHE_DIR``, else ``$XDG_CACHE_HOME/gaussmix``, else
    ``~/.cache/gaussmix``.

    Raises:
        Unavailable: no home folder is known and neither variable is set.

    Example:
        >>> import os
        >>> from unittest import mock
        >>> with mock.patch.dict(os.environ, {"GAUSSMIX_CACHE_DIR": "/srv/me/cache"}):
        ...     str(cache_root())
        '/srv/me/cache'
    """
    configured = os.environ.get("GAUSSMIX_CACHE_DIR", "").strip()
    if configured:
        return Path(os.path.abspath(os.path.expanduser(configured)))
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    if os.path.isabs(xdg):  # the XDG specification ignores a relative path
        return Path(xdg) / "gaussmix"
    try:  # an empty HOME is no home (Python would make it the root folder)
        home = Path.home() if os.environ.get("HOME", "unset").strip() else None
    except RuntimeError:
        home = None
    if home is None or not home.is_absolute():
        raise Unavailable("no cache folder: no home folder is known (set GAUSSMIX_CACHE_DIR)")
    return home / ".cache" / "gaussmix"


def _writable_by(mode: int) -> str | None:
    who = [name for bit, name in ((stat.S_IWGRP, "group"), (stat.S_IWOTH, "others")) if mode & bit]
    return " and ".join(who) or None


def check_folder(folder: Path) -> None:
    """Refuse a folder that is a symbolic link, is owned by someone else or is writable by
    group or others.

    Raises:
        Refused: one of those, with the fix.
        Unavailable: the folder cannot be read, or is not a folder.
    """
    try:
        info = os.lstat(folder)
    except OSError as error:
        raise Unavailable(f"cache folder {folder} cannot be read: {error}") from None
    another = "; set GAUSSMIX_CACHE_DIR to a folder of your own (mode 700)"
    if stat.S_ISLNK(info.st_mode):
        raise Refused(f"cache folder {folder} is a symbolic link{another}")
    if not stat.S_ISDIR(info.st_mode):
        raise Unavailable(f"cache folder {folder} is not a folder")
    if info.st_uid != os.geteuid():
        raise Refused(
            f"cache folder {folder} is owned by uid {info.st_uid}, not by you "
            f"(uid {os.geteuid()}){another}"
        )
    if writers := _writable_by(info.st_mode):
        raise Refused(
            f"cache folder {folder} is writable by {writers}: run `chmod 700 {folder}`, "
            "or set GAUSSMIX_CACHE_DIR to a folder of your own"
        )


def private_folder(folder: Path) -> None:
    """Create ``folder`` and the missing folders above it with mode 0700, and check each
    of those and ``folder`` with :func:`check_folder`.

    Raises:
        Refused, Unavailable: as :func:`check_folder`, or the folder cannot be created.
    """
    missing = []
    path = folder
    while not os.path.lexists(path) and path != path.parent:
        missing.append(path)
        path = path.parent
    for path in reversed(missing):
        try:
            os.mkdir(path, 0o700)
            os.chmod(path, 0o700)  # whatever the umask left
        except FileExistsError:
            pass  # created meanwhile, by this user or by another: checked next
        except OSError as error:
            raise Unavailable(f"cache folder {folder} cannot be created: {error}") from None
        check_folder(path)
    if not missing:
        check_folder(folder)


def check_file(path: Path, what: str = "cached file") -> bool:
    """Whether ``path`` exists; refuse one that is a symbolic link, not a regular file,
    owned by someone else or writable by group or others.

    Raises:
        Refused: one of those, naming the file and the fix (delete it: gaussmix rebuilds
            what it caches).
    """
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return False
    problem = None
    if stat.S_ISLNK(info.st_mode):
        problem = "is a symbolic link"
    elif not stat.S_ISREG(info.st_mode):
        problem = "is not a regular file"
    elif info.st_uid != os.geteuid():
        problem = f"is owned by uid {info.st_uid}, not by you (uid {os.geteuid()})"
    elif writers := _writable_by(info.st_mode):
        problem = f"is writable by {writers}"
    if problem:
        raise Refused(f"{what} {path} {problem}: delete it (gaussmix rebuilds it)")
    return True


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` with mode 0600, under a temporary name in the same folder
    and then renamed into place: a reader finds the whole file or none.

    Raises:
        OSError: the file cannot be written (a full disk, a read-only folder); nothing is
            left behind.
    """
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.partial")
    try:
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with io.FileIO(descriptor, "wb") as handle:
            handle.write(data)
        os.replace(temporary, path)
    except OSError:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise


def trim(folder: Path, suffix: str, max_bytes: int) -> None:
    """Delete the least recently used (oldest modified) files named ``*suffix`` in
    ``folder`` until those left hold at most ``max_bytes``; nothing else is touched."""
    try:
        entries = []
        for entry in os.scandir(folder):
            if entry.name.endswith(suffix) and entry.is_file(follow_symlinks=False):
                info = entry.stat(follow_symlinks=False)
                entries.append((info.st_mtime, info.st_size, entry.path))
    except OSError:
        return
    total = sum(size for _, size, _ in entries)
    for _, size, name in sorted(entries):
        if total <= max_bytes:
            break
        try:
            os.unlink(name)
            total -= size
        except OSError:
            pass


#: Lock files of a folder (``.lock-00`` ... ``.lock-ff``): a file's lock is chosen by the
#: first two characters of its name (a hexadecimal key), so two files share a lock rarely.
LOCK_PREFIX = ".lock-"


@contextlib.contextmanager
def claim(path: Path, wait: float = 600.0) -> Iterator[bool]:
    """Hold the lock of ``path`` (one of 256 lock files in its folder) while the block runs.

    A process about to build a file that another process is building waits for it, then
    finds it built (test workers and their subprocesses that compile the same program at
    the same time compile it once); so does a thread of the same process (each claim opens
    the lock file anew: ``flock`` locks an open file, not a process), while threads on
    files of other locks go on together. The lock file is created with mode 0600 and never
    followed if it is a symbolic link. Waits ``wait`` seconds at most (a process stopped
    while holding it) and goes on without where there is no ``flock`` or the lock file
    cannot be opened.

    Yields:
        Whether the lock is held.
    """
    try:
        import fcntl
    except ImportError:  # not POSIX
        yield False
        return
    lock = path.parent / f"{LOCK_PREFIX}{path.name[:2]}"
    flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        descriptor = os.open(lock, flags, 0o600)
    except OSError:
        yield False
        return
    try:
        deadline = time.monotonic() + wait
        held = False
        while not held:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
                held = True
            except OSError:
                if time.monotonic() >= deadline:
                    break
                time.sleep(0.05)
        yield held
    finally:
        os.close(descriptor)  # releases the lock
