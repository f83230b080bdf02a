"""The statistics tab: the papers' figures computed live on everything or on the selection.

- Dawson et al. (2020) Figs 7-8: TP/TN/FP/FN rates against the folded-space boundary
  position, and the row-normalised confusion matrix at the boundary.
- Dawson et al. (2020) Figs 10-11: latent against true position angle, and the PA error
  against inclination (mean and standard error in 5-degree bins).
- Gim, Moon & Yoon (Fig. 6): Spearman rho and normalised mutual information of every
  latent against every property.
- Chu et al. (2024): predicted against true mass with bias and scatter in dex.
"""

from __future__ import annotations

import holoviews as hv
import holoviews.plotting.bokeh  # noqa: F401 -- registers the Bokeh backend whose options are used here
import numpy as np
import pandas as pd
import panel as pn
import param

from galexplore.analysis.boundaries import VerticalBoundary
from galexplore.analysis.position_angle import PositionAngleCalibration
from galexplore.analysis.stats import bias_scatter_dex, latent_property_statistics, pa_residual_sigma_by_inclination
from galexplore.ui.bundle import latent_columns
from galexplore.ui.callbacks import guarded
from galexplore.ui.state import ExplorerState

#: Rows used for the latent-property statistics (mutual information is O(n) per shuffle).
STATISTICS_ROWS = 4000
FIGURE = dict(width=420, height=340)
INC_COLUMNS = ("inc", "inc_deg", "inclination")
PA_COLUMNS = ("pa", "pa_deg", "position_angle")
#: Catalogue columns left out of the latent-property heatmaps (identifiers, not properties).
NOT_PROPERTIES = ("id", "galaxy_id", "view")


def _first(columns, candidates) -> str | None:
    return next((c for c in candidates if c in columns), None)


def boundary_figures(r: np.ndarray, kappa: np.ndarray, position: float | None) -> hv.Layout:
    """Fig. 7 (rates against the boundary position) and Fig. 8 (confusion matrix at ``position``,
    or at the TP = TN crossing of these galaxies when ``position`` is None)."""
    fitted = VerticalBoundary(kappa_threshold=0.5, n_bootstrap=0).fit(r, kappa)
    curves = fitted.curves_
    lines = [hv.Curve((curves["position"], curves[name]), "boundary position r", "rate", label=name.upper())
             for name in ("tp", "tn", "fp", "fn")]
    chosen = fitted.position_ if position is None else position
    rates = hv.Overlay([*lines, hv.VLine(chosen).opts(color="black", line_dash="dashed")]).opts(
        title=f"TP=TN crossing at r = {fitted.position_:.3f}", legend_position="right", **FIGURE)
    metrics = VerticalBoundary.from_position(chosen).metrics(r, kappa)
    matrix = metrics["confusion_matrix"]
    names = ["kappa < 0.5", "kappa > 0.5"]
    cells = [(names[p], names[t], float(matrix[t, p])) for t in range(2) for p in range(2)]
    heat = hv.HeatMap(cells, ["predicted", "true"], "fraction").opts(
        cmap="Blues", clim=(0, 1), colorbar=True, title=f"r = {chosen:.3f}: mean recall {metrics['mean_recall']:.1%}",
        **FIGURE)
    labels = hv.Labels([(c[0], c[1], f"{c[2]:.2f}") for c in cells], ["predicted", "true"], "text")
    return hv.Layout([rates, heat * labels])


def pa_figures(pa_true: np.ndarray, pa_latent: np.ndarray, inc: np.ndarray | None) -> hv.Layout:
    """Fig. 10 (latent against true PA with the 1:1 line) and Fig. 11 (PA error against inclination)."""
    scatter = hv.HexTiles((pa_true, pa_latent), ["true PA [deg]", "latent PA [deg]"]).opts(
        cmap="fire", gridsize=36, tools=["hover"], colorbar=True, title="Latent vs true position angle", **FIGURE)
    one_to_one = hv.Curve([(0, 0), (360, 360)]).opts(color="red", line_dash="dashed")
    panels = [scatter * one_to_one]
    if inc is not None:
        residual = PositionAngleCalibration.residuals(pa_latent, pa_true)
        binned = pa_residual_sigma_by_inclination(residual, inc).dropna(subset=["mean"])
        points = hv.Scatter((binned["inc_lo"] + 2.5, binned["mean"]), "inclination [deg]", "PA error [deg]")
        bars = hv.ErrorBars((binned["inc_lo"] + 2.5, binned["mean"], binned["standard_error"].fillna(0.0)),
                            "inclination [deg]", ["PA error [deg]", "standard error"])
        panels.append((bars * points.opts(size=6)).opts(title="PA error against inclination (5 deg bins)",
                                                         **FIGURE))
    return hv.Layout(panels)


