"""The detail view of the clicked galaxy: input channels with units, the model's
reconstruction and residual, a saliency overlay, properties, predictions with position-angle
arrows, nearest neighbours in latent space and a latent traversal."""

from __future__ import annotations

import holoviews as hv
import holoviews.plotting.bokeh  # noqa: F401 -- registers the Bokeh backend whose options are used here
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
from galexplore.ui.callbacks import guarded
from galexplore.ui.state import ExplorerState

#: Colormap of each known channel; velocities are diverging and centred on zero.
CHANNEL_CMAPS = {"mom0": "inferno", "mom1": "RdBu_r", "mom2": "viridis", "env": "magma"}
DIVERGING = {"mom1"}
IMAGE_SIZE = 200
ARROW_LENGTH_PX = 26.0
N_NEIGHBOURS = 8
TRAVERSAL_STEPS = 7


def map_image(image: np.ndarray, name: str, unit: str) -> hv.Image:
    """A 64 x 64 map as an `hv.Image` in pixel coordinates, row 0 (south) at the bottom."""
    return hv.Image(np.flipud(np.asarray(image, dtype=np.float64)), bounds=(-0.5, -0.5, 63.5, 63.5),
                    kdims=["column", "row"], vdims=[hv.Dimension(name, unit=unit or None)])


def pa_arrow(pa_deg: float | None, colour: str, label: str) -> hv.Overlay:
    """An arrow from the map centre along a position angle (east of north, receding side).

    A unit vector at PA theta points along (d_col, d_row) = (-sin theta, cos theta).
    """
    if pa_deg is None or not np.isfinite(pa_deg):
        return hv.Segments([], kdims=["x0", "y0", "x1", "y1"]) * hv.Text(0, 0, "")
    theta = np.radians(pa_deg)
    x1 = 31.5 - ARROW_LENGTH_PX * np.sin(theta)
    y1 = 31.5 + ARROW_LENGTH_PX * np.cos(theta)
    segment = hv.Segments([(31.5, 31.5, x1, y1)], kdims=["x0", "y0", "x1", "y1"]).opts(
        color=colour, line_width=3)
    text = hv.Text(x1, y1, f"{label} {pa_deg:.0f}°").opts(text_color=colour, text_font_size="9pt")
    return segment * text


