"""The detail of a galaxy, uploads and the papers' figures, computed by the application layer
(no Panel, no browser)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from galexplore.explorer import detail as details
from galexplore.explorer import statistics
from galexplore.explorer import upload as uploads
from galexplore.explorer.bundles import BundleCache
from ui_fixtures import build_ui_fixture, disc_maps, write_velocity_fits


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    dataset, model = build_ui_fixture(tmp_path_factory.mktemp("explorer-detail"), n=120, seed=3)
    return BundleCache().get(dataset, model)


def _png(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("L"))


def test_detail_holds_the_dataset_maps_and_a_consistent_reconstruction(bundle):
    detail = details.galaxy_detail(bundle, 7, k_neighbours=5)
    stored = np.asarray(bundle.dataset.maps[7])
    for k, name in enumerate(["mom0", "mom1", "mom2", "env"]):
        np.testing.assert_array_equal(detail.maps[name], stored[k])
    assert detail.units["mom1"] == "km/s"
    assert detail.model_input.shape == detail.reconstruction.shape == (1, 64, 64)
    np.testing.assert_allclose(detail.residual, detail.model_input - detail.reconstruction)
    assert detail.galaxy_id == int(bundle.column("id")[7])
    assert detail.pa_true == pytest.approx(bundle.column("pa")[7])
    assert 7 not in detail.neighbours and len(detail.neighbours) == 5
    z = bundle.frame(["latent_0", "latent_1", "latent_2"]).to_numpy()
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
    assert details.pa_arrow_end(0.0) == pytest.approx((31.5, 31.5 + details.ARROW_LENGTH_PX))  # north is up
    assert details.pa_arrow_end(90.0) == pytest.approx((31.5 - details.ARROW_LENGTH_PX, 31.5))  # east is left


def test_detail_panels_say_their_units_and_the_arrows_are_explained(bundle):
    detail = details.galaxy_detail(bundle, 4)
    panels = details.detail_panels(detail, "dawson2020")
    assert [p.title for p in panels] == ["mom0", "mom1", "mom2", "env", "model input (mom1)", "reconstruction",
                                         "residual (input - recon.)"]
    assert [p.unit_label for p in panels[:4]] == ["Jy/beam km/s", "km/s", "km/s", "counts"]
    assert all(p.unit_label == "dimensionless (recipe dawson2020)" for p in panels[4:])
    velocity = panels[1]
    assert velocity.limits[0] == -velocity.limits[1]  # diverging, centred on 0 km/s
    assert [a.colour for a in velocity.arrows] == [details.TRUE_PA_COLOUR, details.LATENT_PA_COLOUR]
    assert all(a.label == "" for a in velocity.arrows)  # unlabelled on the map: the legend says which is which
    legend = details.pa_legend(detail)
    assert f"true PA {detail.pa_true:.0f} deg" in legend and f"latent space {detail.pa_latent:.0f} deg" in legend
    image = _png(details.detail_png(detail, "dawson2020"))
    assert image.shape[1] <= 410 and image.std() > 20  # two panels a row: fits the detail column


@pytest.mark.parametrize("method", ["vanilla gradient", "SmoothGrad", "integrated gradients"])
def test_saliency_has_the_input_shape_and_its_own_caption(bundle, method):
    values = details.galaxy_saliency(bundle, 2, method, "latent_0")
    assert values.shape == (1, 64, 64) and np.isfinite(values).all() and np.abs(values).sum() > 0
    label, caption = details.SALIENCY_CAPTIONS[details.SALIENCY_METHODS[method]]
    assert ("integrated gradients" in caption) == (method == "integrated gradients")
    assert label != "|gradient|" or method == "vanilla gradient"
    detail = details.galaxy_detail(bundle, 2)
    assert _png(details.saliency_png(detail, values, "latent_0", method)).std() > 10


def test_traversal_passes_through_the_reconstruction(bundle):
    detail = details.galaxy_detail(bundle, 3)
    values, decoded = details.latent_traversal(bundle, 3, axis=1, steps=5)
    assert decoded.shape == (5, 1, 64, 64)
    assert values[2] == pytest.approx(bundle.column("latent_1")[3], rel=1e-5)
    np.testing.assert_allclose(decoded[2], detail.reconstruction, atol=1e-4)
    assert _png(details.traversal_png(values, decoded)).shape[1] <= 410


def test_neighbour_strip_and_value_captions(bundle):
    rows = np.array([5, 1, 9])
    strip = _png(details.neighbours_png(bundle, rows))
    assert strip.shape[1] <= 410 and strip.std() > 10
    assert details.format_value(1002.0) == "1002" and details.format_value(0.123456) == "0.1235"
    assert details.format_value(float("nan")) == "nan"


def test_uploaded_map_lands_on_its_dataset_twin(bundle, tmp_path):
    """A FITS file holding a dataset galaxy's own mom1 map is placed at that galaxy."""
    from astropy.io import fits

    row = 11
    mom1 = np.asarray(bundle.dataset.maps[row])[1]
    path = tmp_path / "twin.fits"
    primary = fits.PrimaryHDU()
    primary.header["OBJECT"] = "TWIN"
    fits.HDUList([primary, fits.ImageHDU(mom1)]).writeto(path)
    result = uploads.read_uploaded_fits({"twin.fits": path.read_bytes()})
    placed = uploads.place(bundle, result.names, uploads.encode(bundle, result.maps))
    assert placed["name"].tolist() == ["TWIN"]
    for column in ("latent_0", "latent_1", "latent_2", "pca_0", "folded_r", "folded_h", "pa_latent"):
        assert placed[column].iloc[0] == pytest.approx(bundle.column(column)[row], rel=1e-4, abs=1e-6)
    assert placed["neighbour_ids"].iloc[0].split(", ")[0] == str(bundle.column("id")[row])


