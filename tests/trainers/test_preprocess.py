import numpy as np
import torch

from trainers.preprocess import Scale, Standardise, standardisation


def test_scale_divides_stored_pixels_into_unit_range():
    pixels = torch.tensor([[0.0, 51.0, 255.0]])
    assert torch.equal(Scale(255.0)(pixels), pixels / 255)


def test_standardisation_gives_training_rows_zero_mean_and_unit_deviation():
    rng = np.random.default_rng(0)
    x_train = rng.normal([5.0, -3.0, 7.0], [2.0, 0.5, 0.0], size=(100, 3)).astype(np.float32)
    standardise = standardisation(x_train)
    standardised = standardise(torch.from_numpy(x_train))
    assert torch.allclose(standardised[:, :2].mean(0), torch.zeros(2), atol=1e-5)
    assert torch.allclose(standardised[:, :2].std(0, correction=0), torch.ones(2), atol=1e-5)
    # a constant feature maps to 0, never to NaN
    assert torch.equal(standardised[:, 2], torch.zeros(100))


def test_standardise_keeps_its_statistics_in_the_state_dict():
    standardise = Standardise(torch.tensor([1.0, 2.0]), torch.tensor([2.0, 4.0]))
    assert set(standardise.state_dict()) == {"mean", "std"}
    assert list(standardise.parameters()) == []
    assert torch.equal(standardise(torch.tensor([[3.0, 2.0]])), torch.tensor([[1.0, 0.0]]))
