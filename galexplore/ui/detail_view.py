"""The detail view of the clicked galaxy: input channels with units, the model's
reconstruction and residual, a saliency overlay, properties, predictions with position-angle
arrows, nearest neighbours in latent space and a latent traversal."""

from __future__ import annotations

import numpy as np
import panel as pn
import param

from galexplore.ui.bundle import latent_columns
from galexplore.ui.detail import (
    SALIENCY_METHODS,
    GalaxyDetail,
    can_traverse,
    galaxy_detail,
    galaxy_saliency,
    latent_traversal,
    saliency_targets,
    thumbnail_png,
)
from galexplore.ui.map_images import Arrow, MapPanel, grid_png, map_limits
from galexplore.ui.callbacks import guarded
from galexplore.ui.state import ExplorerState
from galexplore.ui.text import literal

#: Colormap of each known channel; velocities are diverging and centred on zero.
CHANNEL_CMAPS = {"mom0": "inferno", "mom1": "RdBu_r", "mom2": "viridis", "env": "magma"}
DIVERGING = {"mom1"}
ARROW_LENGTH_PX = 26.0
N_NEIGHBOURS = 8
TRAVERSAL_STEPS = 7
#: Panels per row and pixel enlargement of the detail images.
DETAIL_COLUMNS = 4
DETAIL_SCALE = 2


def pa_arrow_end(pa_deg: float) -> tuple[float, float]:
    """Pixel (column, row) at which an arrow from the map centre along ``pa_deg`` ends.

    A unit vector at PA theta (east of north) points along (d_col, d_row) = (-sin theta, cos theta).
    """
    theta = np.radians(pa_deg)
    return 31.5 - ARROW_LENGTH_PX * np.sin(theta), 31.5 + ARROW_LENGTH_PX * np.cos(theta)


def _channel_panel(detail: GalaxyDetail, name: str) -> MapPanel:
    """A dataset channel in its units; velocities diverging around 0 with the PA arrows."""
    image = detail.maps[name]
    unit = detail.units.get(name, "")
    arrows = []
    if name == "mom1":
        for pa, colour, label in ((detail.pa_true, "black", "true"), (detail.pa_latent, "#00a000", "latent")):
            if pa is not None and np.isfinite(pa):
                arrows.append(Arrow((31.5, 31.5), pa_arrow_end(pa), colour, f"{label} {pa:.0f}°"))
    return MapPanel(image, CHANNEL_CMAPS.get(name, "viridis"), name, f"{name} [{unit}]" if unit else name,
                    map_limits(image, symmetric=name in DIVERGING), arrows=arrows)


def detail_panels(detail: GalaxyDetail, recipe: str) -> list[MapPanel]:
    """Every input channel, then the model input, reconstruction and residual (recipe units,
    diverging around 0; reconstruction and input share one colour scale)."""
    panels = [_channel_panel(detail, name) for name in detail.maps]
    channel = detail.model_channels[0]
    x = detail.model_input[0]
    shared = map_limits(x if detail.reconstruction is None else np.stack([x, detail.reconstruction[0]]),
                        symmetric=True)
    panels.append(MapPanel(x, "RdBu_r", f"model input ({channel})", f"{recipe} units", shared))
    if detail.reconstruction is not None:
        panels.append(MapPanel(detail.reconstruction[0], "RdBu_r", "reconstruction", f"{recipe} units", shared))
        panels.append(MapPanel(detail.residual[0], "RdBu_r", "residual (input - recon.)", f"{recipe} units",
                               map_limits(detail.residual[0], symmetric=True)))
    return panels


def detail_png(detail: GalaxyDetail, recipe: str) -> bytes:
    """One PNG of `detail_panels`, four to a row."""
    return grid_png(detail_panels(detail, recipe), columns=DETAIL_COLUMNS, scale=DETAIL_SCALE)


def saliency_png(detail: GalaxyDetail, saliency: np.ndarray, target: str) -> bytes:
    """The saliency strength (sum of |gradient| over the model's channels) over the model input in grey."""
    strength = np.abs(saliency).sum(axis=0)
    shown = np.where(strength > 0, strength, np.nan)
    panel = MapPanel(shown, "inferno", f"saliency of {target}", "|gradient| (abs. sum)", map_limits(shown),
                     underlay=detail.model_input[0], alpha=0.7)
    return grid_png([panel], columns=1, scale=DETAIL_SCALE)


