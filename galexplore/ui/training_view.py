"""The Training tab: train a small model in the background while the session keeps exploring.

The page polls the job with a per-session periodic callback (never blocking the server's
event loop), shows a progress bar with epoch, loss and time left, the device, a live
loss curve (training and validation), and a cancel button. When the run finishes the
session switches to the new model; "Back to the previous model" returns. An MLP head's
predictions become columns of the session's table instead.

The server stays responsive while a job runs: polling only drains a queue, and the loss
curve (the one costly redraw) is redrawn at most once per `CURVE_PERIOD_S` and only while
the Training tab is shown (`shown`).
"""

from __future__ import annotations

import asyncio
import threading
import time

import holoviews as hv
import panel as pn
import param

from galexplore.ui.callbacks import guarded
from galexplore.ui.jobs_state import TrainingSession
from galexplore.ui.state import ExplorerState
from galexplore.ui.text import literal

#: Milliseconds between two polls of a running job.
POLL_PERIOD_MS = 500
#: Shortest interval, in seconds, between two redraws of the loss curve.
CURVE_PERIOD_S = 1.0


def loss_curves(events: list[dict]) -> hv.Overlay:
    """Training and validation loss against epoch (log scale)."""
    epochs = [e["epoch"] for e in events]
    train = hv.Curve((epochs, [e["train_loss"] for e in events]), "epoch", "loss", label="training")
    val = hv.Curve((epochs, [e["val_loss"] for e in events]), "epoch", "loss", label="validation")
    points = hv.Scatter((epochs, [e["val_loss"] for e in events]), "epoch", "loss")
    return (train * val * points).opts(hv.opts.Overlay(width=480, height=260, logy=bool(events),
                                                       legend_position="top_right", title="loss"),
                                       hv.opts.Scatter(size=5))


