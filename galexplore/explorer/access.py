"""Who may use the explorer, and which directories its pages may open.

The server answers loopback clients only, unless the user explicitly allows others
(``galexplore serve --allow-remote`` or ``GALEXPLORE_ALLOW_REMOTE=1``): the app has no
authentication, and a page can open datasets and checkpoints, start training jobs and
write files. Paths typed into a page or passed in its URL are confined to a list of
allowed roots; the working directory is never one of them unless named explicitly.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from urllib.parse import urlsplit

from galexplore.errors import ParameterError
from galexplore.paths import SAMPLE_DATASET, SAMPLE_MODELS, data_dir

#: Extra directories the page may open, separated by os.pathsep.
ALLOWED_DIRS_ENV = "GALEXPLORE_ALLOWED_DIRS"
#: Set to 1 to let clients other than this machine use the explorer (no authentication!).
ALLOW_REMOTE_ENV = "GALEXPLORE_ALLOW_REMOTE"
#: Host names of an Origin header that belong to this machine.
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


def remote_allowed() -> bool:
    """Whether ``$GALEXPLORE_ALLOW_REMOTE`` is set to 1 (or true / yes)."""
    return os.environ.get(ALLOW_REMOTE_ENV, "").strip().lower() in {"1", "true", "yes"}


def _is_loopback_ip(address: str | None) -> bool:
    if not address:
        return False
    try:
        return ipaddress.ip_address(address.split("%")[0]).is_loopback
    except ValueError:
        return False


def client_refusal(remote_ip: str | None, origin: str | None, allow_remote: bool) -> str | None:
    """Why a client may not open a session, or None when it may.

    Parameters
    ----------
    remote_ip : the client's address as the server sees it.
    origin : the request's Origin header, if any (browsers send it with WebSocket requests).
    allow_remote : the user explicitly allowed clients other than this machine.

    Returns
    -------
    str or None
        A message for the client, which names neither paths nor settings of the server.
    """
    if allow_remote:
        return None
    if not _is_loopback_ip(remote_ip):
        return ("this galexplore server answers only this machine (localhost); start it with "
                "--allow-remote to share it on a trusted network")
    if origin:
        host = urlsplit(origin).hostname or ""
        if host not in LOOPBACK_HOSTS:
            return ("this page was requested from another site; open galexplore at http://localhost "
                    "directly")
    return None


def allowed_directories(dataset: str | os.PathLike | None = None, model: str | os.PathLike | None = None,
                        extra=()) -> list[Path]:
    """Directories a page may open, resolved and without duplicates.

    The shipped sample data and models, the user cache, the parents of the dataset and
    model the server was started with (when given), ``extra`` and ``$GALEXPLORE_ALLOWED_DIRS``.
    A model given as a zoo name adds nothing; an empty or missing argument adds nothing.
    """
    dirs = [SAMPLE_DATASET.parent, SAMPLE_MODELS.parent, data_dir()]
    for given in (dataset, model):
        if given is not None and str(given).strip() and Path(given).expanduser().is_dir():
            dirs.append(Path(given).expanduser().resolve().parent)
    dirs += [Path(d).expanduser() for d in extra if str(d).strip()]
    dirs += [Path(d).expanduser() for d in os.environ.get(ALLOWED_DIRS_ENV, "").split(os.pathsep) if d.strip()]
    return list(dict.fromkeys(d.resolve() for d in dirs))


def confine(path: str | os.PathLike, allowed: list[Path]) -> Path:
    """``path`` resolved (symbolic links followed), if it lies under one of ``allowed``.

    Raises
    ------
    ParameterError
        When it does not; the message repeats what was typed, never the resolved path or
        the list of allowed directories.
    """
    typed = str(path)
    if not typed.strip() or "\x00" in typed:
        raise ParameterError("give the path of a directory (the field is empty or holds invalid characters)")
    resolved = Path(typed).expanduser().resolve()
    if not any(resolved == d or d in resolved.parents for d in allowed):
        shown = typed if len(typed) <= 120 else typed[:117] + "..."
        raise ParameterError(f"{shown!r} is outside the directories this server may open; restart "
                             "`galexplore serve` with --allow DIR to add one")
    return resolved
