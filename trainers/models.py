"""Build the model a trial trains: a built-in MLP or CNN, or a user factory named "module:function".

Models are plain ``nn.Sequential`` stacks of standard layers, so techniques can find and replace
their ``nn.Linear``, ``nn.Conv2d`` and activation modules.
"""

import importlib
import logging
import math
from collections.abc import Sequence

import torch
from torch import nn

logger = logging.getLogger(__name__)

MODEL_KINDS = ("mlp", "cnn", "package.module:factory")


class ModelError(ValueError):
    """A model kind that cannot be built; the message names the kind and the cause."""


def build_model(
    kind: str,
    input_shape: tuple[int, ...],
    num_classes: int,
    *,
    hidden: Sequence[int] = (64,),
    channels: Sequence[int] = (16, 32),
    options: dict | None = None,
) -> nn.Module:
    """Build an untrained classifier; its initial weights follow torch's global seed.

    Args:
        kind: "mlp", "cnn", or "package.module:factory", a callable called as
            ``factory(input_shape=..., num_classes=..., **options)`` that returns an nn.Module.
        input_shape: shape of one example without the batch dimension, e.g. (1, 28, 28).
        num_classes: number of output logits.
        hidden: mlp only: width of each hidden Linear -> ReLU layer.
        channels: cnn only: output channels of each Conv2d -> ReLU -> MaxPool2d block.
        options: factory only: extra keyword arguments for the factory.

    Returns:
        The model, mapping (N, *input_shape) float inputs to (N, num_classes) logits.

    Raises:
        ModelError: for an unknown kind, a bad size, or a factory that cannot be used.

    Example:
        >>> model = build_model("cnn", (1, 28, 28), 10, channels=(8, 16))
        >>> model(torch.zeros(2, 1, 28, 28)).shape
        torch.Size([2, 10])
    """
    if num_classes < 1:
        raise ModelError(f"model num_classes={num_classes!r} must be at least 1")
    if not input_shape or min(input_shape) < 1:
        raise ModelError(f"model input_shape={tuple(input_shape)!r} must be non-empty positive sizes")
    if ":" in kind:
        return _build_from_factory(kind, input_shape, num_classes, options or {})
    if options:
        raise ModelError(f"model options {sorted(options)} are only for 'module:factory' kinds, not {kind!r}")
    if kind == "mlp":
        return _build_mlp(input_shape, num_classes, hidden)
    if kind == "cnn":
        return _build_cnn(input_shape, num_classes, channels)
    raise ModelError(f"model kind {kind!r} is unknown; valid kinds: {', '.join(MODEL_KINDS)}")


def _build_mlp(input_shape, num_classes, hidden):
    _check_widths("hidden", hidden)
    layers = [nn.Flatten()]
    in_features = math.prod(input_shape)
    for width in hidden:
        layers += [nn.Linear(in_features, width), nn.ReLU()]
        in_features = width
    layers.append(nn.Linear(in_features, num_classes))
    return nn.Sequential(*layers)


def _build_cnn(input_shape, num_classes, channels):
    if len(input_shape) != 3:
        raise ModelError(
            f"model kind 'cnn' needs image data of shape (channels, height, width), "
            f"got input_shape={tuple(input_shape)}"
        )
    _check_widths("channels", channels)
    layers = []
    in_channels = input_shape[0]
    for out_channels in channels:
        layers += [nn.Conv2d(in_channels, out_channels, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
        in_channels = out_channels
    layers.append(nn.Flatten())
    try:
        with torch.no_grad():
            flat_features = nn.Sequential(*layers)(torch.zeros(1, *input_shape)).shape[1]
    except RuntimeError as error:
        raise ModelError(
            f"model kind 'cnn': input_shape={tuple(input_shape)} is too small "
            f"for {len(channels)} pooling blocks: {error}"
        ) from error
    layers.append(nn.Linear(flat_features, num_classes))
    return nn.Sequential(*layers)


def _build_from_factory(kind, input_shape, num_classes, options):
    module_name, _, factory_name = kind.partition(":")
    if not module_name or not factory_name:
        raise ModelError(f"model kind {kind!r} must look like 'package.module:factory'")
    try:
        module = importlib.import_module(module_name)
    except Exception as error:
        raise ModelError(f"model kind {kind!r}: cannot import {module_name!r}: {error!r}") from error
    if not hasattr(module, factory_name):
        raise ModelError(f"model kind {kind!r}: module {module_name!r} has no attribute {factory_name!r}")
    factory = getattr(module, factory_name)
    if not callable(factory):
        raise ModelError(f"model kind {kind!r}: {factory_name!r} is a {type(factory).__name__}, not callable")
    try:
        model = factory(input_shape=tuple(input_shape), num_classes=num_classes, **options)
    except TypeError as error:
        raise ModelError(f"model kind {kind!r} rejected its arguments {sorted(options)}: {error}") from error
    if not isinstance(model, nn.Module):
        raise ModelError(f"model kind {kind!r} returned a {type(model).__name__}, not a torch.nn.Module")
    logger.info("built model %s with options %s", kind, options)
    return model


def _check_widths(field, widths):
    if any(width < 1 for width in widths):
        raise ModelError(f"model {field}={list(widths)!r} must all be at least 1")