class DetailView(pn.viewable.Viewer):
    """Everything about the clicked galaxy (`ExplorerState.clicked_row`)."""

    saliency_method = param.Selector(objects=list(SALIENCY_METHODS), default="vanilla gradient")
    saliency_target = param.Selector(objects=[])
    traversal_axis = param.Integer(default=0, bounds=(0, None))

    def __init__(self, state: ExplorerState, **params):
        super().__init__(**params)
        self.state = state
        self._cache: tuple[int, int, GalaxyDetail] | None = None
        self.header = pn.pane.Markdown("Click a galaxy in the latent map to see it here.")
        self.images = pn.pane.HoloViews(None, css_classes=["detail-images"], name="detail-images")
        self.facts = pn.pane.Markdown("", width=360)
        self._neighbour_ids: list[int | None] = [None] * N_NEIGHBOURS
        self._neighbour_images = [pn.pane.PNG(None, width=128, height=128) for _ in range(N_NEIGHBOURS)]
        self._neighbour_buttons = [pn.widgets.Button(name="", width=128, button_type="light")
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
        self.param.saliency_target.objects = targets
        self.saliency_target = targets[0] if targets else None
        self.param.traversal_axis.bounds = (0, max(len(latent_columns(bundle.table)) - 1, 0))
        self._cache = None
        self.images.object = self._layout()
        self._on_click()

    def _stream(self) -> list:
        return [hv.streams.Params(self.state, ["clicked_row"]),
                hv.streams.Params(self, ["saliency_method", "saliency_target"])]

    def _layout(self) -> hv.Layout:
        bundle = self.state.bundle
        ds = bundle.dataset
        opts = dict(width=IMAGE_SIZE + 60, height=IMAGE_SIZE, colorbar=True, framewise=True, xaxis=None,
                    yaxis=None, toolbar=None, tools=["hover"], clipping_colors={"NaN": "#dddddd"})
        panels = []
        for name in ds.channels:
            unit = ds.units.get(name, "")
            panel = hv.DynamicMap(self._channel_panel(name, unit), streams=[hv.streams.Params(self.state, ["clicked_row"])])
            panels.append(panel.opts(hv.opts.Image(cmap=CHANNEL_CMAPS.get(name, "viridis"),
                                                   symmetric=name in DIVERGING, clabel=f"{name} [{unit}]",
                                                   title=name, **opts)))
        if hasattr(bundle.model.model, "reconstruct"):
            for kind, cmap, sym in (("input", "RdBu_r", True), ("reconstruction", "RdBu_r", True),
                                    ("residual", "RdBu_r", True)):
                panel = hv.DynamicMap(self._model_panel(kind), streams=[hv.streams.Params(self.state, ["clicked_row"])])
                panels.append(panel.opts(hv.opts.Image(cmap=cmap, symmetric=sym, title=f"model {kind}",
                                                       clabel=f"{bundle.model.card.recipe} units", **opts)))
        saliency = hv.DynamicMap(self._saliency_panel, streams=self._stream())
        panels.append(saliency.opts(hv.opts.Image(title="saliency", **opts)))
        return hv.Layout(panels).cols(3).opts(shared_axes=False)

    def _channel_panel(self, name: str, unit: str):
        def panel(clicked_row=None):
            detail = self.detail()
            image = detail.maps[name] if detail is not None else np.full((64, 64), np.nan)
            element = map_image(image, name, unit)
            if name != "mom1":
                return element * pa_arrow(None, "black", "") * pa_arrow(None, "black", "")
            true_pa = detail.pa_true if detail is not None else None
            latent_pa = detail.pa_latent if detail is not None else None
            return element * pa_arrow(true_pa, "black", "true") * pa_arrow(latent_pa, "#00a000", "latent")
        return panel

    def _model_panel(self, kind: str):
        def panel(clicked_row=None):
            detail = self.detail()
            if detail is None or detail.reconstruction is None:
                return map_image(np.full((64, 64), np.nan), kind, "")
            image = {"input": detail.model_input, "reconstruction": detail.reconstruction,
                     "residual": detail.residual}[kind][0]
            return map_image(image, f"{kind} ({detail.model_channels[0]})", "")
        return panel

    def _saliency_panel(self, clicked_row=None, saliency_method=None, saliency_target=None):
        detail = self.detail()
        if detail is None or saliency_target is None:
            return map_image(np.full((64, 64), np.nan), "input", "") * \
                map_image(np.full((64, 64), np.nan), "saliency", "").opts(alpha=0.0)
        values = galaxy_saliency(self.state.bundle, detail.row, saliency_method, saliency_target)
        strength = np.abs(values).sum(axis=0)
        base = map_image(detail.model_input[0], "input", "").opts(cmap="gray", colorbar=False, tools=[])
        overlay = map_image(np.where(strength > 0, strength, np.nan), f"|d {saliency_target} / d pixel|", "")
        return base * overlay.opts(cmap="fire", alpha=0.75, colorbar=True, clipping_colors={"NaN": "transparent"})

    # ---------------------------------------------------------------- updates
    def _on_click(self, *events) -> None:
        detail = self.detail()
        if detail is None:
            self.header.object = "Click a galaxy in the latent map to see it here."
            self.facts.object = ""
            for card in self.neighbours:
                card.visible = False
            self.traversal.visible = False
            return
        self.header.object = f"### Galaxy id {detail.galaxy_id} (row {detail.row})"
        self.facts.object = self._facts_markdown(detail)
        for slot, card in enumerate(self.neighbours):
            if slot < len(detail.neighbours):
                row = int(detail.neighbours[slot])
                self._neighbour_ids[slot] = int(self.state.table["id"].iloc[row])
                self._neighbour_images[slot].object = self._thumbnail(row)
                self._neighbour_buttons[slot].name = f"id {self._neighbour_ids[slot]}"
            card.visible = slot < len(detail.neighbours)
        self._on_traversal()

    def _show_neighbour(self, slot: int) -> None:
        if self._neighbour_ids[slot] is not None:
            self.state.show_id(self._neighbour_ids[slot])

    def _facts_markdown(self, detail: GalaxyDetail) -> str:
        units = self.state.units
        lines = ["| property | value | unit |", "|---|---|---|"]
        for name, value in {**detail.properties, **detail.predictions}.items():
            shown = f"{value:.4g}" if isinstance(value, float) else str(value)
            lines.append(f"| {name} | {shown} | {units.get(name, '')} |")
        if "pred_class" in detail.predictions and np.isfinite(detail.predictions["pred_class"]):
            cls = int(detail.predictions["pred_class"])
            lines.append(f"| kappa class | {'kappa > 0.5 (rotating)' if cls else 'kappa < 0.5 (disturbed)'} | |")
        if detail.pa_true is not None and detail.pa_latent is not None:
            error = (detail.pa_latent - detail.pa_true + 180.0) % 360.0 - 180.0
            lines.append(f"| PA error (latent - true) | {error:.1f} | deg |")
        return "\n".join(lines)

    def _thumbnail(self, row: int) -> bytes:
        bundle = self.state.bundle
        channel = bundle.model.card.channels[0]
        image = np.asarray(bundle.dataset.maps[row], dtype=np.float32)[bundle.dataset.channel_index(channel)]
        return thumbnail_png(image, CHANNEL_CMAPS.get(channel, "viridis"), symmetric=channel in DIVERGING)

    def _on_traversal(self, *events) -> None:
        detail = self.detail()
        bundle = self.state.bundle
        if detail is None:
            return
        if not can_traverse(bundle):
            self.traversal_note.object = (f"Model `{bundle.model.name}` needs the encoder's pooling indices to "
                                          "decode, so it has no latent traversal.")
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
            pn.Row(pn.widgets.Select.from_param(self.param.saliency_method, name="Saliency method", width=200),
                   pn.widgets.Select.from_param(self.param.saliency_target, name="Saliency target", width=200)),
            self.images,
            pn.Row(self.facts, pn.Column(pn.pane.Markdown("**Nearest neighbours in latent space** (click to show)"),
                                         self.neighbours, width=620)),
            pn.pane.Markdown("**Latent traversal**"),
            pn.widgets.IntInput.from_param(self.param.traversal_axis, name="Latent axis", width=120),
            self.traversal_note, self.traversal,
            name="Detail", css_classes=["detail-view"],
        )
