"""The latent map: every galaxy of the chosen projection, rendered on the server.

One Bokeh figure whose layers are, bottom to top: the visible galaxies as an image (mean of
the colour column per pixel, or maps per pixel; `galexplore.explorer.raster`), the
selection in one colour, the last lasso or box, the model card's kappa boundary (dashed)
and the one fitted in this session (solid), imported galaxies as labelled stars, and, once
fewer than `HOVER_LIMIT` galaxies are in view, invisible points that carry hover tooltips.

The view follows the session's state: another bundle or projection shows the whole new
projection (and Reset returns there), another colouring retitles the colourbar with the
column's unit. Lasso, box and click go to the state, which selects exactly on the server.
The mouse wheel scrolls the page; zooming with it is one click on the wheel-zoom tool.
"""

from __future__ import annotations

import numpy as np
import panel as pn
import param
from bokeh.events import RangesUpdate, SelectionGeometry, Tap
from bokeh.models import (BoxSelectTool, BoxZoomTool, ColorBar, ColumnDataSource, HoverTool, LabelSet, LassoSelectTool,
                          Legend, LegendItem, LinearColorMapper, PanTool, Range1d, ResetTool, SaveTool, WheelZoomTool)
from bokeh.plotting import figure

from galexplore.explorer.boundaries import boundary_line, fitted_line
from galexplore.explorer.colours import (FITTED_BOUNDARY_COLOUR, MARKER_COLOUR, MODEL_BOUNDARY_COLOUR,
                                         SELECTION_COLOUR)
from galexplore.explorer.placement import visible_labels
from galexplore.explorer.raster import rasterize
from galexplore.ui.feedback import on_document, on_event, rule
from galexplore.ui.state import FittedBoundary, MapState, Messages, SelectionState

#: Galaxies in view below which hover tooltips are sent (each costs ~100 bytes per render).
HOVER_LIMIT = 2000
#: Size of the map's data area in screen pixels (the image has one pixel per screen pixel).
FRAME_WIDTH, FRAME_HEIGHT = 500, 460
#: Columns shown in the hover tooltip when present.
HOVER_COLUMNS = ("id", "kappa", "pa", "inc", "log_mstar", "pred_class", "pa_latent", "recon_mse")
TRANSPARENT = "rgba(0, 0, 0, 0)"


def _lines(polylines: list[np.ndarray]) -> dict:
    return {"xs": [p[:, 0].tolist() for p in polylines], "ys": [p[:, 1].tolist() for p in polylines]}


