"""The explorer page and the server.

`build_app` assembles one session's page: the sidebar (data, latent map controls) and the
tabs. Only the Explore tab is built when a session opens; every other tab is built (and its
module imported) the first time it is shown. Bundles come from the process-wide
`galexplore.explorer.bundles.BUNDLES`, so a session costs no inference and no copy of the
table. `serve` prints what it does while it starts, and listens before anything slow.

Every CSS, JavaScript and font file comes from this server (no template that loads fonts
from the internet).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import panel as pn
import param

from galexplore.errors import GalexploreError
from galexplore.explorer import upload as uploads
from galexplore.explorer.access import allowed_directories, client_refusal, confine, remote_allowed
from galexplore.explorer.bundles import BUNDLES, Bundle
from galexplore.explorer.sources import default_model, limit_server_threads, model_choices, release_memory_later
from galexplore.paths import SAMPLE_DATASET, data_dir, user_models_dir
from galexplore.ui import feedback
from galexplore.ui.detail_view import DetailView
from galexplore.ui.latent_view import LatentMap, MapControls
from galexplore.ui.selection_view import SelectionCount
from galexplore.ui.state import FittedBoundary, MapState, Messages, SelectionState, Source
from galexplore.ui.text import literal

TITLE = "galexplore: what encoders learn about galaxies"
SIDEBAR_WIDTH = 290
#: Tabs built the first time they are shown, in their order after "Explore".
LAZY_TABS = ("Selection", "Statistics", "Your data", "Boundaries", "Training")
#: Milliseconds between two looks at a background embedding job.
POLL_PERIOD_MS = 500
LOG = logging.getLogger("galexplore.ui")
#: The page's own styles (served inline; no external stylesheet or font).
CSS = """
:host, body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; }
.galexplore-header h2 { margin: 4px 0 2px 0; }
"""


@dataclass
class Session:
    """The states of one page (see `galexplore.ui.state`)."""

    messages: Messages
    source: Source
    map: MapState
    selection: SelectionState
    boundary: FittedBoundary
    allowed_dirs: list[Path]

    @classmethod
    def open(cls, bundle: Bundle, allowed_dirs: list[Path]) -> Session:
        source = Source(bundle=bundle)
        map_state = MapState(source=source)
        return cls(Messages(), source, map_state, SelectionState(map=map_state), FittedBoundary(source=source),
                   allowed_dirs)

    @property
    def bundle(self) -> Bundle:
        return self.source.bundle


class Markers(param.Parameterized):
    """Galaxies imported into the session (uploads, the real ALMA galaxies), placed by the
    current model: re-placed after every switch, or hidden with a notice when the new model
    cannot encode them."""

    map = param.ClassSelector(class_=MapState)
    messages = param.ClassSelector(class_=Messages)
    uploaded = param.List(default=[], doc="(name, 2-D velocity map) pairs")

    @param.depends("map.source.bundle", watch=True)
    async def _follow_bundle(self) -> None:
        await self.place()

    @param.depends("uploaded", watch=True)
    async def place(self) -> None:
        source, bundle = self.map.source, self.map.bundle
        if not self.uploaded:
            self.map.markers = None
            return
        names = [name for name, _ in self.uploaded]
        try:
            latents = await asyncio.to_thread(uploads.encode, bundle, [image for _, image in self.uploaded])
            placed = await asyncio.to_thread(uploads.place, bundle, names, latents)
        except GalexploreError as error:
            if source.is_current(bundle):
                self.map.markers = None
                self.messages.notify(f"the {len(names)} imported galaxies are hidden: {error}", "warning")
            return
        if not source.is_current(bundle):
            return
        self.map.markers = placed
        if "umap_0" in placed.columns:
            await self._place_in_umap(bundle, placed, latents)

    async def _place_in_umap(self, bundle: Bundle, placed, latents: np.ndarray) -> None:
        from galexplore.explorer.workers import place_in_umap

        coords = await asyncio.wrap_future(place_in_umap(bundle.projector, latents))
        if self.map.source.is_current(bundle) and self.map.markers is placed:
            self.map.markers = placed.assign(umap_0=coords[:, 0], umap_1=coords[:, 1])


@functools.cache
def _real_galaxies() -> tuple[tuple[str, np.ndarray], ...]:
    """The 30 real ALMA velocity maps of Dawson et al. (2020), when the published model is
    installed and the FITS files are found (read once per process)."""
    from galexplore.models import zoo

    directory = uploads.real_alma_fits_dir()
    if not zoo.is_installed("dawson2020") or directory is None:
        return ()
    from galexplore.data.fits_io import read_maps_from_fits

    names, maps = read_maps_from_fits(uploads.fits_in_directory(directory))
    return tuple(zip(names, maps))


class SourcePicker(pn.viewable.Viewer):
    """Sidebar widgets that open another dataset or model: choosing a model opens it."""

    def __init__(self, session: Session, **params):
        super().__init__(**params)
        self.session = session
        bundle = session.bundle
        self.dataset = pn.widgets.TextInput(label="Dataset directory", value=str(bundle.dataset.path),
                                            sizing_mode="stretch_width")
        self.model = pn.widgets.Select(label="Model", options=model_choices(bundle.model.path),
                                       value=str(bundle.model.path), sizing_mode="stretch_width")
        self.model_path = pn.widgets.TextInput(label="...or a checkpoint directory", placeholder="/path/to/checkpoint",
                                               sizing_mode="stretch_width")
        self.button = pn.widgets.Button(label="Open", color="primary")
        self.progress = pn.indicators.Progress(value=-1, max=100, visible=False,
                                               sizing_mode="stretch_width", css_classes=["open-progress"])
        self.status = pn.pane.Markdown("", css_classes=["open-status"], sizing_mode="stretch_width")
        self.button.on_click(self._on_open)
        pn.bind(self._on_model, self.model, watch=True)

    async def _on_model(self, model: str) -> None:
        if model != str(self.session.bundle.model.path):
            await self.open(self.dataset.value, model)

    async def _on_open(self, event) -> None:
        typed = self.model_path.value.strip()
        await self.open(self.dataset.value, typed or self.model.value, typed=bool(typed))

    async def open(self, dataset: str, model: str, typed: bool = True) -> None:
        """Open ``dataset`` with ``model`` (paths confined to the allowed directories),
        computing the embedding in a background process when it is not cached."""
        from galexplore.explorer.bundles import needs_inference

        session = self.session
        dataset = confine(dataset, session.allowed_dirs)
        if typed or Path(model).is_dir():
            model = str(confine(model, session.allowed_dirs))
        self.button.disabled = True
        self.progress.param.update(visible=True, value=-1)
        try:
            if await asyncio.to_thread(needs_inference, dataset, model):
                await self._embed_in_background(dataset, model)
            self.status.object = "reading the embedding..."
            bundle = await asyncio.to_thread(BUNDLES.get, dataset, model)
            choices = await asyncio.to_thread(model_choices, bundle.model.path)
            await feedback.in_session(lambda: self._show(bundle, Path(dataset).name, choices))
        finally:
            await feedback.in_session(self._idle)

    def _show(self, bundle: Bundle, dataset_name: str, choices: dict[str, str]) -> None:
        self.session.source.switch(bundle)
        self.session.messages.notify(f"opened {dataset_name} with model {bundle.name}", "success")
        if self.model.value != str(bundle.model.path):
            self.model.param.update(options=choices, value=str(bundle.model.path))

    def _idle(self) -> None:
        self.button.disabled = False
        self.progress.visible = False
        self.status.object = ""

    async def _embed_in_background(self, dataset: Path, model: str) -> None:
        """Compute the embedding in a low-priority process, showing its progress."""
        from galexplore.training.jobs import FINISHED, embedding_job, stage_text

        job = embedding_job(model, dataset, data_dir() / "jobs")
        job.start()
        try:
            while not job.done:
                stage = job.stage
                if stage is not None:
                    self.status.object = literal(stage_text(stage))
                    if stage.get("total"):
                        self.progress.value = int(100 * stage["done"] / stage["total"])
                await asyncio.sleep(POLL_PERIOD_MS / 1000)
        finally:
            job.cancel(grace_s=2.0)
        if job.status != FINISHED:
            raise GalexploreError(f"computing the embedding failed: {job.error or job.message}")

    def __panel__(self):
        return pn.Column(self.dataset, self.model, self.model_path, self.button, self.progress, self.status,
                         sizing_mode="stretch_width")


def message_pane(messages: Messages) -> pn.viewable.Viewable:
    """An alert under the title showing the session's last error or notice, as text (one pane,
    updated: a pane replaced in a served page can lose its style sheets)."""
    return pn.pane.Alert(pn.bind(literal, messages.param.text), alert_type=messages.param.level,
                         visible=pn.bind(bool, messages.param.text), css_classes=["galexplore-message"],
                         sizing_mode="stretch_width")


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


class ExplorerPage(pn.viewable.Viewer):
    """The explorer page of one session.

    Parameters
    ----------
    session : its states.
    selections_dir : where named selections are kept.
    models_dir : where models trained from the page are written.
    real_overlay : show the 30 real ALMA galaxies of Dawson et al. (2020) when available.
    """

    def __init__(self, session: Session, selections_dir: Path, models_dir: Path, real_overlay: bool = True,
                 **params):
        super().__init__(**params)
        self.session = session
        self.selections_dir = Path(selections_dir)
        self.models_dir = Path(models_dir)
        feedback.register(session.messages)
        self.markers = Markers(map=session.map, messages=session.messages,
                               uploaded=list(_real_galaxies()) if real_overlay else [])
        self.latent = LatentMap(map=session.map, selection=session.selection, boundary=session.boundary,
                                messages=session.messages)
        self.detail = DetailView(map=session.map, messages=session.messages)
        self._views: dict[str, object] = {}
        # every tab stays in the page once built (a tab taken out of the page and put back would
        # lose its models); the others are empty until first shown
        self._placeholders = {name: pn.Column() for name in LAZY_TABS}
        self.tabs = pn.Tabs(
            ("Explore", pn.Row(pn.Column(self.latent, SelectionCount(selection=session.selection)), self.detail)),
            *self._placeholders.items(), dynamic=False, css_classes=["explorer-tabs"])
        pn.bind(self._on_tab, self.tabs.param.active, watch=True)
        if pn.state.curdoc is not None and pn.state.curdoc.session_context is not None:
            pn.state.on_session_destroyed(self._on_destroyed)
            pn.state.onload(self._preload_model)
            if self.markers.uploaded:
                pn.state.onload(self.markers.place)

    async def _preload_model(self) -> None:
        """Load the model's weights once the page is shown, so that the first click finds them."""
        model = self.session.bundle.model
        if model is not None and not model.is_loaded:
            await asyncio.to_thread(model.loaded)

    def _build_tab(self, name: str):
        s = self.session
        if name == "Selection":
            from galexplore.ui.selection_view import SelectionView
            view = SelectionView(self.selections_dir, selection=s.selection, messages=s.messages)
        elif name == "Statistics":
            from galexplore.ui.stats_view import StatsView
            view = StatsView(selection=s.selection, messages=s.messages)
        elif name == "Your data":
            from galexplore.ui.upload_view import UploadView
            view = UploadView(markers=self.markers, map=s.map, messages=s.messages, allowed_dirs=s.allowed_dirs)
        elif name == "Boundaries":
            from galexplore.ui.boundary_view import BoundaryView
            view = BoundaryView(selection=s.selection, boundary=s.boundary, messages=s.messages,
                                models_dir=self.models_dir)
        else:
            from galexplore.ui.training_view import TrainingView
            view = TrainingView(source=s.source, selection=s.selection, boundary=s.boundary, messages=s.messages,
                                models_dir=self.models_dir)
        self._views[name] = view
        return view

    def _on_tab(self, active: int) -> None:
        shown = (["Explore", *LAZY_TABS])[active]
        if shown in self._placeholders and shown not in self._views:
            self._placeholders[shown].objects = [self._build_tab(shown)]
        for name, view in self._views.items():
            if hasattr(view, "shown"):
                view.shown = name == shown

    def _on_destroyed(self, session_context) -> None:
        """End of the session: stop its job and its polling, drop its states, and hand the
        memory back once the server has dropped the session."""
        for view in self._views.values():
            close = getattr(view, "close", None)
            if close is not None:
                close()
        self._views.clear()
        release_memory_later()

    def __panel__(self):
        s = self.session
        sidebar = pn.Column(
            pn.pane.Markdown("### Data"), SourcePicker(s),
            pn.pane.Markdown("### Latent map"), MapControls(map=s.map, selection=s.selection),
            width=SIDEBAR_WIDTH, css_classes=["galexplore-sidebar"])
        header = pn.Column(pn.pane.Markdown(f"## {TITLE}", css_classes=["galexplore-header"]),
                           message_pane(s.messages), sizing_mode="stretch_width")
        return pn.Column(header, pn.Row(sidebar, self.tabs), stylesheets=[CSS], sizing_mode="stretch_width")


