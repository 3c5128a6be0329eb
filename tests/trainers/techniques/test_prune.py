import copy
import io

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from trainers.techniques.common import bake_weight_transforms
from trainers.techniques.prune import (
    Prune,
    SparseLinear,
    apply_pruning,
    export_sparse,
    sparsity_at,
    sparsity_of,
    update_pruning,
)


class TinyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, kernel_size=3)
        self.fc1 = nn.Linear(4 * 4 * 4, 32)
        self.act = nn.ReLU()
        self.fc2 = nn.Linear(32, 10)

    def forward(self, inputs):
        return self.fc2(self.act(self.fc1(self.conv(inputs).flatten(1))))

    def example_inputs(self):
        return torch.randn(3, 1, 6, 6)


class RoundToTenths(nn.Module):
    def forward(self, weight):
        return torch.round(weight * 10) / 10


def tiny_net():
    torch.manual_seed(0)
    return TinyNet()


def prunable_layers(model):
    return [model.conv, model.fc1, model.fc2]


def zero_count(weight):
    return int((weight == 0).sum())


def stored_bytes(model):
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return len(buffer.getvalue())


def pruned_net(sparsity, scope="global"):
    model = tiny_net()
    cfg = Prune(sparsity, scope=scope, schedule="oneshot")
    apply_pruning(model, cfg)
    update_pruning(model, cfg, epoch=0, epochs=1)
    return model


def train_steps(model, steps):
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, weight_decay=0.1)
    for _ in range(steps):
        optimizer.zero_grad()
        model(model.example_inputs()).square().mean().backward()
        optimizer.step()


@pytest.mark.parametrize(
    ("field", "kwargs"),
    [("sparsity", {"sparsity": 1.0}), ("sparsity", {"sparsity": -0.1}), ("sparsity", {"sparsity": "0.5"}),
     ("scope", {"sparsity": 0.5, "scope": "tensor"}), ("schedule", {"sparsity": 0.5, "schedule": "linear"})],
)
def test_bad_values_raise_naming_the_field(field, kwargs):
    with pytest.raises(ValueError, match=f"Prune.{field}"):
        Prune(**kwargs)


def test_mode_and_active():
    assert Prune(0.5).label() == "sp50"
    assert Prune(0.9).label() == "sp90"
    assert Prune(0.125).label() == "sp12.5"
    assert Prune().label() == "" and not Prune(0.0).active


def test_gradual_schedule_is_cubic_and_reaches_the_target_at_the_last_epoch():
    cfg = Prune(0.8)
    values = [sparsity_at(cfg, epoch, 4) for epoch in range(4)]
    assert values == pytest.approx([0.0, 0.8 * (1 - (2 / 3) ** 3), 0.8 * (1 - (1 / 3) ** 3), 0.8])
    assert sparsity_at(cfg, 0, 1) == 0.8


def test_oneshot_schedule_is_at_the_target_from_epoch_zero():
    assert [sparsity_at(Prune(0.6, schedule="oneshot"), epoch, 3) for epoch in range(3)] == [0.6] * 3


def test_epoch_out_of_range_raises():
    with pytest.raises(ValueError, match="epoch"):
        sparsity_at(Prune(0.5), 3, 3)


def test_apply_registers_all_ones_masks_and_keeps_outputs():
    model = tiny_net()
    inputs = model.example_inputs()
    expected = model(inputs)
    notes = apply_pruning(model, Prune(0.5))
    assert notes == {"pruned_layers": "conv,fc1,fc2"}
    for layer in prunable_layers(model):
        mask = layer.parametrizations.weight[0].mask
        assert mask.shape == layer.weight.shape and bool((mask == 1).all())
    torch.testing.assert_close(model(inputs), expected)


def test_inactive_config_does_nothing():
    model = tiny_net()
    assert apply_pruning(model, Prune(0.0)) == {}
    assert update_pruning(model, Prune(0.0), epoch=0, epochs=2) == 0.0
    assert not parametrize.is_parametrized(model.fc1)


def test_layer_scope_prunes_each_layer_exactly():
    model = pruned_net(0.5, scope="layer")
    for layer in prunable_layers(model):
        assert zero_count(layer.weight) == round(0.5 * layer.weight.numel())


def test_global_scope_prunes_the_smallest_magnitudes_across_layers():
    model = tiny_net()
    with torch.no_grad():
        model.fc2.weight.mul_(100)  # far larger than the rest: global ranking spares it
    cfg = Prune(0.5, schedule="oneshot")
    apply_pruning(model, cfg)
    update_pruning(model, cfg, epoch=0, epochs=1)
    total = sum(layer.weight.numel() for layer in prunable_layers(model))
    assert sum(zero_count(layer.weight) for layer in prunable_layers(model)) == round(0.5 * total)
    assert zero_count(model.fc2.weight) == 0
    pruned = [layer.parametrizations.weight.original[layer.weight == 0].abs() for layer in prunable_layers(model)]
    kept = [layer.weight[layer.weight != 0].abs() for layer in prunable_layers(model)]
    assert torch.cat(pruned).max() <= torch.cat(kept).min()
    assert sparsity_of(model) == pytest.approx(round(0.5 * total) / total)