class LatentMap(pn.viewable.Viewer):
    """The interactive latent map of one session."""

    map = param.ClassSelector(class_=MapState)
    selection = param.ClassSelector(class_=SelectionState)
    boundary = param.ClassSelector(class_=FittedBoundary)
    messages = param.ClassSelector(class_=Messages)

    def __init__(self, **params):
        super().__init__(**params)
        self._shown: tuple | None = None  # (bundle, projection) whose extent the ranges show
        self._rendered_ranges: tuple | None = None
        self._spread_px = 0
        self._pending = False
        self.figure = self._figure()
        self._show_source()

    # ---------------------------------------------------------------- building
    def _figure(self):
        fig = figure(frame_width=FRAME_WIDTH, frame_height=FRAME_HEIGHT, x_range=Range1d(0, 1), y_range=Range1d(0, 1),
                     tools=[], toolbar_location="above", output_backend="canvas", min_border_right=10,
                     css_classes=["latent-figure"])
        self.lasso_tool = LassoSelectTool(continuous=False)
        self.box_tool = BoxSelectTool(continuous=False)
        self.wheel_tool = WheelZoomTool()
        pan = PanTool()
        fig.add_tools(pan, self.wheel_tool, BoxZoomTool(), self.lasso_tool, self.box_tool, ResetTool(), SaveTool())
        fig.toolbar.active_drag = pan
        fig.toolbar.active_scroll = None  # the wheel scrolls the page until the wheel-zoom tool is chosen
        fig.toolbar.logo = None
        self.colour_mapper = LinearColorMapper(palette=["#000000"], low=0, high=1, nan_color=TRANSPARENT)
        self.image_source = ColumnDataSource({"image": [], "x": [], "y": [], "dw": [], "dh": []})
        fig.image(image="image", x="x", y="y", dw="dw", dh="dh", source=self.image_source,
                  color_mapper=self.colour_mapper)
        self.selection_source = ColumnDataSource({"image": [], "x": [], "y": [], "dw": [], "dh": []})
        fig.image(image="image", x="x", y="y", dw="dw", dh="dh", source=self.selection_source, global_alpha=0.85,
                  color_mapper=LinearColorMapper(palette=[SELECTION_COLOUR], low=0, high=1, nan_color=TRANSPARENT))
        self.outline_source = ColumnDataSource({"xs": [], "ys": []})
        fig.multi_line("xs", "ys", source=self.outline_source, line_color=SELECTION_COLOUR, line_width=2.5)
        self.model_boundary_source = ColumnDataSource({"xs": [], "ys": []})
        model_line = fig.multi_line("xs", "ys", source=self.model_boundary_source, line_color=MODEL_BOUNDARY_COLOUR,
                                    line_width=1.5, line_dash="dashed")
        self.fitted_boundary_source = ColumnDataSource({"xs": [], "ys": []})
        fitted = fig.multi_line("xs", "ys", source=self.fitted_boundary_source, line_color=FITTED_BOUNDARY_COLOUR,
                                line_width=2.5)
        self.legend_items = {"model": LegendItem(label="kappa boundary of the model card", renderers=[model_line]),
                             "fitted": LegendItem(label="boundary fitted in this session", renderers=[fitted])}
        self.legend = Legend(items=list(self.legend_items.values()), orientation="horizontal",
                             label_text_font_size="8pt", padding=2, spacing=12, margin=2, border_line_alpha=0.0)
        fig.add_layout(self.legend, "below")
        self.marker_source = ColumnDataSource({"x": [], "y": [], "name": [], "neighbours": []})
        stars = fig.scatter("x", "y", source=self.marker_source, marker="star", size=15, fill_color=MARKER_COLOUR,
                            line_color="black")
        self.label_source = ColumnDataSource({"x": [], "y": [], "name": []})
        fig.add_layout(LabelSet(x="x", y="y", text="name", source=self.label_source, x_offset=6, y_offset=-6,
                                text_font_size="8pt", text_color="#005f6b", background_fill_color="white",
                                background_fill_alpha=0.6))
        fig.add_tools(HoverTool(renderers=[stars], tooltips=[("imported galaxy", "@name"),
                                                            ("nearest in latent space (ids)", "@neighbours")]))
        self.hover_source = ColumnDataSource({"x": [], "y": []})
        hover_points = fig.scatter("x", "y", source=self.hover_source, size=7, fill_alpha=0.0, line_alpha=0.0,
                                   hover_fill_color="white", hover_fill_alpha=0.9, hover_line_color="black",
                                   hover_line_alpha=1.0)
        for renderer in fig.renderers:
            renderer.selection_glyph = renderer.nonselection_glyph = None  # only the server's selection is drawn
        self.hover_tool = HoverTool(renderers=[hover_points], tooltips=[])
        fig.add_tools(self.hover_tool)
        self.colour_bar = ColorBar(color_mapper=self.colour_mapper, title="", title_standoff=8, width=12,
                                   title_text_font_style="normal", title_text_font_size="9pt")
        fig.add_layout(self.colour_bar, "right")
        on_event(fig, SelectionGeometry, self._on_geometry, self.messages)
        on_event(fig, Tap, self._on_tap, self.messages)
        on_event(fig, RangesUpdate, self._on_ranges, self.messages)
        return fig

    # ---------------------------------------------------------------- following the state
    @param.depends("map.reset", watch=True)
    def _reset(self) -> None:
        self._shown = None
        self._follow_source()

    # (param does not mix dependencies of different depth in one decorator: one method each)
    @param.depends("map.source.bundle", watch=True)
    def _follow_source(self) -> None:
        on_document(self.figure, self._show_source)

    @param.depends("map.projection", watch=True)
    def _follow_projection(self) -> None:
        on_document(self.figure, self._show_source)

    def _show_source(self) -> None:
        """Show the whole projection: new axes, labels, Reset target, tooltips and layers. A
        table that only gained columns (the same model) keeps the view and is drawn again."""
        m = self.map
        bundle = m.bundle
        shown = (bundle._indices, m.projection)
        if shown == self._shown:
            self._render(self._ranges())
            return
        (x0, x1), (y0, y1) = bundle.extent(m.projection)
        self._shown = shown
        xcol, ycol = m.axes
        fig = self.figure
        fig.x_range.update(start=x0, end=x1, reset_start=x0, reset_end=x1)
        fig.y_range.update(start=y0, end=y1, reset_start=y0, reset_end=y1)
        fig.xaxis.axis_label, fig.yaxis.axis_label = bundle.label(xcol), bundle.label(ycol)
        columns = [c for c in HOVER_COLUMNS if c in bundle.columns]
        self.hover_tool.tooltips = [(bundle.label(xcol), "@x{0.000}"), (bundle.label(ycol), "@y{0.000}"),
                                    *[(bundle.label(c), "@{%s}" % c) for c in columns]]
        self._render((x0, x1, y0, y1))

    @param.depends("map.color_by", "map.colormap", "map.color_range", "map.filters", watch=True)
    def _follow_colouring(self) -> None:
        on_document(self.figure, lambda: self._render(self._ranges()))

    @param.depends("selection.current", watch=True)
    def _follow_selection(self) -> None:
        on_document(self.figure, lambda: self._draw_selection(self._ranges()))

    @param.depends("map.markers", watch=True)
    def _follow_markers(self) -> None:
        on_document(self.figure, lambda: self._draw_markers(self._ranges()))

    @param.depends("boundary.fit", watch=True)
    def _follow_fit(self) -> None:
        on_document(self.figure, self._draw_boundaries)

    def _ranges(self) -> tuple[float, float, float, float]:
        xr, yr = self.figure.x_range, self.figure.y_range
        return (xr.start, xr.end, yr.start, yr.end)

    # ---------------------------------------------------------------- drawing
    def _render(self, ranges: tuple[float, float, float, float]) -> None:
        """Every layer for the data ranges (x0, x1, y0, y1)."""
        x0, x1, y0, y1 = ranges
        if not (x1 > x0 and y1 > y0):
            return
        m = self.map
        x, y = m.bundle.xy(m.projection)
        raster = rasterize(x, y, (x0, x1), (y0, y1), FRAME_WIDTH, FRAME_HEIGHT, values=m.colour_values(),
                           keep=m.visible_mask())
        self.image_source.data = {"image": [raster.image], "x": [x0], "y": [y0], "dw": [x1 - x0], "dh": [y1 - y0]}
        limits = m.effective_range()
        if limits is None:
            finite = raster.image[np.isfinite(raster.image)]
            limits = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        low, high = limits
        self.colour_mapper.update(palette=m.effective_colormap(), low=low, high=high if high > low else low + 1.0)
        self.colour_bar.title = m.colour_label()
        self._rendered_ranges, self._spread_px = ranges, raster.spread_px
        self._draw_selection(ranges)
        self._draw_markers(ranges)
        self._draw_boundaries()
        self._draw_hover(ranges, raster.n_points)

    def _draw_selection(self, ranges, spread_px: int | None = None) -> None:
        """The selection's layer, spread like the galaxies' layer (``spread_px``: as last rendered)."""
        spread_px = self._spread_px if spread_px is None else spread_px
        m, rows = self.map, self.selection.rows
        polygon = self.selection.current.polygon
        self.outline_source.data = _lines([np.vstack([polygon, polygon[:1]])] if polygon is not None else [])
        x0, x1, y0, y1 = ranges
        if rows.size == 0:
            self.selection_source.data = {"image": [], "x": [], "y": [], "dw": [], "dh": []}
            return
        x, y = m.bundle.xy(m.projection)
        keep = np.zeros(len(x), dtype=bool)
        keep[rows] = True
        raster = rasterize(x, y, (x0, x1), (y0, y1), FRAME_WIDTH, FRAME_HEIGHT, keep=keep, spread_px=spread_px)
        image = np.where(np.isfinite(raster.image), np.float32(1.0), np.float32(np.nan))
        self.selection_source.data = {"image": [image], "x": [x0], "y": [y0], "dw": [x1 - x0], "dh": [y1 - y0]}

    def _draw_markers(self, ranges) -> None:
        m = self.map
        markers = m.markers
        xcol, ycol = m.axes
        if markers is None or xcol not in markers or ycol not in markers:
            self.marker_source.data = {"x": [], "y": [], "name": [], "neighbours": []}
            self.label_source.data = {"x": [], "y": [], "name": []}
            return
        x, y = markers[xcol].to_numpy(np.float64), markers[ycol].to_numpy(np.float64)
        names = markers["name"].astype(str).tolist()
        self.marker_source.data = {"x": x, "y": y, "name": names, "neighbours": markers["neighbour_ids"].tolist()}
        x0, x1, y0, y1 = ranges
        sx = (x - x0) / (x1 - x0) * FRAME_WIDTH
        sy = (y - y0) / (y1 - y0) * FRAME_HEIGHT
        inside = (sx >= 0) & (sx <= FRAME_WIDTH) & (sy >= 0) & (sy <= FRAME_HEIGHT)
        shown = visible_labels(sx, -sy, names, inside)
        self.label_source.data = {"x": x[shown], "y": y[shown], "name": [n for n, s in zip(names, shown) if s]}

    def _draw_boundaries(self) -> None:
        m = self.map
        _, y = m.bundle.xy(m.projection)
        finite = y[np.isfinite(y)]
        extent = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        model = boundary_line(m.projection, m.bundle.boundary_r, extent)
        fitted = fitted_line(self.boundary.fit, m.projection, extent)
        self.model_boundary_source.data = _lines(model)
        self.fitted_boundary_source.data = _lines(fitted)
        self.legend_items["model"].visible = bool(model)
        self.legend_items["fitted"].visible = bool(fitted)
        self.legend.visible = bool(model or fitted)

    def _draw_hover(self, ranges, in_view: int) -> None:
        """Invisible points with tooltips, when at most `HOVER_LIMIT` (``in_view``) are in view."""
        m = self.map
        if in_view > HOVER_LIMIT:
            self.hover_source.data = {"x": [], "y": []}
            return
        x, y = m.bundle.xy(m.projection)
        x0, x1, y0, y1 = ranges
        keep = np.isfinite(x) & np.isfinite(y) & (x >= x0) & (x <= x1) & (y >= y0) & (y <= y1)
        visible = m.visible_mask()
        if visible is not None:
            keep &= visible
        rows = np.flatnonzero(keep)
        columns = [c for c in HOVER_COLUMNS if c in m.bundle.columns]
        data = {"x": x[rows], "y": y[rows]}
        data.update({c: m.bundle.column(c)[rows] for c in columns})
        self.hover_source.data = data

    # ---------------------------------------------------------------- gestures
    def _on_ranges(self, event: RangesUpdate) -> None:
        """Re-render after a pan or zoom, once per burst of range updates."""
        if self._pending:
            return
        self._pending = True

        def render() -> None:
            self._pending = False
            ranges = self._ranges()
            if ranges != self._rendered_ranges:
                self._render(ranges)

        on_document(self.figure, render)

    def _on_geometry(self, event: SelectionGeometry) -> None:
        geometry = event.geometry
        if not event.final:
            return
        if geometry.get("type") == "poly":
            polygon = np.column_stack([np.asarray(geometry["x"], float), np.asarray(geometry["y"], float)])
            if len(polygon) >= 3:
                self.selection.lasso(polygon)
        elif geometry.get("type") == "rect":
            self.selection.box(geometry["x0"], geometry["y0"], geometry["x1"], geometry["y1"])

    def _on_tap(self, event: Tap) -> None:
        from galexplore.explorer.selections import nearest_visible

        if event.x is None or event.y is None:
            return
        x0, x1, y0, y1 = self._ranges()
        m = self.map
        row = nearest_visible(m.bundle, m.projection, event.x, event.y, (x0, x1), (y0, y1), m.filters)
        if row is not None:
            m.clicked = row

    def __panel__(self):
        return pn.pane.Bokeh(self.figure, name="latent-map")


