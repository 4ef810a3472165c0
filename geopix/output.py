"""Where outputs go: one run at a time per folder, nothing clobbered, nothing half-written or empty left.

``check_output`` refuses to overwrite results unless asked and fails early on an unwritable
folder.  ``claim_output`` also takes an exclusive lock on the folder for the whole run, so a
second run into the same folder is refused at once instead of sharing (and corrupting) the
first one's partial files; a folder the run created is removed again if the run fails while
it holds nothing but the lock.  Every command that writes (render, tiles, dataset, predict)
takes the same lock (``hold_lock``, re-entrant within one process so a render may cut its own
web tiles), and ``--overwrite`` replaces only what that command made before: ``refuse_foreign``
refuses a target that holds something else, ``refuse_input`` one that is or holds the input.
Refusals never suggest deleting anything: they ask for another output.  An object-store output
(``-o s3://...``) has no flock: ``hold_remote_lock`` keeps a lock object naming the run there.  ``written_whole`` gives
a file its final name only once it is complete, so Ctrl-C or a full disk never leaves a
truncated file under that name.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from geopix.errors import OutputExistsError, OutputLockedError, OutputNotWritableError
from geopix.remote import join, read_bytes, remove, write_bytes
from geopix.source import redact

LOCK_NAME = ".geopix.lock"
#: (folder, thread) -> how many holds share the one lock this thread took on the folder
_HELD: dict[tuple[Path, int], int] = {}


def check_output(out_dir: Path, names: list[str], overwrite: bool, option: str = "-o") -> bool:
    """Create ``out_dir`` if needed, check it is writable and that ``names`` in it may be written.

    Returns whether the folder was created here.  ``option`` names the argument in messages.
    """
    created = _make(out_dir, option)
    if not os.access(out_dir, os.W_OK | os.X_OK):
        _remove_if_empty(out_dir, created)
        raise OutputNotWritableError(f"output folder {out_dir} is not writable; choose another {option}")
    existing = [n for n in names if (out_dir / n).exists()]
    if existing and not overwrite:
        _remove_if_empty(out_dir, created)
        raise OutputExistsError(
            f"{out_dir / existing[0]} already exists; pass --overwrite to replace it or choose another {option}"
        )
    return created


@contextlib.contextmanager
def claim_output(out_dir: Path, names: list[str], overwrite: bool, option: str = "-o") -> Iterator[Path]:
    """``check_output``, then hold an exclusive lock on ``out_dir`` until the block ends."""
    with hold_lock(out_dir, option, join=False):
        check_output(out_dir, names, overwrite, option)
        yield out_dir


@contextlib.contextmanager
def hold_lock(folder: Path, option: str = "-o", join: bool = True) -> Iterator[Path]:
    """The exclusive lock on ``folder`` (created if missing) until the block ends.

    ``join``: a lock this thread already holds is shared (a render that holds its ``-o`` cuts
    web tiles into it); otherwise, and for any other holder, ``OutputLockedError``.
    """
    key = (Path(os.path.abspath(folder)), threading.get_ident())
    if join and key in _HELD:
        _HELD[key] += 1
        try:
            yield folder
        finally:
            _HELD[key] -= 1
        return
    created = _make(folder, option)
    fd = _lock(folder, created, option)
    _HELD[key] = 1
    ok = False
    try:
        yield folder
        ok = True
    finally:
        del _HELD[key]
        (folder / LOCK_NAME).unlink(missing_ok=True)  # still ours: we hold the lock
        os.close(fd)
        if not ok:
            _remove_if_empty(folder, created)


@contextlib.contextmanager
def hold_remote_lock(url: str) -> Iterator[str]:
    """The lock of an object-store output: ``URL/.geopix.lock`` names this run (host, pid, a token)
    until the block ends.  Another run's lock refuses us (``OutputLockedError``, also with
    ``--force``), unless it names a process of this host that is gone (a killed run)."""
    lock = join(url, LOCK_NAME)
    holder = _remote_holder(lock)
    if holder is not None and _alive(holder):
        raise _locked(url, lock, holder)
    me = {"host": socket.gethostname(), "pid": os.getpid(), "token": uuid.uuid4().hex, "since": int(time.time())}
    write_bytes(lock, json.dumps(me).encode())
    holder = _remote_holder(lock)  # two runs that wrote at once: the object keeps one of them
    if holder is None or holder.get("token") != me["token"]:
        raise _locked(url, lock, holder or {})
    try:
        yield url
    finally:
        if (_remote_holder(lock) or {}).get("token") == me["token"]:
            remove(lock)


def _remote_holder(lock: str) -> dict | None:
    try:
        holder = json.loads(read_bytes(lock))
    except FileNotFoundError:
        return None
    except ValueError:
        return {}  # not ours to read: someone else's object under our name counts as held
    return holder if isinstance(holder, dict) else {}


def _alive(holder: dict) -> bool:
    """Whether the run a lock names may still be running (only a process on this host can be checked)."""
    if holder.get("host") != socket.gethostname() or not isinstance(holder.get("pid"), int):
        return True
    try:
        os.kill(holder["pid"], 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _locked(url: str, lock: str, holder: dict) -> OutputLockedError:
    who = ", ".join(f"{k} {holder[k]}" for k in ("host", "pid") if k in holder)
    since = time.strftime(" since %Y-%m-%d %H:%M:%S", time.localtime(holder["since"])) if "since" in holder else ""
    return OutputLockedError(
        f"{redact(url)} is in use by another geopix run{f' ({who}{since})' if who else ''}; wait for it to finish, "
        f"or choose another -o (a run that was killed leaves its lock object {redact(lock)}, which alone may go)"
    )


def refuse_foreign(target: Path, made_here: Callable[[Path], bool], what: str, option: str) -> None:
    """Refuse to replace ``target`` unless it is missing, empty, or ``made_here`` recognises it as
    ``what`` this command wrote before (``--overwrite`` replaces only that)."""
    if not (target.exists() or target.is_symlink()):
        return
    if target.is_dir() and not target.is_symlink():
        others = sorted(p.name for p in target.iterdir() if p.name != LOCK_NAME)
        if not others or made_here(target):
            return
        shown = ", ".join(others[:3]) + (", ..." if len(others) > 3 else "")
        raise OutputExistsError(
            f"{target} is not {what} (it holds {shown}); geopix replaces only {what} it wrote: choose another {option}"
        )
    if not made_here(target):
        raise OutputExistsError(
            f"{target} is not {what}; geopix replaces only {what} it wrote: choose another {option}"
        )


def refuse_input(outputs: Iterable[Path], inputs: Iterable[Path], option: str) -> None:
    """Refuse outputs that are, or hold, one of the inputs (``--overwrite`` never replaces an input)."""
    ins = [Path(os.path.realpath(p)) for p in inputs]
    for out in outputs:
        real = Path(os.path.realpath(out))
        for src in ins:
            if src == real or real in src.parents:
                raise OutputExistsError(f"{option} {out} would replace the input {src}; choose another {option}")


@contextlib.contextmanager
def written_whole(path: Path) -> Iterator[Path]:
    """A name to write ``path``'s content under (``path.partial``): renamed to ``path`` when the
    block ends, removed when it raises (Ctrl-C and SIGTERM included)."""
    tmp = path.with_name(path.name + ".partial")
    try:
        yield tmp
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _make(out_dir: Path, option: str) -> bool:
    """Create ``out_dir`` (and its parents); whether it was created here."""
    created = not out_dir.exists()
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputNotWritableError(
            f"cannot create output folder {out_dir}: {exc.strerror}; choose another {option}"
        ) from exc
    return created


def _lock(out_dir: Path, created: bool, option: str = "-o") -> int:
    import fcntl

    path = out_dir / LOCK_NAME
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            _remove_if_empty(out_dir, created)
            raise OutputNotWritableError(
                f"output folder {out_dir} is not writable ({exc.strerror}); choose another {option}"
            ) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            raise OutputLockedError(
                f"{out_dir} is in use by another geopix run{f' (pid {holder})' if holder else ''}; "
                f"wait for it to finish, or choose another {option}"
            ) from None
        # The holder before us may have removed the file between our open and our lock:
        # then we hold a lock on a file nobody else can see; take the one on disk.
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            os.ftruncate(fd, 0)
            os.write(fd, str(os.getpid()).encode())
            return fd
        os.close(fd)


def _read_pid(fd: int) -> str:
    try:
        return os.pread(fd, 32, 0).decode().strip()
    except (OSError, UnicodeDecodeError):
        return ""


def _remove_if_empty(out_dir: Path, created: bool) -> None:
    """Remove a folder this run created, if the run left nothing in it."""
    if created:
        with contextlib.suppress(OSError):
            out_dir.rmdir()
