"""Which datasets and models the explorer offers, and how the server process is set up.

Models are listed by name (sample, yours, zoo), each checkpoint once however it is reached;
the server keeps torch, BLAS and OpenMP to `SERVER_THREADS` thread(s), because a second
thread costs more in waiting than it gains when the cores are shared with sessions and
background jobs (a gradient-boosting fit of the sample took 61-65 s with OpenMP on both
busy cores and 4.7 s on one).
"""

from __future__ import annotations

import ctypes
import functools
import gc
import sys
import threading
from pathlib import Path

from galexplore.errors import ModelError
from galexplore.paths import SAMPLE_MODELS, sample_model_dirs, user_models_dir

#: Threads of torch, BLAS and OpenMP in the server process (jobs run in their own processes).
SERVER_THREADS = 1
#: Sample models shown first, in order of preference: the Dawson et al. (2020) folded space
#: of an autoencoder on velocity maps is the headline view.
PREFERRED_SAMPLE_MODELS = ("cae_free_mom1", "cae_mom1")


@functools.cache
def limit_server_threads() -> None:
    """Keep torch, BLAS and OpenMP in this process to `SERVER_THREADS` (once per process)."""
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(SERVER_THREADS)
    threadpool_limits(limits=SERVER_THREADS)


def default_model() -> str:
    """The shipped sample model shown first: `PREFERRED_SAMPLE_MODELS` when present, else a
    single-channel autoencoder, else the first sample model."""
    from galexplore.models.checkpoint import read_card

    dirs = sample_model_dirs()
    if not dirs:
        raise ModelError(f"no pretrained sample models under {SAMPLE_MODELS.name}/; "
                         "pass --model with a checkpoint directory or zoo name")
    by_name = {d.name: d for d in dirs}
    for name in PREFERRED_SAMPLE_MODELS:
        if name in by_name:
            return str(by_name[name])
    for directory in dirs:
        card = read_card(directory)
        if card.architecture.startswith(("cae", "dawson2020")) and len(card.channels) == 1:
            return str(directory)
    return str(dirs[0])


def _origin(directory: Path) -> str:
    from galexplore.paths import data_dir

    resolved = directory.resolve()
    for root, origin in ((SAMPLE_MODELS, "sample"), (user_models_dir(), "yours"), (data_dir(), "zoo")):
        if root.resolve() in resolved.parents:
            return origin
    return "opened"


def model_choices(current: str | Path) -> dict[str, str]:
    """Checkpoints the page offers: label -> checkpoint directory. The current one, the
    samples, the user's and the installed zoo entries; each checkpoint once (by resolved
    directory), labelled by its name and where it comes from ("sample", "yours", "zoo",
    "opened")."""
    from galexplore.models import zoo
    from galexplore.models.checkpoint import read_card

    candidates = [zoo.resolve_model(str(current)), *sample_model_dirs()]
    if user_models_dir().is_dir():
        candidates += [p for p in sorted(user_models_dir().iterdir()) if (p / "card.json").is_file()]
    candidates += [zoo.installed_path(name) for name in sorted(zoo.ZOO) if zoo.is_installed(name)]
    choices: dict[str, str] = {}
    seen: set[Path] = set()
    for directory in candidates:
        resolved = Path(directory).resolve()
        if resolved in seen:
            continue
        seen.add(resolved)
        try:
            name = read_card(directory).name
        except ModelError:
            continue  # not readable: not offered
        label = f"{name} ({_origin(Path(directory))})"
        while label in choices:
            label += " "
        choices[label] = str(directory)
    return choices


#: Seconds after a session ends before the memory it used is handed back (the server drops
#: a closed session's objects after its unused-session lifetime, 15 s by default).
RELEASE_DELAY_S = 30.0
_release_timer: threading.Timer | None = None
_release_lock = threading.Lock()


def release_memory() -> None:
    """Collect garbage and hand the freed heap back to the operating system (glibc's
    ``malloc_trim``; elsewhere only the collection), so that the server's resident memory
    falls back once sessions have closed."""
    gc.collect()
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):  # not glibc: the memory is reused, not returned
            pass


def release_memory_later(delay_s: float = RELEASE_DELAY_S) -> None:
    """`release_memory` once, ``delay_s`` after the last call (sessions ending together cost one)."""
    global _release_timer
    with _release_lock:
        if _release_timer is not None:
            _release_timer.cancel()
        _release_timer = threading.Timer(delay_s, release_memory)
        _release_timer.daemon = True
        _release_timer.start()
