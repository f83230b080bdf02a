"""DawsonCAE / IndexFreeCAE against Table A1 of Dawson et al. 2020, and the registry."""

from __future__ import annotations

import pytest
import torch

from galexplore.errors import ModelError, ParameterError
from galexplore.models.cae import DawsonCAE, IndexFreeCAE
from galexplore.models.registry import build_model, list_architectures, register_architecture


def _conv_params(c_in: int, c_out: int, k: int = 3) -> int:
    return c_in * c_out * k * k + c_out


# Counted by hand from Table A1 (3x3 kernels, 8-8-16-16 filters, 64 -> 32 -> 16 pixels,
# 16 * 16 * 16 = 4096 features into the linear layer, mirrored decoder ending in 1 channel):
#   conv1 1*8*9+8 = 80, conv2 8*8*9+8 = 584, conv3 8*16*9+16 = 1168, conv4 16*16*9+16 = 2320,
#   lc1 4096*3+3 = 12291, lc2 3*4096+4096 = 16384,
#   trans1 16*16*9+16 = 2320, trans2 16*8*9+8 = 1160, trans3 8*8*9+8 = 584, trans4 8*1*9+1 = 73.
TABLE_A1_PARAMETERS = 36964


def test_parameter_count_matches_table_a1():
    model = DawsonCAE()
    assert sum(p.numel() for p in model.parameters()) == TABLE_A1_PARAMETERS
    per_layer = {name: sum(p.numel() for p in module.parameters()) for name, module in model.named_children()}
    assert per_layer["conv1"] == 80
    assert per_layer["lc1"] == 12291
    assert per_layer["lc2"] == 16384
    assert per_layer["trans4"] == 73


def test_multichannel_and_latent_dim_change_only_the_end_layers():
    model = DawsonCAE(in_channels=2, latent_dim=5)
    expected = (TABLE_A1_PARAMETERS
                + 8 * 9  # conv1 gains one input channel of 8 3x3 kernels
                + 2 * (4096 + 1)  # lc1 gains 2 outputs (weights and biases)
                + 2 * 4096  # lc2 gains 2 inputs (its 4096 biases stay)
                + 8 * 9 + 1)  # trans4 gains one output channel and its bias
    assert sum(p.numel() for p in model.parameters()) == expected


def test_shapes_of_encode_and_reconstruct():
    model = DawsonCAE(in_channels=2, latent_dim=3).eval()
    x = torch.rand(5, 2, 64, 64) * 2 - 1
    with torch.no_grad():
        z = model.encode(x)
        recon = model.reconstruct(x)
        assert torch.equal(model(x), recon)
    assert z.shape == (5, 3)
    assert recon.shape == (5, 2, 64, 64)
    assert model.predict(x) == {}


def test_unpooling_places_values_only_where_the_encoder_pooled():
    # After the decoder's first max-unpool (16 x 32 x 32) each 2x2 block holds at most one
    # non-zero value: the one at the position of the encoder's maximum.
    model = DawsonCAE().eval()
    x = torch.rand(1, 1, 64, 64)
    outputs = []
    model.unpool.register_forward_hook(lambda module, inputs, output: outputs.append(output))
    with torch.no_grad():
        model.reconstruct(x)
    assert outputs[0].shape == (1, 16, 32, 32)
    assert float(outputs[0].abs().sum()) > 0
    blocks = outputs[0].reshape(1, 16, 16, 2, 16, 2).permute(0, 1, 2, 4, 3, 5).reshape(1, 16, 16, 16, 4)
    assert int((blocks != 0).sum(-1).max()) <= 1


def test_dawson_cae_cannot_decode_arbitrary_latents():
    assert not hasattr(DawsonCAE(), "decode")


def test_index_free_decode_of_arbitrary_latent_points():
    model = IndexFreeCAE(in_channels=1, latent_dim=3).eval()
    z = torch.tensor([[0.0, 0.0, 0.0], [10.0, -5.0, 3.0], [-100.0, 1e-3, 7.0]])
    with torch.no_grad():
        maps = model.decode(z)
        recon = model.reconstruct(torch.zeros(2, 1, 64, 64))
    assert maps.shape == (3, 1, 64, 64)
    assert recon.shape == (2, 1, 64, 64)
    assert torch.isfinite(maps).all()
    assert not torch.allclose(maps[0], maps[1])
    with pytest.raises(ModelError, match=r"\(n, 3\)"):
        model.decode(torch.zeros(2, 4))


def test_index_free_has_the_same_layers_as_dawson_cae():
    free = {k: v.shape for k, v in IndexFreeCAE().state_dict().items()}
    published = {k: v.shape for k, v in DawsonCAE().state_dict().items()}
    assert free == published


def test_wrong_input_shape_raises_clear_error():
    with pytest.raises(ModelError, match=r"\(n, 1, 64, 64\).*\(2, 1, 32, 32\)"):
        DawsonCAE().encode(torch.zeros(2, 1, 32, 32))
    with pytest.raises(ParameterError):
        DawsonCAE(latent_dim=0)


def test_registry_builds_registered_architectures():
    assert {"dawson2020_cae", "cae_free"} <= set(list_architectures())
    model = build_model("cae_free", in_channels=2, latent_dim=4)
    assert isinstance(model, IndexFreeCAE) and model.latent_dim == 4


def test_registry_unknown_name_lists_known_ones():
    with pytest.raises(ModelError) as info:
        build_model("no_such_net")
    assert "dawson2020_cae" in str(info.value) and "cae_free" in str(info.value)


def test_registry_bad_hyperparameters_raise_model_error():
    with pytest.raises(ModelError, match="nonsense"):
        build_model("dawson2020_cae", nonsense=3)


def test_registry_refuses_a_second_builder_under_a_taken_name():
    with pytest.raises(ValueError, match="already registered"):
        register_architecture("dawson2020_cae")(lambda: torch.nn.Identity())
