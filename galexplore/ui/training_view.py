"""The Training tab: train a small model in the background while the session keeps exploring.

The job runs in its own low-priority process (`galexplore.explorer.training`); the page polls
it every `POLL_PERIOD_MS` (a periodic callback that only drains a queue), shows a progress
bar with epoch, loss and time left, the device, a live loss curve, then the progress of the
new model's embedding, which the same process computes for the job's own dataset. When it
finishes the session switches to the new model; "Back to the previous model" returns. An MLP
head's predictions become columns of the session's table instead.

Numeric settings outside their limits (`LIMITS`) are refused with a message and the field
returns to the last accepted value.
"""

from __future__ import annotations

import asyncio
import dataclasses

import panel as pn
import param

from galexplore.errors import GalexploreError
from galexplore.explorer import training
from galexplore.explorer.bundles import BUNDLES
from galexplore.training.jobs import CANCELLED, FAILED, RUNNING
from galexplore.ui import figures
from galexplore.ui.feedback import on_document
from galexplore.ui.state import FittedBoundary, Messages, SelectionState, Source
from galexplore.ui.text import literal

#: Milliseconds between two polls of a running job.
POLL_PERIOD_MS = 500


class TrainingView(pn.viewable.Viewer):
    """Settings, progress and results of the session's training job."""

    source = param.ClassSelector(class_=Source)
    selection = param.ClassSelector(class_=SelectionState)
    boundary = param.ClassSelector(class_=FittedBoundary)
    messages = param.ClassSelector(class_=Messages)
    models_dir = param.Parameter()
    shown = param.Boolean(default=True, doc="whether the tab is on screen (the loss curve is drawn only then)")
    changed = param.Event(doc="the job's progress or status changed")

    def __init__(self, **params):
        super().__init__(**params)
        self.settings = training.TrainingSettings()
        self.run = training.TrainingRun(self.models_dir)
        self.what = pn.widgets.Select(label="Train", options=list(training.TRAINABLE), value=self.settings.what)
        self.target = pn.widgets.Select(label="Target column (regressor or MLP head)", options=[])
        self.head_labels = pn.widgets.Select(label="MLP head learns", options=list(training.HEAD_LABELS))
        self.threshold = pn.widgets.FloatInput(label="MLP head: class 1 above", value=self.settings.threshold)
        self.numbers = {name: self._number(name, label) for name, label in (
            ("epochs", "Epochs"), ("images_per_epoch", "Images per epoch"), ("batch_size", "Batch size"),
            ("learning_rate", "Learning rate"), ("seed", "Seed"))}
        self.subset = pn.widgets.RadioButtonGroup(options=list(training.SUBSETS))
        self.device = pn.widgets.Select(label="Device", options=["auto", "cpu", "cuda"])
        self.start_button = pn.widgets.Button(label="Start training", color="primary")
        self.cancel_button = pn.widgets.Button(label="Cancel training", color="danger", disabled=True)
        self.back_button = pn.widgets.Button(label="Back to the previous model")
        self.progress = pn.indicators.Progress(value=0, max=100, sizing_mode="stretch_width",
                                               css_classes=["training-progress"], bar_color="primary")
        self.status = pn.pane.Markdown(literal(self.run.status_text()), css_classes=["training-status"], width=520)
        self.curve, self.curve_source = figures.loss_figure()
        self.start_button.on_click(self._on_start)
        self.cancel_button.on_click(self._on_cancel)
        self.back_button.on_click(lambda event: self.source.back())
        self._callback = None
        self._reported = None  # the job whose end was last announced
        self._follow_bundle()

    def _number(self, name: str, label: str):
        """A numeric field whose value is accepted only within `training.LIMITS`."""
        low, high = training.LIMITS[name]
        kind = pn.widgets.IntInput if isinstance(low, int) else pn.widgets.FloatInput
        limits = f"{low:,} to {high:,}" if isinstance(low, int) else f"{low:g} to {high:g}"
        widget = kind(label=f"{label} ({limits})", value=getattr(self.settings, name),
                      css_classes=[f"training-{name.replace('_', '-')}"])

        def accept(value) -> None:
            try:
                checked = training.check_setting(name, value)
            except GalexploreError as error:
                widget.value = getattr(self.settings, name)  # back to the last accepted value
                raise error
            self.settings = dataclasses.replace(self.settings, **{name: checked})

        pn.bind(accept, widget, watch=True)
        return widget

    # ---------------------------------------------------------------- state
    @param.depends("source.bundle", watch=True)
    def _follow_bundle(self) -> None:
        dataset = self.source.bundle.dataset
        columns = [] if dataset is None else [
            c for c in self.source.bundle.numeric_columns if c in dataset.catalog.columns
            and c not in ("id", "galaxy_id", "view")]
        self.target.param.update(options=columns,
                                 value=self.target.value if self.target.value in columns
                                 else ("log_mstar" if "log_mstar" in columns else (columns[0] if columns else None)))
        self.back_button.disabled = not self.source.previous

    def _current_settings(self) -> training.TrainingSettings:
        return dataclasses.replace(self.settings, what=self.what.value, target=self.target.value,
                                   head_labels=self.head_labels.value, threshold=self.threshold.value,
                                   subset=self.subset.value, device=self.device.value)

    # ---------------------------------------------------------------- gestures
    async def _on_start(self, event) -> None:
        bundle = self.source.bundle
        config = training.make_config(self._current_settings(), bundle, self.selection.rows, self.boundary.marks)
        self.run.start(config, bundle)
        empty = {"epoch": [], "train": [], "val": []}
        on_document(self.curve, lambda: setattr(self.curve_source, "data", empty))
        if self._callback is None or not self._callback.running:
            self._callback = pn.state.add_periodic_callback(self._tick, period=POLL_PERIOD_MS)
        await self._tick()

    async def _on_cancel(self, event) -> None:
        self.cancel_button.disabled = True
        await asyncio.to_thread(self.run.cancel)
        await self._tick()

    async def _tick(self) -> None:
        """Follow the job; apply what it gives when it has finished."""
        self.run.poll()
        job = self.run.job
        self._show_progress()
        if self.run.phase == training.SWAP_READY:
            await self._apply(job)
        if not self.run.active and self.run.phase != training.SWAP_READY and self._callback is not None:
            self._callback.stop()

    async def _apply(self, job) -> None:
        bundle = self.source.bundle
        if self.run.head is not None:
            try:
                columns, units = self.run.head_columns(bundle)
            except GalexploreError as error:
                self.messages.notify(str(error), "warning")
            else:
                self.source.bundle = bundle.with_columns(columns, units=units)
                self.messages.notify(f"MLP head: {training.head_summary(self.run.head)}; predictions are in "
                                     f"{', '.join(self.run.head.columns)}", "success")
        else:
            self.run.phase = training.SWAPPED
            new = await asyncio.to_thread(BUNDLES.get, job.dataset_path, job.result)
            self.source.switch(new, remember=True)
            self.messages.notify(f"switched to the new model {new.name}; 'Back to the previous model' returns",
                                 "success")
        self._show_progress()

    def _show_progress(self) -> None:
        run = self.run
        job = run.job
        self.progress.value = int(round(100 * run.progress_fraction()))
        self.status.object = literal(run.status_text())
        self.start_button.disabled = run.active
        self.cancel_button.disabled = not (job is not None and job.status == RUNNING)
        self.back_button.disabled = not self.source.previous
        if job is not None and self.shown and len(job.events) != len(self.curve_source.data["epoch"]):
            events = list(job.events)
            data = {"epoch": [e["epoch"] for e in events], "train": [e["train_loss"] for e in events],
                    "val": [e["val_loss"] for e in events]}
            on_document(self.curve, lambda: setattr(self.curve_source, "data", data))
        if job is not None and job.status in (FAILED, CANCELLED) and self._reported is not job:
            self._reported = job
            if job.status == FAILED:
                self.messages.notify(f"training failed: {job.error}", "danger")
            else:
                self.messages.notify(f"training {job.message}", "info")

    @param.depends("shown", watch=True)
    def _follow_shown(self) -> None:
        if self.shown:
            self._show_progress()

    def close(self) -> None:
        """End of the session: stop polling and cancel the job, so no process outlives it."""
        if self._callback is not None:
            self._callback.stop()
        import threading

        threading.Thread(target=self.run.close, name="galexplore-cancel", daemon=True).start()

    def __panel__(self):
        settings = pn.Column(
            self.what, self.target, self.head_labels, self.threshold, *self.numbers.values(),
            self.subset, self.device, pn.Row(self.start_button, self.cancel_button), self.back_button,
            pn.pane.Markdown("Runs in a separate process (one at a time per server; others queue), at low priority "
                             "on every core but one, so the explorer stays responsive; the same process then "
                             "computes the new model's embedding. An MLP head trains on the current model's "
                             "latents; its predictions become the columns pred_head_ followed by the target's "
                             "name. Checkpoints go to your models directory.", width=400),
            width=420)
        follow = pn.Column(self.progress, self.status, pn.pane.Bokeh(self.curve), width=540)
        return pn.Row(settings, follow, name="Training")
