"""What `panel serve galexplore/app.py` serves: the explorer, one state per browser session.

Dataset and model come from the URL (``?dataset=...&model=...``, accepted only under the
configured directories), else from ``$GALEXPLORE_DATASET`` / ``$GALEXPLORE_MODEL``, else
the shipped sample.
"""

import os
from pathlib import Path

import holoviews as hv
import panel as pn

from galexplore.errors import GalexploreError, ParameterError
from galexplore.paths import SAMPLE_DATASET
import torch

from galexplore.ui.layout import SERVER_TORCH_THREADS, allowed_directories, build_app, warm_up

pn.extension("tabulator", notifications=True, sizing_mode="fixed")
hv.extension("bokeh")
torch.set_num_threads(SERVER_TORCH_THREADS)


def _argument(name: str) -> str | None:
    values = (pn.state.session_args or {}).get(name)
    if values:
        value = Path(values[0].decode()).expanduser().resolve()
        allowed = allowed_directories(SAMPLE_DATASET, "")
        if not any(value == d or d in value.parents for d in allowed):
            raise ParameterError(f"?{name}={value} is outside the directories this server may open; "
                                 f"add its parent to ${{GALEXPLORE_ALLOWED_DIRS}} and restart")
        return str(value)
    return os.environ.get(f"GALEXPLORE_{name.upper()}") or None


try:
    warm_up()  # once per server process: Numba compiles before, not during, the first render
    build_app(_argument("dataset"), _argument("model")).servable()
except GalexploreError as error:
    pn.pane.Alert(f"galexplore cannot start: {error}", alert_type="danger").servable()
