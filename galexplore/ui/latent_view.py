"""The latent map: every galaxy of the chosen projection, rendered server-side by Datashader.

Layers, bottom to top: all visible galaxies (rasterised, mean of the colour column or
counts in density mode, dynamically spread), the selection (rasterised in one colour),
the last lasso outline, the decision boundary, imported galaxies as labelled markers, and,
once fewer than `HOVER_LIMIT` galaxies are in view, invisible points that carry hover
tooltips. Lasso, box and tap gestures go to `ExplorerState`, which selects server-side
with `galexplore.analysis.selection.PointIndex` (exact polygon test).

Speed: both rasterised layers are sent as float32 (Datashader's mean, and the counts that
HoloViews turns into float64 to mark empty pixels NaN, are float64: twice the bytes); the
selection layer and outline are redrawn in the tick after a gesture, so the selection
count reaches the browser first.
"""

from __future__ import annotations

import datashader as ds
import holoviews as hv
import holoviews.plotting.bokeh  # noqa: F401 -- registers the Bokeh backend whose options are used here
import numpy as np
import pandas as pd
import panel as pn
import param
from holoviews.operation.datashader import dynspread, rasterize

from galexplore.ui.colours import MARKER_COLOUR, SELECTION_COLOUR, axis_label
from galexplore.ui.callbacks import guarded
from galexplore.ui.state import ExplorerState
from galexplore.ui.text import literal

#: Colour of the decision boundary (dashed), visible on the white background and the colour maps.
BOUNDARY_COLOUR = "#222222"
#: Galaxies in view below which hover tooltips are attached (each costs ~100 bytes per render).
HOVER_LIMIT = 2000
PLOT_WIDTH, PLOT_HEIGHT = 640, 560
#: Largest spread of isolated points, in pixels on each side (Numba compiles one kernel per size).
MAX_SPREAD_PX = 3
#: Columns shown in the hover tooltip when present.
HOVER_COLUMNS = ("id", "kappa", "pa", "inc", "log_mstar", "pred_class", "pa_latent", "recon_mse")


def points_element(frame: pd.DataFrame, xlabel: str, ylabel: str, value_label: str) -> hv.Points:
    """HoloViews points with columns ``x``, ``y``, ``value`` and axis labels with units."""
    return hv.Points(frame, kdims=[hv.Dimension("x", label=xlabel), hv.Dimension("y", label=ylabel)],
                     vdims=[hv.Dimension("value", label=value_label)])


def as_float32(image: hv.Image) -> hv.Image:
    """The aggregate ``image`` with float32 values and empty pixels NaN: half the bytes of
    float64 sent to the browser, exact for counts below 2**24 and to 7 significant digits
    otherwise. A value dimension's ``nodata`` (0 for counts) becomes NaN here, since HoloViews
    would otherwise turn it into NaN itself, in float64, when the plot reads the image."""
    if image.interface.datatype != "xarray":  # rasterize gives xarray already
        image = image.clone(datatype=["xarray"])
    data, vdims = image.data, []
    for dim in image.vdims:
        values = data[dim.name]
        if dim.nodata is None and not (values.dtype.kind == "f" and values.dtype.itemsize > 4):
            vdims.append(dim)
            continue
        values = values.astype(np.float32)
        if dim.nodata is not None:
            values = values.where(values != dim.nodata)
        data = data.assign({dim.name: values})
        vdims.append(dim.clone(nodata=None))
    # the grid is unchanged: pass its densities rather than recompute them (an empty layer has zero extent)
    return image.clone(data, vdims=vdims, xdensity=image.xdensity, ydensity=image.ydensity)


def boundary_path(projection: str, r: float | None, extent: tuple[float, float]) -> hv.Path:
    """The folded-space boundary r = const: a vertical line in (r, h), a circle in PCA 0-1."""
    if r is None or not np.isfinite(r):
        return hv.Path([])
    if projection == "folded (r, h)":
        return hv.Path([np.array([[r, extent[0]], [r, extent[1]]])])
    if projection == "PCA 0 vs 1":
        t = np.linspace(0.0, 2.0 * np.pi, 181)
        return hv.Path([np.column_stack([r * np.cos(t), r * np.sin(t)])])
    return hv.Path([])


