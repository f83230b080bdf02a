"""Bokeh figures of the Statistics, Boundaries and Training tabs, drawn from the numbers the
application layer computed (`galexplore.explorer.statistics`, `...boundaries`, training events)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from bokeh.models import ColorBar, ColumnDataSource, HoverTool, Legend, LegendItem, LinearColorMapper, Span, Whisker
from bokeh.palettes import Blues256, Category10, Viridis256
from bokeh.plotting import figure as bokeh_figure

from galexplore.explorer.colours import COLORMAPS, FITTED_BOUNDARY_COLOUR

FIGURE = dict(width=440, height=340, toolbar_location="above", tools="pan,box_zoom,reset,save")


def figure(*args, **kwargs):
    """`bokeh.plotting.figure` without the Bokeh logo in the toolbar."""
    fig = bokeh_figure(*args, **kwargs)
    fig.toolbar.logo = None
    return fig


def _legend(fig, items: list[tuple[str, object]], where: str = "right") -> None:
    fig.add_layout(Legend(items=[LegendItem(label=label, renderers=[r]) for label, r in items],
                          label_text_font_size="8pt", padding=2, spacing=2), where)


def rate_curves(curves: dict, position: float, title: str, rates=("tp", "tn", "fp", "fn"), span_colour="black",
                **size):
    """TP/TN/FP/FN rates against the folded-radius boundary position (Dawson et al. 2020, Fig. 7),
    with the chosen position as a vertical line."""
    fig = figure(title=title, x_axis_label="boundary position r [latent units]", y_axis_label="rate",
                 **{**FIGURE, **size})
    items = []
    for name, colour in zip(rates, Category10[4]):
        items.append((name.upper(), fig.line(curves["position"], curves[name], line_color=colour, line_width=2)))
    fig.add_layout(Span(location=position, dimension="height", line_dash="dashed", line_color=span_colour))
    _legend(fig, items)
    return fig


def confusion_figure(matrix: np.ndarray, names: tuple[str, str], title: str):
    """A row-normalised 2 x 2 confusion matrix (rows: true class) with its values written in."""
    cells = [(names[p], names[t], float(matrix[t, p])) for t in range(2) for p in range(2)]
    source = ColumnDataSource({"predicted": [c[0] for c in cells], "true": [c[1] for c in cells],
                               "value": [c[2] for c in cells], "text": [f"{c[2]:.2f}" for c in cells],
                               "colour": ["white" if c[2] > 0.6 else "black" for c in cells]})
    fig = figure(title=title, x_range=list(names), y_range=list(names)[::-1], x_axis_label="predicted",
                 y_axis_label="true", width=360, height=300, toolbar_location=None)
    mapper = LinearColorMapper(palette=Blues256[::-1], low=0.0, high=1.0)
    fig.rect("predicted", "true", 1, 1, source=source, fill_color={"field": "value", "transform": mapper},
             line_color="white")
    fig.text("predicted", "true", text="text", source=source, text_align="center", text_baseline="middle",
             text_color="colour", text_font_size="14pt")
    fig.add_layout(ColorBar(color_mapper=mapper, title="fraction of the true class", width=10), "right")
    return fig


def pa_figure(pa_true: np.ndarray, pa_latent: np.ndarray):
    """Latent against true position angle as hexagonal bins (Dawson et al. 2020, Fig. 10)."""
    ok = np.isfinite(pa_true) & np.isfinite(pa_latent)
    fig = figure(title="Latent vs true position angle", x_axis_label="true PA [deg]",
                 y_axis_label="PA from the latent space [deg]", x_range=(-10, 370), y_range=(-10, 370), **FIGURE)
    fig.hexbin(pa_true[ok], pa_latent[ok], size=8, palette=COLORMAPS["fire"][::-1])
    fig.line([0, 360], [0, 360], line_color="red", line_dash="dashed")
    return fig


def pa_error_figure(binned: pd.DataFrame):
    """Mean PA error and its standard error in 5-degree inclination bins (Fig. 11)."""
    centre = binned["inc_lo"].to_numpy() + 2.5
    mean, error = binned["mean"].to_numpy(), binned["standard_error"].fillna(0.0).to_numpy()
    source = ColumnDataSource({"inc": centre, "mean": mean, "lower": mean - error, "upper": mean + error})
    fig = figure(title="PA error against inclination (5 deg bins)", x_axis_label="inclination [deg]",
                 y_axis_label="mean PA error, latent - true [deg]", **FIGURE)
    fig.scatter("inc", "mean", source=source, size=7)
    fig.add_layout(Whisker(base="inc", lower="lower", upper="upper", source=source))
    fig.add_layout(Span(location=0.0, dimension="width", line_color="grey", line_dash="dotted"))
    return fig


def heatmap(stats: pd.DataFrame, value: str, title: str, palette, low: float, high: float, label: str):
    """One row per property, one column per latent; hover shows every statistic."""
    properties = list(dict.fromkeys(stats["property"]))
    latents = list(dict.fromkeys(stats["latent"]))
    source = ColumnDataSource(stats.assign(shown=stats[value].round(2).astype(str)))
    fig = figure(title=title, x_range=latents, y_range=properties[::-1], width=170 + 70 * len(latents),
                 height=90 + 15 * len(properties), toolbar_location=None, x_axis_location="above")
    mapper = LinearColorMapper(palette=palette, low=low, high=high, nan_color="#eeeeee")
    fig.rect("latent", "property", 1, 1, source=source, fill_color={"field": value, "transform": mapper},
             line_color="white")
    fig.yaxis.major_label_text_font_size = "8pt"
    fig.xaxis.major_label_text_font_size = "9pt"
    fig.add_layout(ColorBar(color_mapper=mapper, title=label, width=10, title_text_font_size="8pt"), "right")
    fig.add_tools(HoverTool(tooltips=[("latent", "@latent"), ("property", "@property"),
                                      ("Spearman rho", "@spearman_rho{0.000}"),
                                      ("MI / MI shuffled", "@mi_normalised{0.00}"), ("maps", "@n")]))
    return fig


def correlation_figures(stats: pd.DataFrame) -> list:
    """Spearman rho and normalised mutual information of every latent against every property."""
    mi_high = float(np.nanmax(stats["mi_normalised"].to_numpy())) if len(stats) else 1.0
    return [heatmap(stats, "spearman_rho", "Spearman rho", COLORMAPS["coolwarm (diverging)"], -1.0, 1.0, "rho"),
            heatmap(stats, "mi_normalised", "Mutual information / shuffled", Viridis256, 0.0, max(mi_high, 1.0),
                    "MI / MI shuffled")]


def prediction_figure(panel: dict):
    """Predicted against true for one regressor output, with the 1:1 line."""
    true, predicted = panel["true"], panel["predicted"]
    lo, hi = float(min(true.min(), predicted.min())), float(max(true.max(), predicted.max()))
    fig = figure(title=f"{panel['target']}: bias {panel['bias']:+.3f}, scatter {panel['scatter']:.3f}",
                 x_axis_label=f"true {panel['target']}", y_axis_label=f"predicted {panel['target']}", **FIGURE)
    fig.scatter(true, predicted, size=3, alpha=0.4)
    fig.line([lo, hi], [lo, hi], line_color="red", line_dash="dashed")
    return fig


def loss_figure():
    """An empty loss curve (training and validation against epoch, log scale) and its source."""
    source = ColumnDataSource({"epoch": [], "train": [], "val": []})
    fig = figure(title="loss", x_axis_label="epoch", y_axis_label="loss", y_axis_type="log", width=480, height=260,
                 toolbar_location=None)
    train = fig.line("epoch", "train", source=source, line_width=2, line_color=Category10[3][0])
    val = fig.line("epoch", "val", source=source, line_width=2, line_color=Category10[3][1])
    fig.scatter("epoch", "val", source=source, size=5, color=Category10[3][1])
    _legend(fig, [("training", train), ("validation", val)], "below")
    fig.legend.orientation = "horizontal"
    return fig, source


def boundary_rates_figure(curves: dict, position: float):
    """TP and TN rates against r with the fitted crossing (the Boundaries tab)."""
    return rate_curves(curves, position, "TP and TN rates against r", rates=("tp", "tn"),
                       span_colour=FITTED_BOUNDARY_COLOUR, width=380, height=260)
