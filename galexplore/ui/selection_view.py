"""The selection panel: count, histograms selected-vs-all, a paginated table, a thumbnail
gallery, named selections and the CSV export (with provenance)."""

from __future__ import annotations

import datetime as _dt
import os
from pathlib import Path

import holoviews as hv
import holoviews.plotting.bokeh  # noqa: F401 -- registers the Bokeh backend whose options are used here
import numpy as np
import panel as pn
import param

from galexplore.ui.colours import SELECTION_COLOUR, axis_label
from galexplore.ui.detail import thumbnail_png
from galexplore.ui.detail_view import CHANNEL_CMAPS, DIVERGING
from galexplore.ui.callbacks import guarded
from galexplore.ui.state import ExplorerState
from galexplore.ui.text import literal

GALLERY_SIZE = 24
HISTOGRAM_BINS = 40
TABLE_PAGE_SIZE = 15


def selection_histograms(all_values: np.ndarray, selected_values: np.ndarray, label: str) -> hv.Overlay:
    """Normalised histograms (fraction of galaxies per bin) of all and of the selected galaxies."""
    finite = all_values[np.isfinite(all_values)]
    if finite.size == 0:
        edges = np.linspace(0.0, 1.0, HISTOGRAM_BINS + 1)
    else:
        lo, hi = float(finite.min()), float(finite.max())
        edges = np.linspace(lo, hi if hi > lo else lo + 1.0, HISTOGRAM_BINS + 1)
    layers = []
    for values, name, colour in ((all_values, "all", "#888888"), (selected_values, "selected", SELECTION_COLOUR)):
        values = values[np.isfinite(values)]
        counts, _ = np.histogram(values, bins=edges)
        fraction = counts / max(values.size, 1)
        layers.append(hv.Histogram((edges, fraction), kdims=[hv.Dimension("value", label=label)],
                                   vdims=[hv.Dimension("fraction", label="fraction of galaxies")], label=name)
                      .opts(fill_color=colour, fill_alpha=0.5, line_color=colour))
    return hv.Overlay(layers).opts(width=520, height=260, legend_position="top_right", framewise=True)


class SelectionCount(pn.viewable.Viewer):
    """"N selected of M galaxies": the cheap part of a selection, updated in the gesture's own callback."""

    def __init__(self, state: ExplorerState, **params):
        super().__init__(**params)
        self.state = state
        self.pane = pn.pane.Markdown("", css_classes=["selection-count"], name="selection-count")
        state.param.watch(self._update, ["selection", "bundle_version"])
        self._update()

    def _update(self, *events) -> None:
        self.pane.object = f"**{self.state.selection.size:,} selected** of {len(self.state.table):,} galaxies"

    def __panel__(self):
        return self.pane


