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
from galexplore.ui.callbacks import guarded
from galexplore.ui.state import ExplorerState

#: Colormap of each known channel; velocities are diverging and centred on zero.
CHANNEL_CMAPS = {"mom0": "inferno", "mom1": "RdBu_r", "mom2": "viridis", "env": "magma"}
DIVERGING = {"mom1"}
ARROW_LENGTH_PX = 26.0
N_NEIGHBOURS = 8
TRAVERSAL_STEPS = 7


def _show(ax, image: np.ndarray, cmap: str, title: str, label: str, symmetric: bool = False,
          limits: tuple[float, float] | None = None) -> None:
    """Draw one 64 x 64 map with origin="lower" (north up, east left) and a labelled colourbar."""
    finite = image[np.isfinite(image)]
    if limits is None and finite.size:
        if symmetric:
            bound = float(np.max(np.abs(finite))) or 1.0
            limits = (-bound, bound)
        else:
            limits = (float(finite.min()), float(finite.max()))
    artist = ax.imshow(image, origin="lower", cmap=cmap, interpolation="nearest",
                       vmin=None if limits is None else limits[0], vmax=None if limits is None else limits[1])
    ax.set_facecolor("#dddddd")
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    colourbar = ax.figure.colorbar(artist, ax=ax, fraction=0.046, pad=0.03)
    colourbar.set_label(label, fontsize=7)
    colourbar.ax.tick_params(labelsize=6)


def pa_arrow_end(pa_deg: float) -> tuple[float, float]:
    """Pixel (column, row) at which an arrow from the map centre along ``pa_deg`` ends.

    A unit vector at PA theta (east of north) points along (d_col, d_row) = (-sin theta, cos theta).
    """
    theta = np.radians(pa_deg)
    return 31.5 - ARROW_LENGTH_PX * np.sin(theta), 31.5 + ARROW_LENGTH_PX * np.cos(theta)


def detail_figure_png(detail: GalaxyDetail, saliency: np.ndarray | None, target: str | None,
                      recipe: str) -> bytes:
    """One PNG with every input channel (units on the colourbars; velocities diverging around
    0 with the true and latent PA arrows), the model input, reconstruction, residual and the
    saliency map over the input."""
    import io

    from matplotlib.figure import Figure

    panels = len(detail.maps) + (3 if detail.reconstruction is not None else 1) + (saliency is not None)
    cols = 4
    rows = int(np.ceil(panels / cols))
    figure = Figure(figsize=(cols * 2.3, rows * 2.0), dpi=90, layout="constrained")
    axes = list(figure.subplots(rows, cols).ravel())
    for ax in axes[panels:]:
        ax.set_visible(False)
    k = 0
    for name, image in detail.maps.items():
        unit = detail.units.get(name, "")
        _show(axes[k], image, CHANNEL_CMAPS.get(name, "viridis"), name, f"{name} [{unit}]" if unit else name,
              symmetric=name in DIVERGING)
        if name == "mom1":
            for pa, colour, label in ((detail.pa_true, "black", "true"), (detail.pa_latent, "#00a000", "latent")):
                if pa is not None and np.isfinite(pa):
                    x1, y1 = pa_arrow_end(pa)
                    axes[k].annotate("", xy=(x1, y1), xytext=(31.5, 31.5),
                                     arrowprops=dict(arrowstyle="-|>", color=colour, lw=2))
                    axes[k].text(x1, y1, f"{label} {pa:.0f}°", color=colour, fontsize=7)
        k += 1
    channel = detail.model_channels[0]
    _show(axes[k], detail.model_input[0], "RdBu_r", f"model input ({channel})", f"{recipe} units", True)
    k += 1
    if detail.reconstruction is not None:
        _show(axes[k], detail.reconstruction[0], "RdBu_r", "reconstruction", f"{recipe} units", True)
        _show(axes[k + 1], detail.residual[0], "RdBu_r", "residual (input - recon.)", f"{recipe} units", True)
        k += 2
    if saliency is not None:
        strength = np.abs(saliency).sum(axis=0)
        axes[k].imshow(detail.model_input[0], origin="lower", cmap="gray", interpolation="nearest")
        _show(axes[k], np.where(strength > 0, strength, np.nan), "inferno",
              f"saliency of {target}", "|gradient| (abs. sum)")
        axes[k].images[-1].set_alpha(0.7)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


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
        self.images = pn.pane.PNG(None, css_classes=["detail-images"], width=830, height=365)
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
        self.param.watch(guarded(state, self._render_images), ["saliency_method", "saliency_target"])
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
        self._on_click()

    def _render_images(self, *events) -> None:
        detail = self.detail()
        if detail is None:
            self.images.object = None
            return
        saliency = None
        if self.saliency_target is not None:
            saliency = galaxy_saliency(self.state.bundle, detail.row, self.saliency_method, self.saliency_target)
        self.images.object = detail_figure_png(detail, saliency, self.saliency_target,
                                               self.state.bundle.model.card.recipe)

    # ---------------------------------------------------------------- updates
    def _on_click(self, *events) -> None:
        detail = self.detail()
        if detail is None:
            self.header.object = "Click a galaxy in the latent map to see it here."
            self.facts.object = ""
            self.images.object = None
            for card in self.neighbours:
                card.visible = False
            self.traversal.visible = False
            return
        self.header.object = f"### Galaxy id {detail.galaxy_id} (row {detail.row})"
        self._render_images()
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
            pn.Row(pn.widgets.Select.from_param(self.param.saliency_method, label="Saliency method", width=200),
                   pn.widgets.Select.from_param(self.param.saliency_target, label="Saliency target", width=200)),
            self.images,
            pn.Row(self.facts, pn.Column(pn.pane.Markdown("**Nearest neighbours in latent space** (click to show)"),
                                         self.neighbours, width=620)),
            pn.pane.Markdown("**Latent traversal**"),
            pn.widgets.IntInput.from_param(self.param.traversal_axis, label="Latent axis", width=120),
            self.traversal_note, self.traversal,
            name="Detail", css_classes=["detail-view"],
        )