def build_app(dataset=None, model=None, *, allowed_dirs=(), selections_dir=None, models_dir=None,
              real_overlay: bool = True) -> ExplorerPage:
    """The explorer page for one session.

    Parameters
    ----------
    dataset : dataset directory (default: the shipped sample universe).
    model : checkpoint directory or zoo name (default: the shipped sample autoencoder).
    allowed_dirs : more directories the page may open (see `allowed_directories`).
    selections_dir : where named selections are kept (default: <data_dir>/selections).
    models_dir : where trained models are written (default: <data_dir>/models).
    real_overlay : show the 30 real ALMA galaxies of Dawson et al. (2020) when available.

    The page's ``session`` attribute holds its states.
    """
    feedback.install()
    feedback.quiet_closed_pages()
    dataset = Path(dataset) if dataset is not None else SAMPLE_DATASET
    model = str(model) if model is not None else default_model()
    session = Session.open(BUNDLES.get(dataset, model), allowed_directories(dataset, model, allowed_dirs))
    return ExplorerPage(session, Path(selections_dir) if selections_dir is not None else data_dir() / "selections",
                        Path(models_dir) if models_dir is not None else user_models_dir(), real_overlay=real_overlay)


def configure_panel() -> None:
    """Panel's settings for the explorer; its JavaScript and CSS come from this server."""
    pn.extension("tabulator", sizing_mode="fixed")


