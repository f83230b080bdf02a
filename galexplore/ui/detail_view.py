"""The detail view of the clicked galaxy: its maps with units, the model's reconstruction and
residual, a saliency map, its properties, the position-angle arrows, its nearest neighbours in
latent space and a latent traversal (`galexplore.explorer.detail` computes all of them).

A click first shows the maps and properties, then the saliency, neighbours and traversal;
both steps run off the event loop, and a result that arrives after another click or model
switch is dropped.
"""

from __future__ import annotations

import asyncio

import numpy as np
import panel as pn
import param

from galexplore.explorer import detail as details
from galexplore.explorer.bundles import latent_columns
from galexplore.ui.feedback import busy
from galexplore.ui.state import MapState, Messages
from galexplore.ui.text import literal

N_NEIGHBOURS = 8
TRAVERSAL_STEPS = 7
#: Width of the detail column in pixels (two map panels side by side).
WIDTH = 410


class DetailView(pn.viewable.Viewer):
    """Everything about the galaxy in `MapState.clicked`."""

    map = param.ClassSelector(class_=MapState)
    messages = param.ClassSelector(class_=Messages)
    show_saliency = param.Boolean(default=True, doc="compute and show the saliency map")
    saliency_method = param.Selector(objects=list(details.SALIENCY_METHODS), default="vanilla gradient")
    saliency_target = param.Selector(objects=[])
    traversal_axis = param.Integer(default=0, bounds=(0, None))

    def __init__(self, **params):
        super().__init__(**params)
        self._detail: details.GalaxyDetail | None = None
        self._detail_key: tuple | None = None
        self.header = pn.pane.Markdown("Click a galaxy in the latent map to see it here.", width=WIDTH)
        self.images = pn.pane.PNG(None, css_classes=["detail-images"], width=WIDTH, fixed_aspect=True)
        self.arrows = pn.pane.Markdown("", width=WIDTH, css_classes=["pa-legend"])
        self.saliency = pn.pane.PNG(None, css_classes=["detail-saliency"], width=200)
        self.saliency_caption = pn.pane.Markdown("", width=WIDTH - 210)
        self.facts = pn.pane.Markdown("", width=WIDTH - 10, height=230, styles={"overflow-y": "auto"},
                                      css_classes=["detail-facts"])  # a long table scrolls in its box
        self.neighbours = pn.pane.PNG(None, css_classes=["detail-neighbours"], width=WIDTH, fixed_aspect=True)
        self.neighbour_ids = pn.widgets.Select(label="Show a neighbour", options={}, width=200,
                                               css_classes=["neighbour-select"])
        self.traversal = pn.pane.PNG(None, css_classes=["detail-traversal"], width=WIDTH, fixed_aspect=True)
        self.traversal_note = pn.pane.Markdown("", width=WIDTH)
        pn.bind(self._show_neighbour, self.neighbour_ids, watch=True)
        # until the first click the view is only its header: a page costs less to build
        self.layout = pn.Column(self.header, name="Detail", css_classes=["detail-view"], width=WIDTH + 10)
        self._follow_bundle()

    # ---------------------------------------------------------------- state
    @param.depends("map.source.bundle", watch=True)
    def _follow_bundle(self) -> None:
        bundle = self.map.bundle
        targets = details.saliency_targets(bundle) if bundle.model is not None else []
        with param.parameterized.discard_events(self):
            self.param.saliency_target.objects = targets
            if self.saliency_target not in targets:
                self.saliency_target = targets[0] if targets else None
            self.param.traversal_axis.bounds = (0, max(len(latent_columns(bundle.columns)) - 1, 0))
            self.traversal_axis = min(self.traversal_axis, self.param.traversal_axis.bounds[1])

    def _current(self) -> tuple | None:
        row = self.map.clicked
        return None if row is None else (self.map.bundle, row)

    async def _load(self, key: tuple) -> details.GalaxyDetail:
        """The detail of (bundle, row), computed once per click, off the event loop."""
        if self._detail_key != key or self._detail is None:
            bundle, row = key
            self._detail = await asyncio.to_thread(details.galaxy_detail, bundle, row, N_NEIGHBOURS)
            self._detail_key = key
        return self._detail

    # ---------------------------------------------------------------- updates
    @param.depends("map.source.bundle", watch=True)
    async def _follow_bundle_detail(self) -> None:
        await self._follow_click()

    @param.depends("map.clicked", watch=True)
    async def _follow_click(self) -> None:
        key = self._current()
        if key is None:
            self._clear()
            return
        bundle, row = key
        if len(self.layout) == 1:
            self.layout.objects = self._content()
        with busy(self.images):
            detail = await self._load(key)
            png = await asyncio.to_thread(details.detail_png, detail, bundle.model.card.recipe)
        if self._current() != key:
            return  # another click or another model meanwhile
        self.header.object = f"### Galaxy id {detail.galaxy_id} (row {detail.row})"
        self.images.object = png
        self.arrows.object = literal(details.pa_legend(detail))
        self.facts.object = self._facts_markdown(detail)
        await self._show_saliency()
        await self._show_neighbours(key, detail)
        await self._show_traversal()

    def _clear(self) -> None:
        self.header.object = "Click a galaxy in the latent map to see it here."
        for pane in (self.images, self.saliency, self.neighbours, self.traversal):
            pane.object = None
        for pane in (self.facts, self.arrows, self.saliency_caption, self.traversal_note):
            pane.object = ""
        self.neighbour_ids.options = {}

    @param.depends("show_saliency", "saliency_method", "saliency_target", watch=True)
    async def _show_saliency(self) -> None:
        key = self._current()
        if key is None or not self.show_saliency or self.saliency_target is None:
            self.saliency.object = None
            self.saliency_caption.object = ""
            return
        bundle, row = key
        target, method = self.saliency_target, self.saliency_method
        with busy(self.saliency):
            detail = await self._load(key)
            values = await asyncio.to_thread(details.galaxy_saliency, bundle, row, method, target)
            png = await asyncio.to_thread(details.saliency_png, detail, values, target, method)
        if self._current() != key or (self.saliency_target, self.saliency_method) != (target, method):
            return
        self.saliency.object = png
        _, caption = details.SALIENCY_CAPTIONS[details.SALIENCY_METHODS[method]]
        self.saliency_caption.object = (f"**Saliency of {literal(target)}** ({literal(method)}) over the model "
                                        f"input in grey: {literal(caption)}.")

    async def _show_neighbours(self, key, detail: details.GalaxyDetail) -> None:
        bundle, _ = key
        rows = detail.neighbours[:N_NEIGHBOURS].astype(np.int64)
        png = await asyncio.to_thread(details.neighbours_png, bundle, rows) if rows.size else None
        if self._current() != key:
            return
        self.neighbours.object = png
        ids = bundle.column("id")[rows]
        self.neighbour_ids.param.update(options={"(choose)": None, **{f"id {int(i)}": int(i) for i in ids}},
                                        value=None)

    @param.depends("traversal_axis", watch=True)
    async def _show_traversal(self) -> None:
        key = self._current()
        if key is None:
            return
        bundle, row = key
        if not details.can_traverse(bundle):
            self.traversal_note.object = (f"Model {literal(bundle.model.name)} needs the encoder's pooling "
                                          "indices to decode, so it has no latent traversal.")
            self.traversal.object = None
            return
        axis = self.traversal_axis

        def traverse() -> bytes:
            return details.traversal_png(*details.latent_traversal(bundle, row, axis, steps=TRAVERSAL_STEPS))

        png = await asyncio.to_thread(traverse)
        if self._current() != key or self.traversal_axis != axis:
            return
        column = latent_columns(bundle.columns)[axis]
        self.traversal_note.object = (f"Decoded along **{column}** from -2 to +2 standard deviations through this "
                                      f"galaxy (model input space, "
                                      f"{literal(details.input_unit(bundle.model.card.recipe))}); "
                                      f"captions: the value of {column}.")
        self.traversal.object = png

    def _show_neighbour(self, galaxy_id: int | None) -> None:
        if galaxy_id is not None:
            self.map.show_id(galaxy_id)

    def _facts_markdown(self, detail: details.GalaxyDetail) -> str:
        bundle = self.map.bundle
        lines = ["| property | value | unit |", "|---|---|---|"]
        for name, value in {**detail.properties, **detail.predictions}.items():
            shown = f"{value:.4g}" if isinstance(value, float) else str(value)
            lines.append(f"| {literal(name)} | {literal(shown)} | {literal(bundle.unit(name))} |")
        if "pred_class" in detail.predictions and np.isfinite(detail.predictions["pred_class"]):
            threshold = bundle.kappa_threshold
            rotating = int(detail.predictions["pred_class"]) == 1
            lines.append(f"| kappa class (model boundary) | kappa {'>' if rotating else '<'} {threshold:g} "
                         f"({'rotating' if rotating else 'disturbed'}) | |")
        if detail.pa_true is not None and detail.pa_latent is not None:
            error = (detail.pa_latent - detail.pa_true + 180.0) % 360.0 - 180.0
            lines.append(f"| PA error (latent - true) | {error:.1f} | deg |")
        return "\n".join(lines)

    def __panel__(self):
        return self.layout

    def _content(self) -> list:
        return [
            self.header, self.images, self.arrows,
            pn.Row(pn.widgets.Checkbox.from_param(self.param.show_saliency, label="Saliency", width=80),
                   pn.widgets.Select.from_param(self.param.saliency_method, label="Method", width=150),
                   pn.widgets.Select.from_param(self.param.saliency_target, label="Target", width=140),
                   width=WIDTH),
            pn.Row(self.saliency, self.saliency_caption, width=WIDTH),
            pn.pane.Markdown("**Properties and predictions**", width=WIDTH),
            self.facts,
            pn.pane.Markdown("**Nearest neighbours in latent space**", width=WIDTH),
            self.neighbours, self.neighbour_ids,
            pn.pane.Markdown("**Latent traversal**", width=WIDTH),
            pn.widgets.IntInput.from_param(self.param.traversal_axis, label="Latent axis", width=120),
            self.traversal_note, self.traversal,
        ]
