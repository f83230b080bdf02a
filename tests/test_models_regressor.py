"""The CNN regressor: shapes, physical units from the stored scalings, a checkpoint round trip."""

from __future__ import annotations

import pytest
import torch

from galexplore.errors import ParameterError
from galexplore.models.checkpoint import ModelCard, load_checkpoint, save_checkpoint
from galexplore.models.registry import build_model
from galexplore.models.regressor import CNNRegressor

OUTPUTS = ["log_mstar", "distance"]


def test_shapes_and_registry():
    model = build_model("cnn_regressor", in_channels=3, outputs=OUTPUTS, output_units=["dex", "Mpc"],
                        latent_dim=12).eval()
    x = torch.randn(5, 3, 64, 64)
    assert model.encode(x).shape == (5, 12)
    predictions = model.predict(x)
    assert list(predictions) == OUTPUTS
    assert all(v.shape == (5,) for v in predictions.values())
    assert model.output_units == {"log_mstar": "dex", "distance": "Mpc"}
    with pytest.raises(ParameterError, match="3, 64, 64"):
        model.encode(torch.zeros(5, 2, 64, 64))
    with pytest.raises(ParameterError, match="at least one output"):
        CNNRegressor(outputs=[])


def test_predictions_are_destandardised_with_the_stored_mean_and_std():
    model = CNNRegressor(in_channels=1, outputs=OUTPUTS).eval()
    model.set_target_scaling(mean=[10.0, 70.0], std=[0.5, 20.0])
    with torch.no_grad():
        model.head[1].weight.zero_()
        model.head[1].bias.copy_(torch.tensor([1.0, -2.0]))  # standardised outputs (+1, -2)
    predictions = model.predict(torch.randn(3, 1, 64, 64))
    # 10 + 1 * 0.5 = 10.5 dex; 70 - 2 * 20 = 30 Mpc
    torch.testing.assert_close(predictions["log_mstar"], torch.full((3,), 10.5))
    torch.testing.assert_close(predictions["distance"], torch.full((3,), 30.0))
    with pytest.raises(ParameterError, match="positive"):
        model.set_target_scaling(mean=[0.0, 0.0], std=[1.0, 0.0])


def test_input_scale_divides_each_channel_and_blank_pixels_count_as_zero():
    torch.manual_seed(0)
    model = CNNRegressor(in_channels=2, outputs=["a"]).eval()
    x = torch.randn(4, 2, 64, 64)
    reference = model.encode(x)
    model.set_input_scale([300.0, 2.0])
    scaled = x * torch.tensor([300.0, 2.0]).view(1, 2, 1, 1)
    torch.testing.assert_close(model.encode(scaled), reference, rtol=1e-5, atol=1e-5)
    blank = scaled.clone()
    blank[:, :, :5] = float("nan")
    zeroed = scaled.clone()
    zeroed[:, :, :5] = 0.0
    torch.testing.assert_close(model.encode(blank), model.encode(zeroed))


def test_scalings_survive_a_checkpoint(tmp_path):
    model = CNNRegressor(in_channels=2, outputs=OUTPUTS, output_units=["dex", "Mpc"], latent_dim=8).eval()
    model.set_input_scale([300.0, 0.2])
    model.set_target_scaling(mean=[9.5, 55.0], std=[0.3, 12.0])
    card = ModelCard(name="r", architecture="cnn_regressor",
                     hyperparameters={"in_channels": 2, "outputs": OUTPUTS, "output_units": ["dex", "Mpc"],
                                      "latent_dim": 8},
                     channels=["mom1", "mom0"], recipe="physical", outputs=OUTPUTS,
                     output_units={"log_mstar": "dex", "distance": "Mpc"})
    save_checkpoint(model, card, tmp_path / "ckpt")
    loaded, _ = load_checkpoint(tmp_path / "ckpt")
    assert loaded.input_scale.tolist() == pytest.approx([300.0, 0.2])
    assert loaded.target_std.tolist() == pytest.approx([0.3, 12.0])
    x = torch.randn(2, 2, 64, 64)
    for name in OUTPUTS:
        torch.testing.assert_close(loaded.predict(x)[name], model.predict(x)[name])
