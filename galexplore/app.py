"""What `panel serve galexplore/app.py` serves: the explorer, one page per browser session.

Dataset and model come from the URL (``?dataset=...&model=...``, accepted only under the
allowed directories of `galexplore.explorer.access.allowed_directories`), else from
``$GALEXPLORE_DATASET`` / ``$GALEXPLORE_MODEL``, else the shipped sample. Only clients on
this machine are served unless ``$GALEXPLORE_ALLOW_REMOTE=1``.
"""

import os

import panel as pn

from galexplore.errors import GalexploreError
from galexplore.explorer.access import allowed_directories, confine
from galexplore.ui.layout import build_app, configure_panel, refusal_page, session_refusal, start_warm_up

configure_panel()
start_warm_up()  # in the background, once per server process: thread limits, Datashader's kernels


def _argument(name: str) -> str | None:
    values = (pn.state.session_args or {}).get(name)
    if values:
        try:
            typed = values[0].decode()
        except UnicodeDecodeError:
            raise GalexploreError(f"?{name}= is not valid UTF-8 text") from None
        return str(confine(typed, allowed_directories()))
    return os.environ.get(f"GALEXPLORE_{name.upper()}") or None


refusal = session_refusal()
if refusal:
    refusal_page(refusal).servable()
else:
    try:
        build_app(_argument("dataset"), _argument("model")).servable()
    except GalexploreError as error:
        refusal_page(f"cannot start: {error}").servable()
