import pytest
import torch

from trainers.data import Dataset
from trainers.preprocess import Scale
from trainers.techniques.feature_select import FeatureSelect, SelectFeatures, apply_feature_selection


def _image_dataset(transforms=()):
    torch.manual_seed(0)
    scales = torch.arange(1, 13, dtype=torch.float32).reshape(1, 3, 4)  # distinct variances
    x_train = torch.randn(50, 1, 3, 4) * scales
    x_val = torch.randn(7, 1, 3, 4) * scales.flip(-1)  # other splits must not influence the choice
    x_test = torch.randn(9, 1, 3, 4) * scales.flip(-1)
    labels = torch.zeros(66, dtype=torch.int64)
    return Dataset("toy", x_train, labels[:50], x_val, labels[50:57], x_test, labels[57:], 2, transforms)


@pytest.mark.parametrize("keep", [0.25, 0.5, 0.9])
def test_keeps_the_highest_variance_training_features(keep):
    ds = _image_dataset()
    selected, kept = apply_feature_selection(ds, FeatureSelect(keep=keep))
    k = max(1, round(keep * 12))
    variance = ds.x_train.reshape(50, -1).var(dim=0)
    assert torch.equal(kept, variance.topk(k).indices.sort().values)
    assert selected.model_input_shape == (k,)
    model_inputs = selected.preprocessed()
    assert torch.equal(model_inputs.x_test, ds.x_test.reshape(9, -1)[:, kept])
    assert torch.equal(model_inputs.x_val, ds.x_val.reshape(7, -1)[:, kept])
    assert torch.equal(model_inputs.y_train, ds.y_train)


def test_the_selection_is_an_input_transform_after_the_data_sets_own():
    ds = _image_dataset(transforms=(Scale(4.0),))
    selected, kept = apply_feature_selection(ds, FeatureSelect(keep=0.5))
    # the raw rows stay as they are; the kept indices select from the data set's own model inputs
    assert selected.x_test is ds.x_test and selected.input_shape == (1, 3, 4)
    assert selected.transforms[0] is ds.transforms[0] and isinstance(selected.transforms[1], SelectFeatures)
    assert torch.equal(selected.transforms[1].kept, kept)
    assert torch.equal(selected.preprocess()(ds.x_test), (ds.x_test / 4).reshape(9, -1)[:, kept])


def test_keeps_at_least_one_feature():
    selected, kept = apply_feature_selection(_image_dataset(), FeatureSelect(keep=0.01))
    assert kept.tolist() == [_image_dataset().x_train.reshape(50, -1).var(dim=0).argmax().item()]
    assert selected.model_input_shape == (1,)


def test_inactive_returns_the_dataset_and_all_indices():
    ds = _image_dataset()
    config = FeatureSelect()
    selected, kept = apply_feature_selection(ds, config)
    assert selected is ds
    assert torch.equal(kept, torch.arange(12))
    assert not config.active and config.label() == ""


def test_mode_names_the_kept_fraction():
    assert FeatureSelect(keep=0.5).label() == "fk0.5"
    assert FeatureSelect(keep=0.25).active
    assert FeatureSelect.key == "feature_keep"


@pytest.mark.parametrize("keep", [0, -0.5, 1.5, True, "0.5", float("nan")])
def test_keep_outside_unit_interval_is_rejected(keep):
    with pytest.raises(ValueError, match=rf"feature_keep={keep!r} must be a number in \(0, 1\]"):
        FeatureSelect(keep=keep)
