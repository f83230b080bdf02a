"""The selection panel: the count, one download with the rows, their units and provenance,
histograms of the selection against everything, a thumbnail gallery, named selections (the
user's own, or shared on purpose) and a paginated table."""

from __future__ import annotations

import asyncio
import io

import numpy as np
import pandas as pd
import panel as pn
import param
from bokeh.models import ColumnDataSource, Legend, LegendItem
from bokeh.plotting import figure
from panel.custom import JSComponent

from galexplore.explorer import detail as details
from galexplore.explorer.colours import SELECTION_COLOUR
from galexplore.explorer.exports import selection_zip
from galexplore.explorer.selections import PRIVATE, SHARED, SelectionStore
from galexplore.ui.feedback import busy, on_document, rule
from galexplore.ui.state import Messages, SelectionState
from galexplore.ui.text import literal

GALLERY_SIZE = 24
GALLERY_COLUMNS = 6
HISTOGRAM_BINS = 40
TABLE_PAGE_SIZE = 15
#: Width of the Selection tab's content: wide tables scroll inside it.
WIDTH = 1000


def selection_count_text(bundle, rows: np.ndarray) -> str:
    """'N maps selected (M galaxies) of T maps of G galaxies'."""
    galaxies = (int(pd.unique(bundle.column("galaxy_id")[rows]).size)
                 if "galaxy_id" in bundle.columns else int(rows.size))
    return (f"**{rows.size:,} maps selected** ({galaxies:,} galaxies) of {bundle.n_maps:,} maps of "
            f"{bundle.n_galaxies:,} galaxies")


class SelectionCount(pn.viewable.Viewer):
    """The cheap part of a selection, updated with the gesture."""

    selection = param.ClassSelector(class_=SelectionState)

    def _text(self, current, bundle) -> str:
        return selection_count_text(bundle, current.rows)

    def __panel__(self):
        s = self.selection
        return pn.pane.Markdown(pn.bind(self._text, s.param.current, s.map.source.param.bundle),
                                css_classes=["selection-count"], name="selection-count")


class BrowserIdentity(JSComponent):
    """A random token kept in the browser's local storage: who "I" am for named selections
    (the explorer has no accounts). Made in the browser, never shown."""

    token = param.String(default="")

    _esm = """
    export function render({ model }) {
      const key = "galexplore-user";
      let token = window.localStorage.getItem(key);
      if (!token || !/^[0-9a-f]{32}$/.test(token)) {
        const bytes = crypto.getRandomValues(new Uint8Array(16));
        token = Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
        window.localStorage.setItem(key, token);
      }
      model.token = token;
      const el = document.createElement("span");
      el.style.display = "none";
      return el;
    }
    """


def _histogram_figure() -> tuple:
    fig = figure(width=520, height=260, toolbar_location=None, y_axis_label="fraction of maps", min_border_left=50)
    sources = {}
    items = []
    for name, colour in (("all", "#888888"), ("selected", SELECTION_COLOUR)):
        sources[name] = ColumnDataSource({"left": [], "right": [], "top": []})
        renderer = fig.quad(left="left", right="right", bottom=0, top="top", source=sources[name], fill_color=colour,
                            fill_alpha=0.5, line_color=colour)
        items.append(LegendItem(label=name, renderers=[renderer]))
    fig.add_layout(Legend(items=items, location="top_right", label_text_font_size="8pt"))
    return fig, sources


