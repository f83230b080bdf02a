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
        # panes made once and updated (replacing panes in a served page loses their style sheets)
        self.scope_text = pn.pane.Markdown("Press **Compute figures** to draw the papers' figures "
                                           "(a few seconds for the sample).", css_classes=["stats-scope"])
        self.sections = {name: (pn.pane.Markdown(""), [pn.pane.Bokeh(None) for _ in range(count)])
                         for name, count in (("boundary", 2), ("pa", 2), ("correlations", 2), ("masses", 4))}
        self.output = pn.Column(self.scope_text, *[pn.Column(text, pn.FlexBox(*figs, width=1000), visible=False)
                                                   for text, figs in self.sections.values()], width=1000)

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
        self.scope_text.object = literal(result.description)
        for (name, (text, figs)), section in zip(self.sections.items(), self.output.objects[1:]):
            heading, made = self._section(name, result)
            section.visible = bool(made)
            text.object = heading
            for pane, fig in zip(figs, made + [None] * (len(figs) - len(made))):
                pane.param.update(object=fig, visible=fig is not None)

    @staticmethod
    def _section(name: str, result: statistics.Statistics) -> tuple[str, list]:
        """The heading and the figures of one section ([] when it does not apply)."""
        if name == "boundary" and result.boundary is not None:
            b = result.boundary
            names = (f"kappa < {b['threshold']:g}", f"kappa > {b['threshold']:g}")
            return ("### Boundary in the folded latent space (Dawson et al. 2020, Figs 7-8)\n"
                    f"Classes at the model card's kappa threshold {b['threshold']:g}; the dashed line and the "
                    f"matrix use r = {b['position']:.3f} from {b['position_source']}; these maps' TP = TN crossing "
                    f"is r = {b['crossing']:.3f}.",
                    [figures.rate_curves(b["curves"], b["position"], "rates against the boundary"),
                     figures.confusion_figure(b["confusion"], names, f"mean recall {b['mean_recall']:.1%}")])
        if name == "pa" and result.position_angle is not None:
            pa = result.position_angle
            made = [figures.pa_figure(pa["pa_true"], pa["pa_latent"])]
            if pa["by_inclination"] is not None and len(pa["by_inclination"]):
                made.append(figures.pa_error_figure(pa["by_inclination"]))
            return "### Position angle from the latent space (Dawson et al. 2020, Figs 10-11)", made
        if name == "correlations" and result.correlations is not None and len(result.correlations):
            return ("### Latents against properties (Gim, Moon & Yoon, Fig. 6)\n" + literal(result.correlation_note),
                    figures.correlation_figures(result.correlations))
        if name == "masses" and result.masses:
            return "### Predicted against true (Chu et al. 2024)", [figures.prediction_figure(p)
                                                                  for p in result.masses[:4]]
        return "", []

    def __panel__(self):
        return pn.Column(pn.Row(pn.widgets.RadioButtonGroup.from_param(self.param.scope, label="Compute on"),
                                self.button), self.output, name="Statistics", width=1020)