class DetailView(pn.viewable.Viewer):
    """Everything about the clicked galaxy (`ExplorerState.clicked_row`).

    A click first updates the header, the maps (channels, model input, reconstruction,
    residual) and the properties; the saliency map, neighbour thumbnails and latent
    traversal follow in a second update scheduled right after, so the maps appear at once.
    """

    show_saliency = param.Boolean(default=True, doc="compute and show the saliency map")
    saliency_method = param.Selector(objects=list(SALIENCY_METHODS), default="vanilla gradient")
    saliency_target = param.Selector(objects=[])
    traversal_axis = param.Integer(default=0, bounds=(0, None))

    def __init__(self, state: ExplorerState, **params):
        super().__init__(**params)
        self.state = state
        self._cache: tuple[int, int, GalaxyDetail] | None = None
        self.header = pn.pane.Markdown("Click a galaxy in the latent map to see it here.")
        self.images = pn.pane.PNG(None, css_classes=["detail-images"], width=800)
        self.saliency = pn.pane.PNG(None, css_classes=["detail-saliency"], width=200)
        self.facts = pn.pane.Markdown("", width=360)
        self._neighbour_ids: list[int | None] = [None] * N_NEIGHBOURS
        self._neighbour_images = [pn.pane.PNG(None, width=128, height=128) for _ in range(N_NEIGHBOURS)]
        self._neighbour_buttons = [pn.widgets.Button(label="", width=128, button_type="light")
                                   for _ in range(N_NEIGHBOURS)]
        for slot, button in enumerate(self._neighbour_buttons):
            button.on_click(guarded(state, lambda event, slot=slot: self._show_neighbour(slot)))
        self.neighbours = pn.FlexBox(*[pn.Column(image, button, width=136, visible=False)
                                       for image, button in zip(self._neighbour_images, self._neighbour_buttons)])
        self._traversal_images = [pn.pane.PNG(None, width=110, height=110) for _ in range(TRAVERSAL_STEPS)]
        self._traversal_labels = [pn.pane.Markdown("", margin=(0, 5)) for _ in range(TRAVERSAL_STEPS)]
        self.traversal = pn.Row(*[pn.Column(image, label) for image, label in
                                  zip(self._traversal_images, self._traversal_labels)], visible=False)
        self.traversal_note = pn.pane.Markdown("")
        state.param.watch(self._on_bundle, "bundle_version")
        state.param.watch(guarded(state, self._on_click), "clicked_row")
        self.param.watch(guarded(state, self._on_traversal), "traversal_axis")
        self.param.watch(guarded(state, self._render_saliency), ["show_saliency", "saliency_method", "saliency_target"])
        self._on_bundle()

    # ---------------------------------------------------------------- data
    def detail(self) -> GalaxyDetail | None:
        """The clicked galaxy's detail, computed once per click."""
        row = self.state.clicked_row
        if row is None:
            return None
        key = (self.state.bundle_version, row)
        if self._cache is None or self._cache[:2] != key:
            self._cache = (*key, galaxy_detail(self.state.bundle, row, N_NEIGHBOURS))
        return self._cache[2]

    # ---------------------------------------------------------------- building
    def _on_bundle(self, *events) -> None:
        bundle = self.state.bundle
        targets = saliency_targets(bundle)
        with param.parameterized.discard_events(self):
            self.param.saliency_target.objects = targets
            self.saliency_target = targets[0] if targets else None
            self.param.traversal_axis.bounds = (0, max(len(latent_columns(bundle.table)) - 1, 0))
            self.traversal_axis = 0
        self._cache = None
        self._on_click()

    def _render_saliency(self, *events) -> None:
        detail = self.detail()
        if detail is None or not self.show_saliency or self.saliency_target is None:
            self.saliency.object = None
            return
        values = galaxy_saliency(self.state.bundle, detail.row, self.saliency_method, self.saliency_target)
        self.saliency.object = saliency_png(detail, values, self.saliency_target)

    # ---------------------------------------------------------------- updates
    def _on_click(self, *events) -> None:
        detail = self.detail()
        if detail is None:
            self.header.object = "Click a galaxy in the latent map to see it here."
            self.facts.object = ""
            self.images.object = None
            self.saliency.object = None
            for card in self.neighbours:
                card.visible = False
            self.traversal.visible = False
            return
        self.header.object = f"### Galaxy id {detail.galaxy_id} (row {detail.row})"
        self.images.object = detail_png(detail, self.state.bundle.model.card.recipe)
        self.facts.object = self._facts_markdown(detail)
        pn.state.execute(guarded(self.state, self._on_click_details), schedule=True)

    def _on_click_details(self) -> None:
        """The slower parts of a click, sent in a second update: saliency, neighbours, traversal."""
        detail = self.detail()
        if detail is None:
            return
        self._render_saliency()
        rows = detail.neighbours[:N_NEIGHBOURS].astype(np.int64)
        for slot, card in enumerate(self.neighbours):
            card.visible = slot < rows.size
        if rows.size:
            bundle = self.state.bundle
            channel = bundle.model.card.channels[0]
            maps = np.asarray(bundle.dataset.maps[rows, bundle.dataset.channel_index(channel)], dtype=np.float32)
            ids = self.state.table["id"].to_numpy()[rows]
            for slot, (image, galaxy_id) in enumerate(zip(maps, ids)):
                self._neighbour_ids[slot] = int(galaxy_id)
                self._neighbour_images[slot].object = thumbnail_png(image, CHANNEL_CMAPS.get(channel, "viridis"),
                                                                    symmetric=channel in DIVERGING)
                self._neighbour_buttons[slot].name = f"id {int(galaxy_id)}"
        self._on_traversal()

    def _show_neighbour(self, slot: int) -> None:
        if self._neighbour_ids[slot] is not None:
            self.state.show_id(self._neighbour_ids[slot])

    def _facts_markdown(self, detail: GalaxyDetail) -> str:
        units = self.state.units
        lines = ["| property | value | unit |", "|---|---|---|"]
        for name, value in {**detail.properties, **detail.predictions}.items():
            shown = f"{value:.4g}" if isinstance(value, float) else str(value)
            lines.append(f"| {literal(name)} | {literal(shown)} | {literal(units.get(name, ''))} |")
        if "pred_class" in detail.predictions and np.isfinite(detail.predictions["pred_class"]):
            cls = int(detail.predictions["pred_class"])
            lines.append(f"| kappa class | {'kappa > 0.5 (rotating)' if cls else 'kappa < 0.5 (disturbed)'} | |")
        if detail.pa_true is not None and detail.pa_latent is not None:
            error = (detail.pa_latent - detail.pa_true + 180.0) % 360.0 - 180.0
            lines.append(f"| PA error (latent - true) | {error:.1f} | deg |")
        return "\n".join(lines)

    def _on_traversal(self, *events) -> None:
        detail = self.detail()
        bundle = self.state.bundle
        if detail is None:
            return
        if not can_traverse(bundle):
            self.traversal_note.object = (f"Model {literal(bundle.model.name)} needs the encoder's pooling "
                                          "indices to decode, so it has no latent traversal.")
            self.traversal.visible = False
            return
        values, decoded = latent_traversal(bundle, detail.row, self.traversal_axis, steps=TRAVERSAL_STEPS)
        column = latent_columns(bundle.table)[self.traversal_axis]
        self.traversal_note.object = f"Decoded along **{column}** (+-2 sigma through this galaxy)."
        for image, label, value, decoded_map in zip(self._traversal_images, self._traversal_labels, values, decoded):
            image.object = thumbnail_png(decoded_map[0], "RdBu_r", -1.0, 1.0)
            label.object = f"{column} = {value:.3g}"
        self.traversal.visible = True

    def __panel__(self):
        return pn.Column(
            self.header,
            self.images,
            pn.Row(pn.widgets.Checkbox.from_param(self.param.show_saliency, label="Saliency", width=80),
                   pn.widgets.Select.from_param(self.param.saliency_method, label="Saliency method", width=170),
                   pn.widgets.Select.from_param(self.param.saliency_target, label="Saliency target", width=150)),
            pn.Row(self.saliency, self.facts),
            pn.pane.Markdown("**Nearest neighbours in latent space** (click to show)"),
            self.neighbours,
            pn.pane.Markdown("**Latent traversal**"),
            pn.widgets.IntInput.from_param(self.param.traversal_axis, label="Latent axis", width=120),
            self.traversal_note, self.traversal,
            name="Detail", css_classes=["detail-view"],
        )