class SelectionView(pn.viewable.Viewer):
    """Everything about the current selection of one session. The table, histogram and gallery
    are updated only while ``shown`` (the Selection tab is open), and when it is opened again."""

    histogram_column = param.Selector(objects=[])
    gallery_sort = param.Selector(objects=[])
    gallery_descending = param.Boolean(default=False)
    shown = param.Boolean(default=True, doc="whether the view is on screen")

    def __init__(self, state: ExplorerState, export_dir: str | os.PathLike, **params):
        super().__init__(**params)
        self.state = state
        self.export_dir = Path(export_dir)
        self.count = SelectionCount(state)
        self._stale = True  # table, histogram and gallery behind the selection
        self.table = pn.widgets.Tabulator(pagination="remote", page_size=TABLE_PAGE_SIZE, disabled=True,
                                          show_index=False, sizing_mode="stretch_width", height=480)
        self._gallery_ids: list[int | None] = [None] * GALLERY_SIZE
        self._gallery_images = [pn.pane.PNG(None, width=110, height=110) for _ in range(GALLERY_SIZE)]
        self._gallery_labels = [pn.pane.Markdown("", margin=(0, 4)) for _ in range(GALLERY_SIZE)]
        self._gallery_buttons = [pn.widgets.Button(label="", width=110, button_type="light") for _ in range(GALLERY_SIZE)]
        for slot, button in enumerate(self._gallery_buttons):
            button.on_click(guarded(state, lambda event, slot=slot: self._show(slot)))
        self.gallery_note = pn.pane.Markdown("")
        self.gallery = pn.FlexBox(*[pn.Column(image, label, button, width=118, visible=False) for image, label, button
                                    in zip(self._gallery_images, self._gallery_labels, self._gallery_buttons)])
        self.histogram = pn.pane.HoloViews(None)
        self.name_input = pn.widgets.TextInput(label="Name", placeholder="e.g. high-kappa edge")
        self.save_button = pn.widgets.Button(label="Save selection", button_type="primary")
        self.saved = pn.widgets.Select(label="Saved selections", options=[])
        self.load_button = pn.widgets.Button(label="Load (combine by mode)")
        self.clear_button = pn.widgets.Button(label="Clear selection")
        self.download = pn.widgets.FileDownload(callback=guarded(state, self._export), filename="selection.csv",
                                                label="Export selection as CSV", button_type="success",
                                                css_classes=["export-button"])
        self.save_button.on_click(guarded(state, self._on_save))
        self.load_button.on_click(guarded(state, self._on_load))
        self.clear_button.on_click(guarded(state, lambda event: state.clear_selection()))
        state.param.watch(self._on_bundle, "bundle_version")
        state.param.watch(guarded(state, self._on_selection), "selection")
        state.param.watch(self._refresh_saved, "saved_version")
        self.param.watch(guarded(state, self._on_histogram), "histogram_column")
        self.param.watch(guarded(state, self._on_gallery), ["gallery_sort", "gallery_descending"])
        self.param.watch(guarded(state, self._on_shown), "shown")
        self._on_bundle()
        self._refresh_saved()

    def _on_bundle(self, *events) -> None:
        columns = self.state.bundle.numeric_columns
        self.param.histogram_column.objects = columns
        self.param.gallery_sort.objects = columns
        default = "kappa" if "kappa" in columns else columns[0]
        with param.parameterized.discard_events(self):
            self.histogram_column = default
            self.gallery_sort = "id" if "id" in columns else default
        self._on_selection()

    def _on_selection(self, *events) -> None:
        self.download.disabled = self.state.selection.size == 0  # nothing to export
        self._stale = True
        if self.shown:  # the count goes out at once; the table, histogram and gallery (map reads) after it
            pn.state.execute(guarded(self.state, self._on_selection_details), schedule=True)

    def _on_shown(self, *events) -> None:
        if self.shown and self._stale:
            self._on_selection_details()

    def _on_selection_details(self) -> None:
        if not self._stale:
            return
        self._stale = False
        self.table.value = self.state.selected_table().reset_index(drop=True)
        self._on_histogram()
        self._on_gallery()

    def _on_histogram(self, *events) -> None:
        column = self.histogram_column
        if column is None:
            return
        values = self.state.table[column].to_numpy(dtype=np.float64)
        self.histogram.object = selection_histograms(values, values[self.state.selection],
                                                     axis_label(column, self.state.units))

    def _on_gallery(self, *events) -> None:
        s = self.state
        if s.selection.size == 0:
            self.gallery_note.object = "Select galaxies with the lasso or box tool to see their maps."
            rows = np.empty(0, dtype=np.int64)
        else:
            values = s.table[self.gallery_sort].to_numpy(dtype=np.float64)[s.selection]
            order = np.argsort(-values if self.gallery_descending else values, kind="stable")
            rows = s.selection[order[:GALLERY_SIZE]]
            self.gallery_note.object = (f"First {rows.size} of {s.selection.size:,} selected, sorted by "
                                        f"{literal(self.gallery_sort)} ({'descending' if self.gallery_descending else 'ascending'}).")
        bundle = s.bundle
        channel = bundle.model.card.channels[0]
        maps = np.asarray(bundle.dataset.maps[np.sort(rows)], dtype=np.float32) if rows.size else None
        position = {int(r): k for k, r in enumerate(np.sort(rows))}
        for slot, card in enumerate(self.gallery):
            card.visible = slot < rows.size
            if slot >= rows.size:
                continue
            row = int(rows[slot])
            image = maps[position[row], bundle.dataset.channel_index(channel)]
            self._gallery_ids[slot] = int(s.table["id"].iloc[row])
            self._gallery_images[slot].object = thumbnail_png(image, CHANNEL_CMAPS.get(channel, "viridis"),
                                                              symmetric=channel in DIVERGING)
            self._gallery_labels[slot].object = f"{literal(self.gallery_sort)} = {s.table[self.gallery_sort].iloc[row]:.3g}"
            self._gallery_buttons[slot].name = f"id {self._gallery_ids[slot]}"

    def _show(self, slot: int) -> None:
        if self._gallery_ids[slot] is not None:
            self.state.show_id(self._gallery_ids[slot])

    def _refresh_saved(self, *events) -> None:
        self.saved.options = self.state.saved_selection_names()

    def _on_save(self, event) -> None:
        path = self.state.save_selection(self.name_input.value)
        self.state.notify(f"saved {self.state.selection.size} galaxies as {path.stem!r}", "success")

    def _on_load(self, event) -> None:
        if not self.saved.value:
            self.state.notify("no saved selection chosen", "warning")
            return
        self.state.restore_selection(self.saved.value)

    def _export(self):
        stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S%f")
        path = self.state.export(self.export_dir / f"selection-{stamp}.csv")
        self.state.notify(f"exported {self.state.selection.size} galaxies to {path} "
                          "(provenance record beside it)", "success")
        return str(path)

    def __panel__(self):
        return pn.Column(
            self.count,
            pn.Row(self.download, self.clear_button),
            pn.Row(pn.widgets.Select.from_param(self.param.histogram_column, label="Histogram of", width=220)),
            self.histogram,
            pn.Row(self.name_input, self.save_button), pn.Row(self.saved, self.load_button),
            pn.layout.Divider(),
            pn.Row(pn.widgets.Select.from_param(self.param.gallery_sort, label="Gallery sorted by", width=200),
                   pn.widgets.Checkbox.from_param(self.param.gallery_descending, label="descending")),
            self.gallery_note, self.gallery,
            pn.layout.Divider(),
            self.table,
            name="Selection",
        )
