"""Detail view computations, uploads and the papers' figures, without a browser."""

from __future__ import annotations

import numpy as np
import pytest

from galexplore.ui.bundle import load_bundle
from galexplore.ui.detail import galaxy_detail, galaxy_saliency, latent_traversal, thumbnail_png
from galexplore.ui.upload import encode_velocity_maps, read_uploaded_fits
from ui_fixtures import build_ui_fixture, disc_maps, write_velocity_fits


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    dataset, model = build_ui_fixture(tmp_path_factory.mktemp("ui-detail"), n=120, seed=3)
    return load_bundle(dataset, model)


def test_detail_holds_the_dataset_maps_and_a_consistent_reconstruction(bundle):
    detail = galaxy_detail(bundle, 7, k_neighbours=5)
    stored = np.asarray(bundle.dataset.maps[7])
    for k, name in enumerate(["mom0", "mom1", "mom2", "env"]):
        np.testing.assert_array_equal(detail.maps[name], stored[k])
    assert detail.units["mom1"] == "km/s"
    assert detail.model_input.shape == detail.reconstruction.shape == (1, 64, 64)
    np.testing.assert_allclose(detail.residual, detail.model_input - detail.reconstruction)
    assert detail.galaxy_id == int(bundle.table["id"].iloc[7])
    assert detail.pa_true == pytest.approx(bundle.table["pa"].iloc[7])
    assert 7 not in detail.neighbours and len(detail.neighbours) == 5
    # neighbours are the nearest latent vectors, by brute force
    z = bundle.table[["latent_0", "latent_1", "latent_2"]].to_numpy()
    distance = np.linalg.norm(z - z[7], axis=1)
    distance[7] = np.inf
    assert set(detail.neighbours.tolist()) == set(np.argsort(distance)[:5].tolist())


def test_fixture_discs_recede_along_their_position_angle():
    """The receding side lies along (d_col, d_row) = (-sin PA, cos PA) (docs/CONTRACTS.md)."""
    rng = np.random.default_rng(0)
    for pa in (0.0, 90.0, 200.0):
        mom1 = disc_maps(pa, 60.0, 200.0, rng)[1]
        theta = np.radians(pa)
        col, row = int(round(31.5 - 12 * np.sin(theta))), int(round(31.5 + 12 * np.cos(theta)))
        assert mom1[row, col] > 50.0


def test_pa_arrows_point_north_and_east():
    from galexplore.ui.detail_view import ARROW_LENGTH_PX, pa_arrow_end

    assert pa_arrow_end(0.0) == pytest.approx((31.5, 31.5 + ARROW_LENGTH_PX))  # north is up
    assert pa_arrow_end(90.0) == pytest.approx((31.5 - ARROW_LENGTH_PX, 31.5))  # east is left


def test_detail_images_render_every_panel(bundle):
    from PIL import Image

    from galexplore.ui.detail_view import detail_panels, detail_png, saliency_png

    detail = galaxy_detail(bundle, 4)
    panels = detail_panels(detail, "dawson2020")
    # mom0, mom1, mom2, env, model input, reconstruction, residual
    assert [p.title for p in panels[:4]] == ["mom0", "mom1", "mom2", "env"]
    assert [p.unit_label for p in panels[:4]] == ["mom0 [Jy/beam km/s]", "mom1 [km/s]", "mom2 [km/s]", "env [counts]"]
    assert len(panels) == 7
    velocity = panels[1]
    assert velocity.limits[0] == -velocity.limits[1]  # diverging, centred on 0 km/s
    assert {a.label.split()[0] for a in velocity.arrows} == {"true", "latent"}
    image = np.asarray(Image.open(__import__("io").BytesIO(detail_png(detail, "dawson2020"))).convert("L"))
    assert image.shape[1] > 600 and image.std() > 20
    sal = galaxy_saliency(bundle, 4, "vanilla", "latent_0")
    overlay = np.asarray(Image.open(__import__("io").BytesIO(saliency_png(detail, sal, "latent_0"))).convert("L"))
    assert overlay.std() > 10


