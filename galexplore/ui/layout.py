"""The explorer page and the server: one `ExplorerState` per browser session.

`build_app` assembles the views into a template; `serve` runs a Panel server on localhost
whose every session calls `build_app` afresh, so sessions never share selections.

Only the Explore tab and the sidebar are built when a session opens; every other tab is
built (and its module imported) the first time it is shown.
"""

from __future__ import annotations

import asyncio
import functools
import tempfile
from pathlib import Path

import holoviews as hv
import panel as pn

from galexplore.errors import GalexploreError, ModelError
from galexplore.explorer.access import allowed_directories, client_refusal, remote_allowed
from galexplore.paths import SAMPLE_DATASET, SAMPLE_MODELS, sample_model_dirs, user_models_dir
from galexplore.ui.bundle import load_bundle
from galexplore.ui.detail_view import DetailView
from galexplore.ui.latent_view import MAX_SPREAD_PX, LatentControls, LatentView
from galexplore.ui.selection_view import SelectionCount, SelectionView
from galexplore.ui.callbacks import guarded
from galexplore.ui.state import ExplorerState
from galexplore.ui.text import literal

TITLE = "galexplore: what encoders learn about galaxies"


#: Threads torch uses in the server process. Its forward passes are of one 64x64 galaxy at a
#: time, where a second thread costs more in waiting than it gains when the cores are shared
#: (detail maps of a click: ~0.08 s on one thread, ~0.3 s on two, on a busy 2-core machine).
#: Training jobs run in their own processes with their own thread counts.
SERVER_TORCH_THREADS = 1

#: Sample models shown first, in order of preference: the Dawson et al. (2020) folded space
#: of an autoencoder on velocity maps is the headline view.
PREFERRED_SAMPLE_MODELS = ("cae_free_mom1", "cae_mom1")