def correlation_figures(table: pd.DataFrame, seed: int = 0) -> hv.Layout:
    """Spearman rho and normalised MI heatmaps of every latent against every catalogue property."""
    if len(table) > STATISTICS_ROWS:
        table = table.sample(STATISTICS_ROWS, random_state=seed)
    latents = table[latent_columns(table)]
    embedding_prefixes = ("latent_", "pca_", "folded_", "umap_", "pred_")
    properties = table[[c for c in table.columns if not c.startswith(embedding_prefixes)
                        and c not in NOT_PROPERTIES and c not in ("pa_latent", "recon_mse")
                        and pd.api.types.is_numeric_dtype(table[c])]]
    stats = latent_property_statistics(latents, properties, n_shuffles=10, random_state=seed)
    rho = hv.HeatMap(stats, ["property", "latent"], "spearman_rho").opts(
        cmap="RdBu_r", clim=(-1, 1), colorbar=True, xrotation=60, tools=["hover"], title="Spearman rho",
        width=620, height=320)
    mi = hv.HeatMap(stats, ["property", "latent"], "mi_normalised").opts(
        cmap="viridis", colorbar=True, xrotation=60, tools=["hover"], title="normalised mutual information (MI / MI_shuffled)",
        width=620, height=320)
    return hv.Layout([rho, mi]).cols(1)


def mass_figures(table: pd.DataFrame) -> hv.Layout | None:
    """Predicted against true for every ``pred_<target>`` with a catalogue column ``<target>``."""
    panels = []
    for column in table.columns:
        target = column.removeprefix("pred_")
        if not column.startswith("pred_") or target not in table.columns or target == "class":
            continue
        pred, true = table[column].to_numpy(np.float64), table[target].to_numpy(np.float64)
        ok = np.isfinite(pred) & np.isfinite(true)
        if ok.sum() < 2:
            continue
        figures = bias_scatter_dex(pred[ok], true[ok])
        lo, hi = float(min(pred[ok].min(), true[ok].min())), float(max(pred[ok].max(), true[ok].max()))
        points = hv.Scatter((true[ok], pred[ok]), f"true {target}", f"predicted {target}").opts(
            size=3, alpha=0.5, title=f"{target}: bias {figures['bias']:+.3f}, scatter {figures['scatter']:.3f} dex",
            **FIGURE)
        panels.append(points * hv.Curve([(lo, lo), (hi, hi)]).opts(color="red", line_dash="dashed"))
    return hv.Layout(panels) if panels else None


class StatsView(pn.viewable.Viewer):
    """The statistics tab, recomputed on demand for everything or for the selection."""

    scope = param.Selector(objects=["everything", "selection"], default="everything")

    def __init__(self, state: ExplorerState, **params):
        super().__init__(**params)
        self.state = state
        self.button = pn.widgets.Button(label="Compute figures", button_type="primary")
        self.button.on_click(guarded(state, self._compute))
        self.output = pn.Column(pn.pane.Markdown("Press **Compute figures** to draw the papers' figures."))

    def _rows(self) -> pd.DataFrame:
        table = self.state.table
        if self.scope == "selection":
            if self.state.selection.size == 0:
                from galexplore.errors import SelectionError

                raise SelectionError("the selection is empty; select galaxies or compute on everything")
            return table.iloc[self.state.selection]
        return table

    def _compute(self, event=None) -> None:
        table = self._rows()
        sections: list = [pn.pane.Markdown(f"Computed on {self.scope}: {len(table):,} galaxies.")]
        columns = set(table.columns)
        if {"folded_r", "kappa"} <= columns:
            r, kappa = table["folded_r"].to_numpy(np.float64), table["kappa"].to_numpy(np.float64)
            sections += [pn.pane.Markdown("### Boundary in the folded latent space (Dawson et al. 2020, Figs 7-8)"),
                         pn.pane.HoloViews(boundary_figures(r, kappa, self.state.bundle.boundary_r()))]
        pa = _first(columns, PA_COLUMNS)
        if pa and "pa_latent" in columns:
            inc = _first(columns, INC_COLUMNS)
            sections += [pn.pane.Markdown("### Position angle from the latent space (Dawson et al. 2020, Figs 10-11)"),
                         pn.pane.HoloViews(pa_figures(table[pa].to_numpy(np.float64),
                                                      table["pa_latent"].to_numpy(np.float64),
                                                      table[inc].to_numpy(np.float64) if inc else None))]
        sections += [pn.pane.Markdown("### Latents against properties (Gim, Moon & Yoon, Fig. 6)"),
                     pn.pane.HoloViews(correlation_figures(table))]
        masses = mass_figures(table)
        if masses is not None:
            sections += [pn.pane.Markdown("### Predicted against true (Chu et al. 2024)"), pn.pane.HoloViews(masses)]
        self.output.objects = sections

    def __panel__(self):
        return pn.Column(pn.Row(pn.widgets.RadioButtonGroup.from_param(self.param.scope), self.button),
                         self.output, name="Statistics")