def test_detail_view_shows_maps_saliency_and_neighbours(bundle, tmp_path):
    from galexplore.ui.detail_view import DetailView
    from galexplore.ui.state import ExplorerState

    state = ExplorerState(bundle, selections_dir=tmp_path)
    view = DetailView(state)
    state.clicked_row = 9
    assert view.images.object[:8] == b"\x89PNG\r\n\x1a\n"
    assert view.saliency.object is not None
    detail = galaxy_detail(bundle, 9, 8)
    assert view._neighbour_ids == bundle.table["id"].to_numpy()[detail.neighbours].tolist()
    view.show_saliency = False
    assert view.saliency.object is None


def test_traversal_passes_through_the_reconstruction(bundle):
    detail = galaxy_detail(bundle, 3)
    values, decoded = latent_traversal(bundle, 3, axis=1, steps=5)
    assert decoded.shape == (5, 1, 64, 64)
    assert values[2] == pytest.approx(bundle.table["latent_1"].iloc[3], rel=1e-5)
    np.testing.assert_allclose(decoded[2], detail.reconstruction, atol=1e-4)


@pytest.mark.parametrize("method", ["vanilla gradient", "SmoothGrad", "integrated gradients"])
def test_saliency_has_the_input_shape(bundle, method):
    values = galaxy_saliency(bundle, 2, method, "latent_0")
    assert values.shape == (1, 64, 64) and np.isfinite(values).all() and np.abs(values).sum() > 0


def test_thumbnail_is_a_png():
    png = thumbnail_png(np.arange(64 * 64, dtype=float).reshape(64, 64))
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_uploaded_map_lands_on_its_dataset_twin(bundle, tmp_path):
    """A FITS file holding a dataset galaxy's own mom1 map is placed at that galaxy."""
    from astropy.io import fits

    row = 11
    mom1 = np.asarray(bundle.dataset.maps[row])[1]
    path = tmp_path / "twin.fits"
    primary = fits.PrimaryHDU()
    primary.header["OBJECT"] = "TWIN"
    fits.HDUList([primary, fits.ImageHDU(mom1)]).writeto(path)
    names, maps = read_uploaded_fits({"twin.fits": path.read_bytes()})
    placed = encode_velocity_maps(bundle, names, maps)
    assert placed["name"].tolist() == ["TWIN"]
    for column in ("latent_0", "latent_1", "latent_2", "folded_r", "folded_h"):
        assert placed[column].iloc[0] == pytest.approx(bundle.table[column].iloc[row], rel=1e-4, abs=1e-6)
    assert placed["neighbour_ids"].iloc[0].split(", ")[0] == str(bundle.table["id"].iloc[row])


def test_upload_of_a_non_square_size_is_resized(bundle, tmp_path):
    path = write_velocity_fits(tmp_path / "small.fits", 45.0, 60.0, size=40, name="SMALL")
    names, maps = read_uploaded_fits({"small.fits": path.read_bytes()})
    placed = encode_velocity_maps(bundle, names, maps)
    assert np.isfinite(placed[["latent_0", "folded_r"]].to_numpy()).all()


def test_boundary_figure_confusion_matrix_by_hand():
    from galexplore.ui.stats_view import boundary_figures

    r = np.array([0.1, 0.2, 0.3, 0.4, 1.1, 1.2, 1.3, 0.35])
    kappa = np.array([0.1, 0.2, 0.3, 0.4, 0.9, 0.8, 0.7, 0.9])
    layout = boundary_figures(r, kappa, position=1.0)
    heat = layout[1].get(0)
    cells = {(p, t): v for p, t, v in heat.data[["predicted", "true", "fraction"]].itertuples(index=False)}
    # negatives (kappa < 0.5): 4, all below r = 1 -> TN = 1; positives: 4, three above r = 1 -> TP = 0.75
    assert cells[("kappa < 0.5", "kappa < 0.5")] == 1.0
    assert cells[("kappa > 0.5", "kappa > 0.5")] == 0.75
    assert cells[("kappa < 0.5", "kappa > 0.5")] == 0.25


def test_statistics_tab_renders_every_figure(bundle, tmp_path):
    import holoviews as hv
    import panel as pn

    from galexplore.ui.state import ExplorerState
    from galexplore.ui.stats_view import StatsView

    state = ExplorerState(bundle, selections_dir=tmp_path)
    view = StatsView(state)
    view._compute()
    figures = [o.object for o in view.output.objects if isinstance(o, pn.pane.HoloViews)]
    assert len(figures) == 3  # boundary (Figs 7-8), PA (Figs 10-11), latent-property heatmaps
    for figure in figures:
        hv.render(figure, backend="bokeh")