def default_model() -> str:
    """The shipped sample model shown first: `PREFERRED_SAMPLE_MODELS` when present, else a
    single-channel autoencoder, else the first sample model."""
    from galexplore.models.checkpoint import read_card

    dirs = sample_model_dirs()
    if not dirs:
        raise ModelError(f"no pretrained sample models under {SAMPLE_MODELS}; "
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


def known_models(current: str) -> list[str]:
    """Checkpoints offered in the sidebar: the current one, the samples, the user's and the zoo's."""
    from galexplore.models import zoo

    found = [current, *map(str, sample_model_dirs())]
    if user_models_dir().is_dir():
        found += [str(p) for p in sorted(user_models_dir().iterdir()) if (p / "card.json").is_file()]
    found += [name for name in sorted(zoo.ZOO) if zoo.is_installed(name)]
    return list(dict.fromkeys(found))


def real_galaxy_markers(state: ExplorerState):
    """The 30 real ALMA galaxies of Dawson et al. (2020) placed by the current model, when the
    zoo checkpoint is installed, the FITS files are found and the model takes one velocity map."""
    from galexplore.data.fits_io import read_maps_from_fits
    from galexplore.models import zoo
    from galexplore.ui.upload import encode_velocity_maps, fits_in_directory, real_alma_fits_dir

    directory = real_alma_fits_dir()
    card = state.bundle.model.card
    if not zoo.is_installed("dawson2020") or directory is None or card.channels != ["mom1"]:
        return None
    names, maps = read_maps_from_fits(fits_in_directory(directory))
    return encode_velocity_maps(state.bundle, names, maps)


class SourcePicker(pn.viewable.Viewer):
    """Sidebar widgets that switch dataset and model, with a progress bar for new embeddings."""

    def __init__(self, state: ExplorerState, dataset: Path, model: str, **params):
        super().__init__(**params)
        self.state = state
        self.dataset = pn.widgets.TextInput(label="Dataset directory", value=str(dataset))
        self.model = pn.widgets.Select(label="Model", options=known_models(model), value=model)
        self.model_path = pn.widgets.TextInput(label="...or checkpoint directory", placeholder="/path/to/checkpoint")
        self.button = pn.widgets.Button(label="Open", button_type="primary")
        self.progress = pn.indicators.Progress(label="embedding", value=0, max=100, visible=False,
                                               sizing_mode="stretch_width")
        self.button.on_click(self._on_open)

    async def _on_open(self, event) -> None:
        model = self.model_path.value.strip() or self.model.value
        self.progress.param.update(value=0, visible=True)
        self.button.disabled = True

        def progress(done: int, total: int) -> None:
            self.progress.value = int(100 * done / max(total, 1))

        try:
            dataset = self.state.check_allowed(self.dataset.value)
            if self.model_path.value.strip():
                self.state.check_allowed(model)
            bundle = await asyncio.to_thread(load_bundle, dataset, model, progress)
            self.state.set_bundle(bundle)
            self.state.notify(f"opened {dataset} with model {bundle.model.name}", "success")
        except Exception as error:  # noqa: BLE001 -- shown in the page; the session carries on
            self.state.report(error)
        finally:
            self.progress.visible = False
            self.button.disabled = False

    def __panel__(self):
        return pn.Column(self.dataset, self.model, self.model_path, self.button, self.progress)


def message_pane(state: ExplorerState) -> pn.viewable.Viewable:
    """An alert under the title showing the state's last error or notice."""

    def alert(message: str, level: str):
        if not message:
            return pn.Spacer(height=0)
        return pn.pane.Alert(literal(message), alert_type=level, css_classes=["galexplore-message"],
                             sizing_mode="stretch_width")

    return pn.panel(pn.bind(alert, state.param.message, state.param.message_level))


def session_refusal(allow_remote: bool | None = None) -> str | None:
    """Why the client of the session being built may not use it (see
    `galexplore.explorer.access.client_refusal`), or None; None outside a server session."""
    document = pn.state.curdoc
    context = getattr(document, "session_context", None) if document is not None else None
    request = getattr(context, "request", None) if context is not None else None
    if request is None:
        return None
    allow = remote_allowed() if allow_remote is None else allow_remote
    return client_refusal(getattr(request, "remote_ip", None), request.headers.get("Origin"), allow)


def refusal_page(message: str) -> pn.viewable.Viewable:
    """The page a refused client sees."""
    return pn.pane.Alert(literal(f"galexplore: {message}"), alert_type="danger")


def on_first_view(build) -> pn.viewable.Viewable:
    """A placeholder that calls ``build()`` (no arguments, returns anything Panel shows) the
    first time it is rendered, e.g. when its tab of a ``pn.Tabs(dynamic=True)`` is opened."""
    return pn.param.ParamFunction(build, lazy=True, loading_indicator=False)


def build_app(dataset=None, model=None, *, allowed_dirs=(), export_dir=None, selections_dir=None,
              real_overlay: bool = True) -> pn.template.FastListTemplate:
    """The explorer page for one session.

    Parameters
    ----------
    dataset : dataset directory (default: the shipped sample universe).
    model : checkpoint directory or zoo name (default: the shipped sample autoencoder).
    allowed_dirs : more directories the page may open (see `allowed_directories`).
    export_dir : where CSV exports and their provenance are written (default: a temporary directory).
    selections_dir : where named selections are kept (default: <data_dir>/selections).
    real_overlay : show the 30 real ALMA galaxies of Dawson et al. (2020) when available.

    The template's ``explorer_state`` attribute is the session's `ExplorerState`.
    """
    dataset = Path(dataset) if dataset is not None else SAMPLE_DATASET
    model = str(model) if model is not None else default_model()
    state = ExplorerState(load_bundle(dataset, model), allowed_dirs=allowed_directories(dataset, model, allowed_dirs),
                          selections_dir=selections_dir)
    if real_overlay:
        guarded(state, lambda: setattr(state, "markers", real_galaxy_markers(state)))()
    export_dir = Path(export_dir) if export_dir is not None else Path(tempfile.mkdtemp(prefix="galexplore-export-"))

    from galexplore.ui.boundary_view import BoundaryModel

    latent = LatentView(state)
    boundary = BoundaryModel(state)
    latent.pane.object = latent.overlay * boundary.overlay()  # the session's own boundary on the map
    explore = pn.Row(pn.Column(latent, SelectionCount(state)), DetailView(state))
    shown_selection: list[SelectionView] = []

    def selection_tab() -> SelectionView:
        shown_selection.append(SelectionView(state, export_dir))
        return shown_selection[0]

    def statistics_tab():
        from galexplore.ui.stats_view import StatsView
        return StatsView(state)

    def upload_tab():
        from galexplore.ui.upload_view import UploadView
        return UploadView(state)

    def boundaries_tab():
        from galexplore.ui.boundary_view import BoundaryView
        return BoundaryView(state, boundary)

    shown_training: list = []

    def training_tab():
        from galexplore.ui.training_view import TrainingView
        shown_training.append(TrainingView(state, boundary=boundary))
        return shown_training[0]

    tabs = pn.Tabs(("Explore", explore), *[(name, on_first_view(build)) for name, build in (
        ("Selection", selection_tab), ("Statistics", statistics_tab), ("Your data", upload_tab),
        ("Boundaries", boundaries_tab), ("Training", training_tab))], dynamic=True)

    def on_tab(event) -> None:  # the selection's table, histogram and gallery follow it only while shown
        for view in shown_selection:
            view.shown = event.new == 1
        for view in shown_training:  # its loss curve redraws only while shown
            view.shown = event.new == 5

    tabs.param.watch(on_tab, "active")

    template = pn.template.FastListTemplate(
        title=TITLE,
        sidebar=[pn.pane.Markdown("### Data"), SourcePicker(state, dataset, model),
                 pn.pane.Markdown("### Latent map"), LatentControls(state)],
        main=[pn.Column(message_pane(state), tabs)],
        sidebar_width=320,
        theme_toggle=False,
    )
    template.explorer_state = state
    return template


@functools.cache
def warm_up() -> None:
    """Run the latent map's whole pipeline (rasterise, spread, colour, lasso, click) once on a
    few synthetic points, so that Numba compiles Datashader's and the selection's kernels
    before the first browser session rather than during it. Runs once per process."""
    import numpy as np
    import pandas as pd
    import datashader as ds
    import datashader.transfer_functions as tf
    import xarray as xr

    from galexplore.ui.bundle import Bundle

    rng = np.random.default_rng(0)
    latent = rng.standard_normal((200, 3))
    table = pd.DataFrame({"id": np.arange(200, dtype=np.int64), "kappa": rng.uniform(0.0, 1.0, 200),
                          **{f"latent_{k}": latent[:, k] for k in range(3)},
                          **{f"pca_{k}": latent[:, k] for k in range(3)},
                          "folded_r": np.hypot(latent[:, 0], latent[:, 1]), "folded_h": np.abs(latent[:, 2])})
    with tempfile.TemporaryDirectory(prefix="galexplore-warm-up-") as scratch:
        state = ExplorerState(Bundle(dataset=None, model=None, table=table, column_units={}), selections_dir=scratch)
        view = LatentView(state)
        plot = hv.renderer("bokeh").get_plot(view.overlay)  # kept alive: gestures below redraw it
        # Numba types the plot's range by value (int 0 at a non-negative axis, else float):
        # the folded plane (r, h >= 0) and a latent plane (either sign) cover both
        for projection in ("folded (r, h)", next(p for p in state.param.projection.objects if "folded" not in p)):
            for colour in ("kappa", "density (counts)"):
                state.param.update(projection=projection, color_by=colour)
                state.select_polygon(np.array([[-1.0, -1.0], [1.0, -1.0], [0.0, 1.0]]) + [1.0, 0.0])
                state.click(1.0, 0.0)
        plot.cleanup()
    # Datashader compiles one spreading kernel per dtype, size and memory layout: the map's
    # layers are float32 (`as_float32`) and C-contiguous, and dynspread may choose any spread
    # up to MAX_SPREAD_PX (with HoloViews' default operator)
    for px in range(1, MAX_SPREAD_PX + 1):
        tf.spread(xr.DataArray(np.ones((2 * px + 3, 2 * px + 3), dtype=np.float32)), px=px)
    # ...and one aggregation kernel per reduction and type of the plot's range: float, or an
    # int 0 where HoloViews clips an axis at zero
    frame = pd.DataFrame({"x": latent[:, 0], "y": latent[:, 1], "value": latent[:, 2]})
    for low in (-1.0, 0):
        for reduction in (ds.count(), ds.mean("value")):
            ds.Canvas(8, 8, x_range=(low, 1.0), y_range=(low, 1.0)).points(frame, "x", "y", reduction)


def warm_up_page(dataset, model, **build_kwargs) -> None:
    """Build and render one explorer page of ``dataset`` and ``model`` into a throwaway Bokeh
    document, so that the first browser session finds the bundle's indices, the real-galaxy
    overlay, torch's first call and Bokeh's model classes ready rather than paying for them."""
    from bokeh.document import Document

    build_app(dataset, model, **build_kwargs).server_doc(Document())


def serve(dataset=None, model=None, port: int = 5006, show: bool = True, threaded: bool = False,
          allow_remote: bool = False, **build_kwargs):
    """Serve the explorer on localhost:``port``; each browser session gets its own state.

    With ``allow_remote`` the server listens on every interface and takes clients from any
    host and page origin: there is no authentication, so only on a trusted network.
    Returns the server when ``threaded`` (it runs in a thread)."""
    import torch

    pn.extension("tabulator", notifications=True, sizing_mode="fixed")
    hv.extension("bokeh")
    torch.set_num_threads(SERVER_TORCH_THREADS)
    dataset = Path(dataset) if dataset is not None else SAMPLE_DATASET
    model = str(model) if model is not None else default_model()
    load_bundle(dataset, model)  # fail here, with a readable message, rather than in every session
    warm_up()
    warm_up_page(dataset, model, **build_kwargs)

    def session():
        refusal = session_refusal(allow_remote)
        return refusal_page(refusal) if refusal else build_app(dataset, model, **build_kwargs)

    address = "0.0.0.0" if allow_remote else "localhost"
    origins = ["*"] if allow_remote else [f"localhost:{port}", f"127.0.0.1:{port}"]
    try:
        return pn.serve({"/": session}, port=port, address=address, show=show, threaded=threaded,
                        websocket_origin=origins, title="galexplore")
    except OSError as error:
        raise GalexploreError(f"cannot serve on port {port} ({error}); choose another --port") from error