class LatentView(pn.viewable.Viewer):
    """The interactive latent map of one session, ``width`` x ``height`` pixels of data area."""

    aggregator = param.Parameter(default=ds.count(), doc="datashader reduction of the main layer")
    cmap = param.List(default=[], doc="palette of the main layer")
    clim = param.Tuple(default=(np.nan, np.nan), length=2)
    clabel = param.String(default="")
    selection_drawn = param.Integer(default=0, doc="bumped to redraw the selection layer and outline")

    def __init__(self, state: ExplorerState, width: int = PLOT_WIDTH, height: int = PLOT_HEIGHT, **params):
        super().__init__(**params)
        self.state = state
        self._redraw_pending = False
        state.param.watch(self._update_colouring, ["color_by", "colormap", "color_range", "bundle_version"])
        self._update_colouring()

        main_points = hv.DynamicMap(self._main_points, streams=[hv.streams.Params(
            state, ["projection", "color_by", "filters", "bundle_version"])])
        raster = rasterize(main_points, aggregator=self.param.aggregator, width=width, height=height)
        raster = raster.apply(as_float32)
        self.main = dynspread(raster, threshold=0.6, max_px=MAX_SPREAD_PX).apply.opts(
            cmap=self.param.cmap, clim=self.param.clim, clabel=self.param.clabel)
        self.main = self.main.opts(
            hv.opts.Image(tools=["lasso_select", "box_select", "tap"], active_tools=["wheel_zoom"],
                          colorbar=True, width=width, height=height, cnorm="linear",
                          clipping_colors={"NaN": "transparent"}, default_tools=["pan", "wheel_zoom", "reset", "save"],
                          toolbar="above"))

        # one stream for the selection layer and the lasso outline: a lasso redraws both at once,
        # in the tick after the gesture (see `_schedule_selection_redraw`)
        state.param.watch(self._schedule_selection_redraw, ["projection", "selection", "polygon", "bundle_version"])
        selection_stream = hv.streams.Params(self, ["selection_drawn"])
        selected_points = hv.DynamicMap(self._selected_points, streams=[selection_stream])
        selected = dynspread(rasterize(selected_points, aggregator=ds.count(), width=width,
                                       height=height).apply(as_float32), threshold=0.6, max_px=MAX_SPREAD_PX)
        selected = selected.opts(hv.opts.Image(cmap=[SELECTION_COLOUR], alpha=0.85, colorbar=False))

        outline = hv.DynamicMap(self._outline, streams=[selection_stream]).opts(
            hv.opts.Path(color=SELECTION_COLOUR, line_width=2.5))
        boundary = hv.DynamicMap(self._boundary, streams=[hv.streams.Params(state, ["projection", "bundle_version"])]
                                 ).opts(hv.opts.Path(color=BOUNDARY_COLOUR, line_width=1.5, line_dash="dashed"))
        markers = hv.DynamicMap(self._markers, streams=[hv.streams.Params(state, ["markers", "projection"])])

        self.range_stream = hv.streams.RangeXY(source=self.main)
        hover = hv.DynamicMap(self._hover_points, streams=[
            self.range_stream, hv.streams.Params(state, ["projection", "filters", "bundle_version"])])

        self.lasso = hv.streams.Lasso(source=self.main)
        self.box = hv.streams.BoundsXY(source=self.main)
        self.tap = hv.streams.Tap(source=self.main)
        self.lasso.add_subscriber(guarded(state, self._on_lasso))
        self.box.add_subscriber(guarded(state, self._on_box))
        self.tap.add_subscriber(guarded(state, self._on_tap))

        self.overlay = self.main * selected * outline * boundary * markers * hover
        self.pane = pn.pane.HoloViews(self.overlay, sizing_mode="fixed", width=width + 80,
                                      height=height + 40, name="latent-map", css_classes=["latent-map"])

    def _schedule_selection_redraw(self, *events) -> None:
        """Redraw the selection layer once the current callback (and its count update) is sent."""
        if self._redraw_pending:
            return
        self._redraw_pending = True

        def redraw() -> None:
            self._redraw_pending = False
            self.selection_drawn += 1

        pn.state.execute(guarded(self.state, redraw), schedule=True)

    # ---------------------------------------------------------------- colouring
    def _update_colouring(self, *events) -> None:
        s = self.state
        limits = s.effective_range()
        with param.parameterized.batch_call_watchers(self):
            self.aggregator = ds.count() if s.density else ds.mean("value")
            self.cmap = s.effective_colormap()
            self.clim = (np.nan, np.nan) if limits is None else tuple(map(float, limits))
            self.clabel = "galaxies per pixel" if s.density else axis_label(s.color_by, s.units)

    # ---------------------------------------------------------------- layers
    def _labels(self) -> tuple[str, str]:
        xcol, ycol = self.state.axis_columns
        return axis_label(xcol, self.state.units), axis_label(ycol, self.state.units)

    def _main_points(self, **_) -> hv.Points:
        s = self.state
        x, y = s.xy()
        value = np.zeros_like(x) if s.density else s.colour_values()
        rows = s.visible_mask()
        frame = pd.DataFrame({"x": x, "y": y, "value": value})
        if rows is not None:
            frame = frame[rows]
        value_label = "count" if s.density else axis_label(s.color_by, s.units)
        return points_element(frame, *self._labels(), value_label)

    def _selected_points(self, **_) -> hv.Points:
        x, y = self.state.xy()
        sel = self.state.selection
        return points_element(pd.DataFrame({"x": x[sel], "y": y[sel], "value": np.ones(sel.size)}),
                              *self._labels(), "selected")

    def _outline(self, **_) -> hv.Path:
        polygon = self.state.polygon
        if polygon is None:
            return hv.Path([])
        return hv.Path([np.vstack([polygon, polygon[:1]])])

    def _boundary(self, **_) -> hv.Path:
        s = self.state
        _, y = s.xy()
        finite = y[np.isfinite(y)]
        extent = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        return boundary_path(s.projection, s.bundle.boundary_r(), extent)

    def _markers(self, **_) -> hv.Overlay:
        markers = self.state.markers
        xcol, ycol = self.state.axis_columns
        if markers is None or xcol not in markers or ycol not in markers:
            frame = pd.DataFrame({"x": [], "y": [], "name": []})
        else:
            frame = pd.DataFrame({"x": markers[xcol].to_numpy(), "y": markers[ycol].to_numpy(),
                                  "name": markers["name"].astype(str).to_numpy()})
        points = hv.Points(frame, ["x", "y"], ["name"]).opts(
            color=MARKER_COLOUR, marker="star", size=14, line_color="black", tools=["hover"])
        labels = hv.Labels(frame, ["x", "y"], ["name"]).opts(
            text_color=MARKER_COLOUR, text_font_size="10pt", yoffset=0, text_align="left", xoffset=0)
        return points * labels

    def _hover_points(self, x_range=None, y_range=None, **_) -> hv.Points:
        s = self.state
        x, y = s.xy()
        keep = np.isfinite(x) & np.isfinite(y)
        if x_range is not None and y_range is not None:
            keep &= (x >= x_range[0]) & (x <= x_range[1]) & (y >= y_range[0]) & (y <= y_range[1])
        visible = s.visible_mask()
        if visible is not None:
            keep &= visible
        rows = np.flatnonzero(keep)
        columns = [c for c in HOVER_COLUMNS if c in s.table.columns]
        if rows.size > HOVER_LIMIT:
            rows = rows[:0]
        frame = s.table.iloc[rows][columns].reset_index(drop=True)
        frame.insert(0, "x", x[rows])
        frame.insert(1, "y", y[rows])
        return hv.Points(frame, ["x", "y"], columns).opts(
            tools=["hover"], size=7, fill_alpha=0.0, line_alpha=0.0, hover_fill_alpha=0.9,
            hover_fill_color="white", nonselection_alpha=0.0, selection_alpha=0.0)

    # ---------------------------------------------------------------- gestures
    def _on_lasso(self, geometry=None, **_) -> None:
        if geometry is not None and len(geometry) >= 3:
            self.state.select_polygon(np.asarray(geometry, dtype=np.float64))

    def _on_box(self, bounds=None, **_) -> None:
        if bounds is not None:
            x0, y0, x1, y1 = bounds
            self.state.select_box(x0, y0, x1, y1)

    def _on_tap(self, x=None, y=None, **_) -> None:
        if x is None or y is None:
            return
        xr, yr = self.range_stream.x_range, self.range_stream.y_range
        self.state.click(x, y, x_range=xr, y_range=yr)

    def __panel__(self):
        return self.pane


