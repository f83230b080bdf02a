"""The Statistics tab: the papers' figures on every map or on the selection, computed off the
event loop by `galexplore.explorer.statistics`, which also says exactly what it used."""

from __future__ import annotations

import asyncio

import panel as pn
import param

from galexplore.explorer import statistics
from galexplore.ui import figures
from galexplore.ui.feedback import busy
from galexplore.ui.state import Messages, SelectionState
from galexplore.ui.text import literal

SCOPES = ("every map", "the selection")


class StatsView(pn.viewable.Viewer):
    """The statistics tab, computed on demand."""

    selection = param.ClassSelector(class_=SelectionState)
    messages = param.ClassSelector(class_=Messages)
    scope = param.Selector(objects=list(SCOPES), default=SCOPES[0])

    def __init__(self, **params):
        super().__init__(**params)
        self.button = pn.widgets.Button(label="Compute figures", color="primary")
        self.button.on_click(self._compute)
        self.output = pn.Column(pn.pane.Markdown("Press **Compute figures** to draw the papers' figures "
                                                 "(a few seconds for the sample)."), width=1000)

    async def _compute(self, event=None) -> None:
        bundle = self.selection.map.bundle
        rows = self.selection.rows if self.scope == SCOPES[1] else None
        with busy(self.output):
            self.button.disabled = True
            try:
                result = await asyncio.to_thread(statistics.compute, bundle, rows)
            finally:
                self.button.disabled = False
        if self.selection.map.source.bundle is not bundle:
            return  # another model meanwhile
        self.output.objects = self._sections(result, bundle.kappa_threshold)

    @staticmethod
    def _sections(result: statistics.Statistics, threshold: float) -> list:
        sections: list = [pn.pane.Markdown(literal(result.description), css_classes=["stats-scope"])]
        if result.boundary is not None:
            b = result.boundary
            names = (f"kappa < {b['threshold']:g}", f"kappa > {b['threshold']:g}")
            sections += [
                pn.pane.Markdown("### Boundary in the folded latent space (Dawson et al. 2020, Figs 7-8)\n"
                                 f"Classes at the model card's kappa threshold {b['threshold']:g}; the dashed line "
                                 f"and the matrix use r = {b['position']:.3f} from {b['position_source']}; these "
                                 f"maps' TP = TN crossing is r = {b['crossing']:.3f}."),
                pn.Row(pn.pane.Bokeh(figures.rate_curves(b["curves"], b["position"], "rates against the boundary")),
                       pn.pane.Bokeh(figures.confusion_figure(b["confusion"], names,
                                                              f"mean recall {b['mean_recall']:.1%}")))]
        if result.position_angle is not None:
            pa = result.position_angle
            row = [pn.pane.Bokeh(figures.pa_figure(pa["pa_true"], pa["pa_latent"]))]
            if pa["by_inclination"] is not None and len(pa["by_inclination"]):
                row.append(pn.pane.Bokeh(figures.pa_error_figure(pa["by_inclination"])))
            sections += [pn.pane.Markdown("### Position angle from the latent space (Dawson et al. 2020, "
                                          "Figs 10-11)"), pn.Row(*row)]
        if result.correlations is not None and len(result.correlations):
            sections += [pn.pane.Markdown("### Latents against properties (Gim, Moon & Yoon, Fig. 6)\n"
                                          + literal(result.correlation_note)),
                         pn.Row(*[pn.pane.Bokeh(f) for f in figures.correlation_figures(result.correlations)])]
        if result.masses:
            sections += [pn.pane.Markdown("### Predicted against true (Chu et al. 2024)"),
                         pn.FlexBox(*[pn.pane.Bokeh(figures.prediction_figure(p)) for p in result.masses],
                                    width=1000)]
        return sections

    def __panel__(self):
        return pn.Column(pn.Row(pn.widgets.RadioButtonGroup.from_param(self.param.scope, label="Compute on"),
                                self.button), self.output, name="Statistics", width=1020)