class TrainingView(pn.viewable.Viewer):
    """Widgets of the Training tab for one session.

    Parameters
    ----------
    state : the session's `ExplorerState`.
    session : its `TrainingSession` (default: a new one, labelling heads with ``boundary``'s marks).
    boundary : the session's `BoundaryModel`, whose marks can label an MLP head.
    """

    shown = param.Boolean(default=True, doc="whether the Training tab is on screen (the loss curve redraws only then)")
    curve_version = param.Integer(default=0, doc="bumped when the loss curve should be redrawn")

    def __init__(self, state: ExplorerState, session: TrainingSession | None = None, boundary=None, **params):
        super().__init__(**params)
        self.state = state
        self.session = session or TrainingSession(state, boundary=boundary)
        self._curve_drawn = (None, -1.0)  # (events_version drawn, time of the draw)
        self.start_button = pn.widgets.Button(label="Start training", button_type="primary")
        self.cancel_button = pn.widgets.Button(label="Cancel training", button_type="danger", disabled=True)
        self.back_button = pn.widgets.Button(label="Back to the previous model",
                                             disabled=not state.previous_bundles)
        self.progress = pn.indicators.Progress(value=0, max=100, sizing_mode="stretch_width",
                                               css_classes=["training-progress"], bar_color="primary")
        self.start_button.on_click(guarded(state, self._on_start))
        self.cancel_button.on_click(self._on_cancel)
        self.back_button.on_click(guarded(state, lambda event: state.back_to_previous_model()))
        state.param.watch(self._on_bundle, "bundle_version")
        self.session.param.watch(self._on_progress, ["events_version", "phase"])
        self.param.watch(lambda event: self._refresh_curve(), "shown")
        self._callback = None
        if pn.state.curdoc is not None:
            pn.state.on_session_destroyed(self._on_session_destroyed)

    # ---------------------------------------------------------------- gestures
    def _on_start(self, event) -> None:
        self.session.start()
        self._watch()

    async def _on_cancel(self, event) -> None:
        self.cancel_button.disabled = True
        try:
            await asyncio.to_thread(self.session.cancel)
            self.session.poll()
        except Exception as error:  # noqa: BLE001 -- shown in the page; the session carries on
            self.state.report(error)

    def _watch(self) -> None:
        """Poll the job every `POLL_PERIOD_MS` until there is nothing left to watch."""
        if self._callback is None or not self._callback.running:
            self._callback = pn.state.add_periodic_callback(self._tick, period=POLL_PERIOD_MS)
        self._on_progress()

    def _tick(self) -> None:
        try:
            watching = self.session.poll()
        except Exception as error:  # noqa: BLE001 -- the page must survive every failure
            self.state.report(error)
            watching = False
        self._refresh_curve()
        if not watching and self._callback is not None:
            self._callback.stop()

    def _on_session_destroyed(self, session_context) -> None:
        if self._callback is not None:
            self._callback.stop()
        # stopping a process may take seconds: not on the event loop
        threading.Thread(target=self.session.close, name="galexplore-cancel", daemon=True).start()

    # ---------------------------------------------------------------- display
    def _refresh_curve(self, force: bool = False) -> None:
        """Ask for a loss-curve redraw if the events changed, the tab is shown and the last
        redraw is at least `CURVE_PERIOD_S` old (``force``: whenever the events changed)."""
        version, drawn_at = self._curve_drawn
        now = time.monotonic()
        if version == self.session.events_version or not self.shown:
            return
        if force or now - drawn_at >= CURVE_PERIOD_S:
            self._curve_drawn = (self.session.events_version, now)
            self.curve_version += 1

    def _on_progress(self, *events) -> None:
        self._refresh_curve(force=not self.session.active)  # the final curve is always drawn
        active = self.session.active
        self.progress.value = int(round(100 * self.session.progress_fraction()))
        self.start_button.disabled = active
        self.cancel_button.disabled = not (self.session.job is not None and self.session.job.status
                                           in ("queued", "running"))

    def _on_bundle(self, *events) -> None:
        self.back_button.disabled = not self.state.previous_bundles

    def _status(self, events_version, phase) -> str:
        return literal(self.session.status_text())

    def _curves(self, curve_version):
        job = self.session.job
        return loss_curves(list(job.events) if job is not None else [])

    def __panel__(self):
        s = self.session
        settings = pn.Column(
            pn.widgets.Select.from_param(s.param.what, label="Train"),
            pn.widgets.Select.from_param(s.param.target, label="Target column (regressor or MLP head)"),
            pn.widgets.Select.from_param(s.param.head_labels, label="MLP head learns"),
            pn.widgets.FloatInput.from_param(s.param.threshold, label="MLP head: class 1 above"),
            pn.widgets.IntInput.from_param(s.param.epochs, label="Epochs"),
            pn.widgets.IntInput.from_param(s.param.images_per_epoch, label="Images per epoch"),
            pn.widgets.IntInput.from_param(s.param.batch_size, label="Batch size"),
            pn.widgets.FloatInput.from_param(s.param.learning_rate, label="Learning rate"),
            pn.widgets.RadioButtonGroup.from_param(s.param.subset),
            pn.widgets.Select.from_param(s.param.device, label="Device"),
            pn.widgets.IntInput.from_param(s.param.seed, label="Seed"),
            pn.Row(self.start_button, self.cancel_button),
            self.back_button,
            pn.pane.Markdown("Runs in a separate process (one at a time per server; others queue). "
                             "On the CPU it runs at low priority on every core but one, so the explorer "
                             "stays responsive. An MLP head trains on the current model's latents; its "
                             "predictions become the columns pred_head_<target> of the table. "
                             "Checkpoints go to your models directory.", width=400),
            width=420,
        )
        follow = pn.Column(
            self.progress,
            pn.pane.Markdown(pn.bind(self._status, s.param.events_version, s.param.phase),
                             css_classes=["training-status"], width=520),
            pn.pane.HoloViews(pn.bind(self._curves, self.param.curve_version)),
            width=540,
        )
        return pn.Row(settings, follow)