def test_upload_of_a_non_square_size_is_resized(bundle, tmp_path):
    path = write_velocity_fits(tmp_path / "small.fits", 45.0, 60.0, size=40, name="SMALL")
    result = uploads.read_uploaded_fits({"small.fits": path.read_bytes()})
    placed = uploads.place(bundle, result.names, uploads.encode(bundle, result.maps))
    assert np.isfinite(placed[["latent_0", "folded_r"]].to_numpy()).all()


@pytest.mark.parametrize("filename, shown", [
    ("../../etc/evil.fits", "evil.fits"),
    ("..", ".."),
    ("a\x00b.fits", "ab.fits"),
    ("x" * 300 + ".fits", "x" * 119 + "…"),
    ("C:\\Users\\me\\m1.fits", "m1.fits"),
    ("", "upload"),
])
def test_upload_names_are_shown_safely_and_never_used_as_paths(bundle, tmp_path, filename, shown):
    content = write_velocity_fits(tmp_path / "g.fits", 10.0, 50.0, size=40, name="").read_bytes()
    before = set(tmp_path.parent.iterdir())
    result = uploads.read_uploaded_fits([(filename, content)])
    assert result.refused == [] and result.names == [shown]  # no OBJECT: the shown file name
    assert set(tmp_path.parent.iterdir()) == before  # nothing written next to the test's directory


def test_one_bad_upload_is_named_and_the_others_are_placed(tmp_path):
    good = write_velocity_fits(tmp_path / "good.fits", 10.0, 50.0, size=40, name="GOOD").read_bytes()
    result = uploads.read_uploaded_fits([("broken.fits", b"SIMPLE  = not fits at all"), ("good.fits", good),
                                         ("../empty.fits", b"")])
    assert result.names == ["GOOD"]
    assert [r.split(":")[0] for r in result.refused] == ["broken.fits", "empty.fits"]
    assert all("upload-" not in r and "/tmp" not in r for r in result.refused)  # no server paths


def test_statistics_say_what_they_were_computed_on(bundle):
    every = statistics.compute(bundle)
    assert every.description == "Computed on every map: 120 maps of 60 galaxies."
    assert "On all 120 maps" in every.correlation_note and "50 shuffles" in every.correlation_note
    assert set(every.correlations["latent"]) == {"latent_0", "latent_1", "latent_2"}
    assert every.boundary is not None and every.position_angle is not None
    some = statistics.compute(bundle, np.arange(40))
    assert some.description == "Computed on the selection: 40 maps of 20 galaxies."
    with pytest.raises(Exception, match="empty"):
        statistics.compute(bundle, np.array([], dtype=int))


def test_statistics_boundary_uses_the_cards_threshold_and_position(bundle, monkeypatch):
    """Hand-made case: at r = 1 with kappa threshold 0.5, TN = 1 and TP = 0.75."""
    import pandas as pd

    from galexplore.analysis.projections import LatentProjector
    from galexplore.explorer.bundles import Bundle

    table = pd.DataFrame({"id": np.arange(8), "folded_r": [0.1, 0.2, 0.3, 0.4, 1.1, 1.2, 1.3, 0.35],
                          "folded_h": np.zeros(8), "kappa": [0.1, 0.2, 0.3, 0.4, 0.9, 0.8, 0.7, 0.9]})
    latents = np.random.default_rng(0).normal(size=(8, 3))
    projector = LatentProjector(umap=False).fit(latents, extras={"boundary": {"folded_r": 1.0,
                                                                             "kappa_threshold": 0.5}})
    result = statistics.compute(Bundle(None, None, table, {}, projector))
    b = result.boundary
    assert b["position"] == 1.0 and b["position_source"] == "the model card" and b["threshold"] == 0.5
    np.testing.assert_allclose(b["confusion"], [[1.0, 0.0], [0.25, 0.75]])