class LatentControls(pn.viewable.Viewer):
    """Sidebar widgets of the latent map: projection, colour, colormap, range, filters, selection mode."""

    def __init__(self, state: ExplorerState, **params):
        super().__init__(**params)
        self.state = state
        self.filter_column = pn.widgets.Select(label="Filter on column", options=[])
        self.filter_slider = pn.widgets.RangeSlider(label="Range", start=0.0, end=1.0, value=(0.0, 1.0), step=0.01)
        self.add_filter = pn.widgets.Button(label="Apply filter", button_type="primary")
        self.clear_filters = pn.widgets.Button(label="Clear filters")
        self.range_auto = pn.widgets.Checkbox(label="Natural colour range", value=True)
        self.range_slider = pn.widgets.RangeSlider(label="Colour range", start=0.0, end=1.0, value=(0.0, 1.0),
                                                   step=0.01, disabled=True)
        self.filter_column.param.watch(guarded(state, self._on_filter_column), "value")
        self.add_filter.on_click(guarded(state, self._on_add_filter))
        self.clear_filters.on_click(guarded(state, lambda event: setattr(state, "filters", {})))
        self.range_auto.param.watch(guarded(state, self._on_range), "value")
        self.range_slider.param.watch(guarded(state, self._on_range), "value_throttled")
        state.param.watch(self._refresh, ["bundle_version", "color_by"])
        self._refresh()

    def _column_span(self, column: str) -> tuple[float, float]:
        values = self.state.table[column].to_numpy(dtype=np.float64)
        values = values[np.isfinite(values)]
        if values.size == 0:
            return (0.0, 1.0)
        lo, hi = float(values.min()), float(values.max())
        return (lo, hi if hi > lo else lo + 1.0)

    def _refresh(self, *events) -> None:
        s = self.state
        columns = s.bundle.numeric_columns
        if self.filter_column.options != columns:
            self.filter_column.options = columns
        self._on_filter_column()
        if not s.density:
            lo, hi = self._column_span(s.color_by)
            natural = s.effective_range() or (lo, hi)
            lo, hi = min(lo, natural[0]), max(hi, natural[1])
            self.range_slider.param.update(start=lo, end=hi, step=(hi - lo) / 200.0, value=tuple(natural))
        self.range_slider.disabled = s.density or self.range_auto.value

    def _on_filter_column(self, *events) -> None:
        column = self.filter_column.value
        if column is None:
            return
        lo, hi = self._column_span(column)
        current = self.state.filters.get(column, (lo, hi))
        self.filter_slider.param.update(start=lo, end=hi, step=(hi - lo) / 200.0, value=tuple(current))

    def _on_add_filter(self, event) -> None:
        low, high = self.filter_slider.value
        self.state.set_filter(self.filter_column.value, low, high)

    def _on_range(self, *events) -> None:
        self.range_slider.disabled = self.state.density or self.range_auto.value
        self.state.color_range = None if self.range_auto.value else tuple(self.range_slider.value)

    def _filters_text(self, filters, bundle_version) -> str:
        if not filters:
            return "No filters: every galaxy is shown."
        units = self.state.units
        lines = [f"- {literal(c)}: {lo:.4g} to {hi:.4g} {literal(units.get(c, ''))}".rstrip()
                 for c, (lo, hi) in filters.items()]
        return "**Filters**\n" + "\n".join(lines)

    def __panel__(self):
        s = self.state
        return pn.Column(
            pn.widgets.Select.from_param(s.param.projection, label="Projection"),
            pn.widgets.Select.from_param(s.param.color_by, label="Colour by"),
            pn.widgets.Select.from_param(s.param.colormap, label="Colormap"),
            self.range_auto, self.range_slider,
            pn.layout.Divider(),
            self.filter_column, self.filter_slider, pn.Row(self.add_filter, self.clear_filters),
            pn.pane.Markdown(pn.bind(self._filters_text, s.param.filters, s.param.bundle_version)),
            pn.layout.Divider(),
            pn.widgets.RadioButtonGroup.from_param(s.param.selection_mode, label="Selection mode"),
        )