def histogram_data(all_values: np.ndarray, selected_values: np.ndarray) -> dict[str, dict]:
    """Quads of normalised histograms (fraction of maps per bin) of all and of the selected maps."""
    finite = all_values[np.isfinite(all_values)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    edges = np.linspace(lo, hi if hi > lo else lo + 1.0, HISTOGRAM_BINS + 1)
    out = {}
    for name, values in (("all", all_values), ("selected", selected_values)):
        values = values[np.isfinite(values)]
        counts, _ = np.histogram(values, bins=edges)
        out[name] = {"left": edges[:-1], "right": edges[1:], "top": counts / max(values.size, 1)}
    return out


class SelectionView(pn.viewable.Viewer):
    """Everything about the current selection of one session. Its table, histogram and gallery
    follow the selection while the tab is shown (``shown``), and when it is shown again."""

    selection = param.ClassSelector(class_=SelectionState)
    messages = param.ClassSelector(class_=Messages)
    histogram_column = param.Selector(objects=[])
    gallery_sort = param.Selector(objects=[])
    gallery_descending = param.Boolean(default=False)
    shown = param.Boolean(default=True, doc="whether the tab is on screen")
    saved_changed = param.Event()

    def __init__(self, selections_dir, **params):
        super().__init__(**params)
        self.selections_dir = selections_dir
        self.identity = BrowserIdentity()
        self._stale = True
        self.table = pn.widgets.Tabulator(pagination="remote", page_size=TABLE_PAGE_SIZE, disabled=True,
                                          show_index=False, width=WIDTH, height=470, layout="fit_data_table",
                                          css_classes=["selection-table"])
        self.histogram, self._histogram_sources = _histogram_figure()
        self.gallery_note = pn.pane.Markdown("", width=WIDTH)
        self.gallery = pn.pane.PNG(None, css_classes=["selection-gallery"], width=GALLERY_COLUMNS * 140,
                                   fixed_aspect=True)
        self.gallery_pick = pn.widgets.Select(label="Show in the detail view", options={}, width=220)
        pn.bind(self._show, self.gallery_pick, watch=True)
        self.name_input = pn.widgets.TextInput(label="Name", placeholder="e.g. high-kappa edge", width=240)
        self.scope = pn.widgets.RadioButtonGroup(options=[PRIVATE, SHARED], value=PRIVATE, width=160)
        self.save_button = pn.widgets.Button(label="Save selection", color="primary")
        self.saved = pn.widgets.Select(label="Saved selections", options={}, width=240)
        self.load_button = pn.widgets.Button(label="Load (combine by mode)")
        self.clear_button = pn.widgets.Button(label="Clear selection")
        self.download = pn.widgets.FileDownload(callback=self._export, filename="selection.zip",
                                                label="Download the selection (CSV + units + provenance, zip)",
                                                color="success", css_classes=["export-button"], width=420)
        self.save_button.on_click(self._on_save)
        self.load_button.on_click(self._on_load)
        self.clear_button.on_click(lambda event: self.selection.clear())
        pn.bind(self._refresh_saved, self.identity.param.token, self.param.saved_changed, watch=True)
        self._follow_bundle()

    @property
    def store(self) -> SelectionStore:
        return SelectionStore(self.selections_dir, self.identity.token or None)

    # ---------------------------------------------------------------- following the state
    @param.depends("selection.map.source.bundle", watch=True)
    def _follow_bundle(self) -> None:
        columns = self.selection.map.bundle.numeric_columns
        default = "kappa" if "kappa" in columns else columns[0]
        with param.parameterized.discard_events(self):
            self.param.histogram_column.objects = columns
            self.param.gallery_sort.objects = columns
            if self.histogram_column not in columns:
                self.histogram_column = default
            if self.gallery_sort not in columns:
                self.gallery_sort = "id" if "id" in columns else default
        self._mark_stale()

    @param.depends("selection.current", watch=True)
    def _mark_stale(self) -> None:
        self.download.disabled = self.selection.rows.size == 0
        self._stale = True
        if self.shown:
            pn.state.execute(self._refresh, schedule=True)

    @param.depends("shown", watch=True)
    async def _follow_shown(self) -> None:
        if self.shown and self._stale:
            await self._refresh()

    async def _refresh(self) -> None:
        if not self._stale:
            return
        self._stale = False
        table = self.selection.selected_table().reset_index(drop=True)
        self.table.value = table
        self._draw_histogram()
        await self._draw_gallery()

    # ---------------------------------------------------------------- drawing
    @param.depends("histogram_column", watch=True)
    def _draw_histogram(self) -> None:
        bundle, rows, column = self.selection.map.bundle, self.selection.rows, self.histogram_column
        if column is None:
            return
        values = np.asarray(bundle.column(column), dtype=np.float64)
        data = histogram_data(values, values[rows])

        def draw() -> None:
            for name, source in self._histogram_sources.items():
                source.data = data[name]
            self.histogram.xaxis.axis_label = bundle.label(column)

        on_document(self.histogram, draw)

    @param.depends("gallery_sort", "gallery_descending", watch=True)
    async def _draw_gallery(self) -> None:
        s = self.selection
        bundle, selected, sort = s.map.bundle, s.rows, self.gallery_sort
        if selected.size == 0:
            self.gallery_note.object = "Select galaxies with the lasso or box tool to see their maps."
            rows = np.empty(0, dtype=np.int64)
        else:
            values = np.asarray(bundle.column(sort), dtype=np.float64)[selected]
            order = np.argsort(-values if self.gallery_descending else values, kind="stable")
            rows = selected[order[:GALLERY_SIZE]]
            self.gallery_note.object = (f"First {rows.size} of {selected.size:,} selected maps, sorted by "
                                        f"{literal(sort)} ({'descending' if self.gallery_descending else 'ascending'})"
                                        + (f"; captions: id and {literal(sort)}." if sort != "id" else "."))
        ids = bundle.column("id")[rows]
        values = bundle.column(sort)[rows]
        captions = [f"id {int(i)}" if sort == "id" else f"id {int(i)}: {details.format_value(v)}"
                    for i, v in zip(ids, values)]

        def gallery() -> bytes | None:
            if not rows.size or bundle.model is None:
                return None
            return details.maps_png(bundle, rows, captions, columns=GALLERY_COLUMNS, scale=2)

        with busy(self.gallery):
            png = await asyncio.to_thread(gallery)
        if s.rows is not selected or s.map.bundle is not bundle:
            return  # the selection or the model changed meanwhile
        self.gallery.object = png
        self.gallery_pick.param.update(options={"(choose)": None, **{f"id {int(i)}": int(i) for i in ids}},
                                       value=None)

    # ---------------------------------------------------------------- gestures
    def _show(self, galaxy_id: int | None) -> None:
        if galaxy_id is not None:
            self.selection.map.show_id(galaxy_id)

    def _refresh_saved(self, *_) -> None:
        self.saved.options = {f"{name} ({scope})": (scope, name) for scope, name in self.store.entries()}

    def _on_save(self, event) -> None:
        s = self.selection
        ids = s.map.bundle.column("id")[s.rows]
        dataset = s.map.bundle.dataset
        self.store.save(self.name_input.value.strip(), ids, s.current.history, scope=self.scope.value,
                        dataset_fingerprint=dataset.fingerprint if dataset is not None else None)
        self.messages.notify(f"saved {ids.size:,} maps as {self.name_input.value.strip()!r} ({self.scope.value})",
                             "success")
        self.saved_changed = True

    def _on_load(self, event) -> None:
        if not self.saved.value:
            self.messages.notify("no saved selection chosen", "warning")
            return
        scope, name = self.saved.value
        missing = self.selection.restore(self.store.load(name, scope))
        if missing:
            self.messages.notify(f"{missing} of the saved ids are not in this dataset and were skipped", "warning")

    def _export(self):
        s = self.selection
        data = selection_zip(s.map.bundle, s.current, s.map.projection, s.map.filters)
        self.messages.notify(f"exported {s.rows.size:,} maps (CSV with units and provenance, zipped)", "success")
        return io.BytesIO(data)

    def __panel__(self):
        return pn.Column(
            SelectionCount(selection=self.selection), self.identity,
            pn.Row(self.download, self.clear_button),
            pn.Row(pn.widgets.Select.from_param(self.param.histogram_column, label="Histogram of", width=220)),
            pn.pane.Bokeh(self.histogram),
            pn.pane.Markdown("**Named selections**: *mine* are listed only in this browser; *shared* ones "
                             "by everyone using this server.", width=WIDTH),
            pn.Row(self.name_input, self.scope, self.save_button), pn.Row(self.saved, self.load_button),
            rule(width=WIDTH),
            pn.Row(pn.widgets.Select.from_param(self.param.gallery_sort, label="Gallery sorted by", width=200),
                   pn.widgets.Checkbox.from_param(self.param.gallery_descending, label="descending")),
            self.gallery_note, self.gallery, self.gallery_pick,
            rule(width=WIDTH),
            self.table,
            name="Selection", width=WIDTH + 20,
        )
