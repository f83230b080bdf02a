"""The "Your data" tab: upload FITS velocity maps (or name a configured directory) and see
them as labelled markers in the current latent space, with their nearest neighbours."""

from __future__ import annotations

import panel as pn

from galexplore.ui.callbacks import guarded
from galexplore.ui.state import ExplorerState
from galexplore.ui.upload import encode_velocity_maps, fits_in_directory, read_uploaded_fits


class UploadView(pn.viewable.Viewer):
    """Upload widgets and the table of imported galaxies."""

    def __init__(self, state: ExplorerState, **params):
        super().__init__(**params)
        self.state = state
        self.file_input = pn.widgets.FileInput(accept=".fits,.fit,.fts,.gz", multiple=True,
                                               css_classes=["fits-upload"], name="FITS velocity maps")
        self.directory = pn.widgets.TextInput(label="...or a directory of FITS files (under a configured path)",
                                              placeholder="/path/to/fits")
        self.directory_button = pn.widgets.Button(label="Encode directory", button_type="primary")
        self.clear_button = pn.widgets.Button(label="Remove markers")
        self.table = pn.widgets.Tabulator(disabled=True, show_index=False, sizing_mode="stretch_width",
                                          height=300, css_classes=["marker-table"])
        self.file_input.param.watch(guarded(state, self._on_upload), "value")
        self.directory_button.on_click(guarded(state, self._on_directory))
        self.clear_button.on_click(guarded(state, lambda event: setattr(state, "markers", None)))
        state.param.watch(self._on_markers, "markers")

    def _on_upload(self, event) -> None:
        values, filenames = self.file_input.value, self.file_input.filename
        if not values:
            return
        if not isinstance(values, list):
            values, filenames = [values], [filenames]
        names, maps = read_uploaded_fits(dict(zip(filenames, values)))
        self._add(names, maps)

    def _on_directory(self, event) -> None:
        from galexplore.data.fits_io import read_maps_from_fits

        directory = self.state.check_allowed(self.directory.value)
        names, maps = read_maps_from_fits(fits_in_directory(directory))
        self._add(names, maps)

    def _add(self, names, maps) -> None:
        import pandas as pd

        placed = encode_velocity_maps(self.state.bundle, names, maps)
        previous = self.state.markers
        self.state.markers = placed if previous is None else pd.concat([previous, placed], ignore_index=True)
        self.state.notify(f"placed {len(placed)} galaxies in the latent space: {', '.join(names)}", "success")

    def _on_markers(self, event) -> None:
        markers = self.state.markers
        if markers is None:
            self.table.value = None
            return
        x, y = self.state.axis_columns
        shown = [c for c in ("name", x, y, "folded_r", "neighbour_ids") if c in markers.columns]
        self.table.value = markers[list(dict.fromkeys(shown))]

    def __panel__(self):
        return pn.Column(
            pn.pane.Markdown(
                "Upload FITS velocity maps (moment 1, km/s, NaN blank). They go through the model's "
                "recipe and encoder and appear as labelled stars in the latent map; the table lists each "
                "one's nearest galaxies in latent space (catalogue ids)."),
            self.file_input, pn.Row(self.directory, self.directory_button), self.clear_button, self.table,
            name="Your data",
        )