def warm_up(say=None) -> None:
    """Start the server's thread limits and compile Datashader's kernels for the map
    (seconds, once per process); ``say`` is called with a line when they are ready."""
    from galexplore.explorer import raster

    limit_server_threads()
    started = time.monotonic()
    raster.warm_up()
    if say is not None:
        say(f"Datashader is ready to draw the map (compiled in {time.monotonic() - started:.1f} s)")


@functools.cache
def start_warm_up(say=None) -> threading.Thread:
    """Run `warm_up` in a background thread, once per process (per ``say``; later calls return that thread)."""
    thread = threading.Thread(target=warm_up, args=(say,), name="galexplore-warm-up", daemon=True)
    thread.start()
    return thread


def progress_printer(started: float):
    """A function printing one line of start-up progress on standard error, with the seconds
    since ``started`` (a `time.monotonic` reading)."""
    def say(text: str) -> None:
        print(f"galexplore: [{time.monotonic() - started:4.1f} s] {text}", file=sys.stderr, flush=True)

    return say


def serve(dataset=None, model=None, port: int = 5006, show: bool = True, threaded: bool = False,
          allow_remote: bool = False, started: float | None = None, **build_kwargs):
    """Serve the explorer on localhost:``port``; each browser session gets its own state.

    With ``allow_remote`` the server listens on every interface and takes clients from any
    host and page origin: there is no authentication, so only on a trusted network.
    ``started``: when the command began (`time.monotonic`), for the progress lines it prints.
    Returns the server when ``threaded`` (it runs in a thread).
    """
    say = progress_printer(time.monotonic() if started is None else started)
    say("loading the sample universe and its model card" if dataset is None else f"loading {dataset}")
    dataset = Path(dataset) if dataset is not None else SAMPLE_DATASET
    model = str(model) if model is not None else default_model()
    BUNDLES.get(dataset, model, status_callback=say)  # fail here, with a readable message, not in every session
    say("compiling Datashader's kernels in the background (a page opened meanwhile draws its map once they are ready)")
    start_warm_up(say)
    configure_panel()

    def session():
        refusal = session_refusal(allow_remote)
        return refusal_page(refusal) if refusal else build_app(dataset, model, **build_kwargs)

    address = "0.0.0.0" if allow_remote else "localhost"
    origins = ["*"] if allow_remote else [f"localhost:{port}", f"127.0.0.1:{port}"]
    say(f"listening on http://{'localhost' if not allow_remote else address}:{port}/")
    try:
        return pn.serve({"/": session}, port=port, address=address, show=show, threaded=threaded,
                        websocket_origin=origins, title="galexplore", start=True)
    except OSError as error:
        raise GalexploreError(f"cannot serve on port {port} ({error}); choose another --port") from error