def test_gradual_masks_grow_monotonically_and_stay_fixed_after_the_target():
    model = tiny_net()
    cfg = Prune(0.75, scope="layer")
    apply_pruning(model, cfg)
    epochs = 5
    previous_masks = None
    for epoch in range(epochs):
        scheduled = update_pruning(model, cfg, epoch, epochs)
        assert scheduled == pytest.approx(sparsity_at(cfg, epoch, epochs))
        masks = [layer.parametrizations.weight[0].mask.clone() for layer in prunable_layers(model)]
        if previous_masks is not None:
            for mask, previous in zip(masks, previous_masks):
                assert bool((mask <= previous).all())  # once pruned, stays pruned
        previous_masks = masks
        train_steps(model, steps=2)
    assert sparsity_of(model) == pytest.approx(0.75, abs=0.01)


def test_oneshot_mask_is_fixed_and_zeros_survive_optimizer_steps():
    model = tiny_net()
    cfg = Prune(0.6, schedule="oneshot")
    apply_pruning(model, cfg)
    update_pruning(model, cfg, epoch=0, epochs=3)
    masks = [layer.parametrizations.weight[0].mask.clone() for layer in prunable_layers(model)]
    train_steps(model, steps=3)
    assert update_pruning(model, cfg, epoch=1, epochs=3) == 0.6
    for layer, mask in zip(prunable_layers(model), masks):
        torch.testing.assert_close(layer.parametrizations.weight[0].mask, mask, rtol=0, atol=0)
        assert bool((layer.weight[mask == 0] == 0).all())


def test_update_before_apply_raises():
    with pytest.raises(RuntimeError, match="apply_pruning"):
        update_pruning(tiny_net(), Prune(0.5), epoch=0, epochs=1)


def test_masks_come_before_other_parametrizations():
    model = tiny_net()
    parametrize.register_parametrization(model.fc1, "weight", RoundToTenths())
    with pytest.raises(RuntimeError, match="fc1"):
        apply_pruning(model, Prune(0.5))


def test_later_parametrizations_compose_after_the_mask():
    model = tiny_net()
    cfg = Prune(0.5, schedule="oneshot")
    apply_pruning(model, cfg)
    parametrize.register_parametrization(model.fc1, "weight", RoundToTenths())
    update_pruning(model, cfg, epoch=0, epochs=1)
    mask = model.fc1.parametrizations.weight[0].mask
    original = model.fc1.parametrizations.weight.original
    torch.testing.assert_close(model.fc1.weight, torch.round(original * mask * 10) / 10)


def test_state_dict_and_deepcopy_keep_the_masks():
    model = pruned_net(0.5)
    inputs = model.example_inputs()
    restored = TinyNet()
    apply_pruning(restored, Prune(0.5))
    restored.load_state_dict(model.state_dict())
    torch.testing.assert_close(restored(inputs), model(inputs))
    copied = copy.deepcopy(model)
    torch.testing.assert_close(copied(inputs), model(inputs))
    assert copied.fc1.parametrizations.weight[0].mask is not model.fc1.parametrizations.weight[0].mask


def test_bake_keeps_outputs_and_zeros():
    model = pruned_net(0.5)
    inputs = model.example_inputs()
    expected = model(inputs)
    bake_weight_transforms(model)
    assert not any(parametrize.is_parametrized(module) for module in model.modules())
    torch.testing.assert_close(model(inputs), expected)
    assert sparsity_of(model) == pytest.approx(0.5, abs=0.01)


def test_export_sparse_converts_at_high_sparsity_with_equal_outputs_and_smaller_storage():
    model = bake_weight_transforms(pruned_net(0.9, scope="layer"))
    inputs = model.example_inputs()
    expected = model(inputs)
    dense_bytes = stored_bytes(model)
    export_sparse(model)
    assert isinstance(model.fc1, SparseLinear) and isinstance(model.fc2, SparseLinear)
    assert isinstance(model.conv, nn.Conv2d)
    assert model.fc1.values.numel() == model.fc1.in_features * model.fc1.out_features - round(0.9 * 64 * 32)
    torch.testing.assert_close(model(inputs), expected, atol=1e-5, rtol=1e-5)
    assert stored_bytes(model) < dense_bytes
    torch.testing.assert_close(copy.deepcopy(model)(inputs), expected, atol=1e-5, rtol=1e-5)


def test_export_sparse_leaves_dense_layers_at_low_sparsity():
    model = bake_weight_transforms(pruned_net(0.1, scope="layer"))
    export_sparse(model)
    assert isinstance(model.fc1, nn.Linear) and isinstance(model.fc2, nn.Linear)


def test_sparse_linear_handles_extra_batch_dimensions():
    weight = torch.randn(6, 5) * (torch.rand(6, 5) > 0.8)
    bias = torch.randn(6)
    inputs = torch.randn(2, 3, 5)
    layer = SparseLinear(weight, bias)
    torch.testing.assert_close(layer(inputs), nn.functional.linear(inputs, weight, bias))


def test_export_sparse_needs_baked_model():
    with pytest.raises(RuntimeError, match="bake_weight_transforms"):
        export_sparse(pruned_net(0.9))