class MapControls(pn.viewable.Viewer):
    """Sidebar widgets of the latent map: projection, colour, colormap, range, filters, selection mode."""

    map = param.ClassSelector(class_=MapState)
    selection = param.ClassSelector(class_=SelectionState)

    def __init__(self, **params):
        super().__init__(**params)
        self.range_auto = pn.widgets.Checkbox(label="Natural colour range", value=True)
        self.range_slider = pn.widgets.RangeSlider(label="Colour range", start=0.0, end=1.0, value=(0.0, 1.0),
                                                   step=0.01, disabled=True, sizing_mode="stretch_width")
        self.filter_column = pn.widgets.Select(label="Filter on column", options=[], sizing_mode="stretch_width")
        self.filter_slider = pn.widgets.RangeSlider(label="Keep values in", start=0.0, end=1.0, value=(0.0, 1.0),
                                                    step=0.01, sizing_mode="stretch_width")
        self.add_filter = pn.widgets.Button(label="Apply filter", color="primary")
        self.clear_filters = pn.widgets.Button(label="Clear filters")
        self.add_filter.on_click(lambda event: self.map.set_filter(self.filter_column.value,
                                                                   *self.filter_slider.value))
        self.clear_filters.on_click(lambda event: setattr(self.map, "filters", {}))
        pn.bind(self._follow_filter_column, self.filter_column, watch=True)
        pn.bind(self._follow_range, self.range_auto, self.range_slider.param.value_throttled, watch=True)
        self._follow_bundle()

    @param.depends("map.color_by", watch=True)
    def _follow_colour(self) -> None:
        self._follow_bundle()

    @param.depends("map.source.bundle", watch=True)
    def _follow_bundle(self) -> None:
        m = self.map
        columns = m.bundle.numeric_columns
        if self.filter_column.options != columns:
            self.filter_column.param.update(options=columns, value=columns[0] if columns else None)
        self._follow_filter_column()
        if not m.density:
            span = m.bundle.column_summary(m.color_by) or (0.0, 1.0)
            natural = m.effective_range() or span
            lo, hi = min(span[0], natural[0]), max(span[1], natural[1])
            hi = hi if hi > lo else lo + 1.0
            self.range_slider.param.update(start=lo, end=hi, step=(hi - lo) / 200.0, value=tuple(natural))
        self.range_slider.disabled = m.density or self.range_auto.value

    def _follow_filter_column(self, column: str | None = None) -> None:
        column = self.filter_column.value
        if column is None:
            return
        lo, hi = self.map.bundle.column_summary(column) or (0.0, 1.0)
        hi = hi if hi > lo else lo + 1.0
        current = self.map.filters.get(column, (lo, hi))
        self.filter_slider.param.update(start=lo, end=hi, step=(hi - lo) / 200.0, value=tuple(current))

    def _follow_range(self, *_) -> None:
        self.range_slider.disabled = self.map.density or self.range_auto.value
        self.map.color_range = None if self.range_auto.value else tuple(self.range_slider.value)

    def _filters_text(self, filters: dict) -> str:
        from galexplore.ui.text import literal

        if not filters:
            return "No filters: every galaxy is shown."
        units = self.map.bundle.column_units
        lines = [f"- {literal(c)}: {lo:.4g} to {hi:.4g} {literal(units.get(c, ''))}".rstrip()
                 for c, (lo, hi) in filters.items()]
        return "**Filters**\n" + "\n".join(lines)

    def __panel__(self):
        m = self.map
        return pn.Column(
            pn.widgets.Select.from_param(m.param.projection, label="Projection", description=None,
                                         sizing_mode="stretch_width"),
            pn.widgets.Select.from_param(m.param.color_by, label="Colour by", description=None,
                                         sizing_mode="stretch_width"),
            pn.widgets.Select.from_param(m.param.colormap, label="Colormap", description=None,
                                         sizing_mode="stretch_width"),
            self.range_auto, self.range_slider,
            rule(),
            self.filter_column, self.filter_slider, pn.Row(self.add_filter, self.clear_filters),
            pn.pane.Markdown(pn.bind(self._filters_text, m.param.filters)),
            rule(),
            pn.pane.Markdown("**Selection mode** (for the next lasso or box)", margin=(0, 10)),
            pn.widgets.RadioButtonGroup.from_param(self.selection.param.mode, label="Selection mode",
                                                   description=None),
            sizing_mode="stretch_width",
        )
