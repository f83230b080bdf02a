"""The "Your data" tab: upload FITS velocity maps (or name a directory under the allowed
ones) and see them as labelled markers in the current latent space, with their nearest
neighbours. Reading and encoding run off the event loop; a file that cannot be read is
named in the message and the others are placed."""

from __future__ import annotations

import asyncio

import panel as pn
import param

from galexplore.explorer import upload as uploads
from galexplore.explorer.access import confine
from galexplore.ui.feedback import busy
from galexplore.ui.state import MapState, Messages


class UploadView(pn.viewable.Viewer):
    """Upload widgets and the table of imported galaxies."""

    markers = param.Parameter(doc="the page's `Markers` (imported maps, placed by the current model)")
    map = param.ClassSelector(class_=MapState)
    messages = param.ClassSelector(class_=Messages)
    allowed_dirs = param.List(default=[])

    def __init__(self, **params):
        super().__init__(**params)
        self.file_input = pn.widgets.FileInput(accept=".fits,.fit,.fts,.gz", multiple=True,
                                               css_classes=["fits-upload"], label="FITS velocity maps")
        self.directory = pn.widgets.TextInput(label="...or a directory of FITS files (under an allowed directory)",
                                              placeholder="/path/to/fits", width=420)
        self.directory_button = pn.widgets.Button(label="Encode directory", color="primary")
        self.clear_button = pn.widgets.Button(label="Remove the imported galaxies")
        self.table = pn.widgets.Tabulator(disabled=True, show_index=False, width=900, height=300,
                                          css_classes=["marker-table"], layout="fit_data_table")
        pn.bind(self._on_upload, self.file_input.param.value, watch=True)
        self.directory_button.on_click(self._on_directory)
        self.clear_button.on_click(lambda event: setattr(self.markers, "uploaded", []))
        self._follow_markers()

    async def _on_upload(self, values) -> None:
        if not values:
            return
        filenames = self.file_input.filename
        if not isinstance(values, list):
            values, filenames = [values], [filenames]
        with busy(self.table):
            result = await asyncio.to_thread(uploads.read_uploaded_fits, list(zip(filenames, values)))
        self._add(result.names, result.maps, result.refused)

    async def _on_directory(self, event) -> None:
        from galexplore.data.fits_io import read_velocity_map

        directory = confine(self.directory.value, self.allowed_dirs)

        def read() -> uploads.UploadResult:
            result = uploads.UploadResult([], [], [])
            for path in uploads.fits_in_directory(directory):
                try:
                    name, image = read_velocity_map(path)
                except Exception as error:  # noqa: BLE001 -- one bad file must not stop the others
                    result.refused.append(f"{path.name}: {error}")
                    continue
                result.names.append(name)
                result.maps.append(image)
            return result

        with busy(self.table):
            result = await asyncio.to_thread(read)
        self._add(result.names, result.maps, result.refused)

    def _add(self, names: list[str], maps: list, refused: list[str]) -> None:
        if names:
            self.markers.uploaded = [*self.markers.uploaded, *zip(names, maps)]
        placed = f"placed {len(names)} galaxies in the latent space: {', '.join(names)}" if names else ""
        skipped = f"{len(refused)} file(s) could not be read: {'; '.join(refused)}" if refused else ""
        self.messages.notify(". ".join(t for t in (placed, skipped) if t), "warning" if refused else "success")

    @param.depends("map.markers", "map.projection", watch=True)
    def _follow_markers(self) -> None:
        markers = self.map.markers
        if markers is None:
            self.table.value = None
            return
        x, y = self.map.axes
        shown = [c for c in ("name", x, y, "folded_r", "neighbour_ids") if c in markers.columns]
        self.table.value = markers[list(dict.fromkeys(shown))]

    def __panel__(self):
        return pn.Column(
            pn.pane.Markdown(
                "Upload FITS velocity maps (moment 1, km/s, NaN blank). They go through the model's "
                "recipe and encoder and appear as labelled stars in the latent map; the table lists each "
                "one's nearest galaxies in latent space (catalogue ids). They follow you to another model.",
                width=900),
            self.file_input, pn.Row(self.directory, self.directory_button), self.clear_button, self.table,
            name="Your data", width=920,
        )
