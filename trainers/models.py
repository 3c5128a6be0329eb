"""Build the model a trial trains: a built-in MLP or CNN, or a user factory named "module:function".

Models are plain ``nn.Sequential`` stacks of standard layers, so techniques can find and replace
their ``nn.Linear``, ``nn.Conv2d`` and activation modules.
"""

import importlib
import inspect
import logging
import math
from collections.abc import Sequence

from torch import nn

from trainers.sizes import too_large

logger = logging.getLogger(__name__)

MODEL_KINDS = ("mlp", "cnn", "package.module:factory")
TRAINING_BYTES_PER_PARAMETER = 16
"""fp32 weight, gradient and Adam's two moments: what one parameter costs while training."""


class ModelError(ValueError):
    """A model kind that cannot be built; the message names the kind and the cause, `key` the spec
    key to blame ("model.kind", "model.hidden" or "model.channels")."""

    def __init__(self, message: str, key: str = "model.kind"):
        super().__init__(message)
        self.key = key


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
        kind: "mlp", "cnn", or "package.module:factory", a callable that returns an nn.Module,
            called with the keyword arguments it accepts among ``input_shape`` and
            ``num_classes``, plus every option (a factory taking ``**kwargs`` gets all), so a
            torchvision-style ``resnet18(num_classes=10)`` works.
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
        >>> import torch
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


def check_logits(model: nn.Module, inputs, num_classes: int, kind: str) -> None:
    """Run `model` once on a batch of the data's model inputs, in eval mode and without gradients,
    and check that it gives one logit per class: a factory built for other widths fails here, at
    validation, rather than in the first training step.

    Args:
        model: the built model.
        inputs: a few examples as the model reads them (`Dataset.preprocess()` applied).
        num_classes: the data's number of classes.
        kind: the spec's model kind, named in messages.

    Raises:
        ModelError: the forward pass raises, or its output is not (batch, num_classes).

    Example:
        >>> import torch
        >>> check_logits(build_model("mlp", (4,), 3), torch.zeros(2, 4), 3, "mlp")
        >>> try:
        ...     check_logits(build_model("mlp", (4,), 3), torch.zeros(2, 4), 10, "mlp")
        ... except ModelError as error:
        ...     print(error)
        model 'mlp' gives logits of shape (2, 3) for a batch of 2 inputs; the data has 10 classes, so (2, 10) is expected
    """
    import torch

    batch = f"a batch of {len(inputs)} inputs"
    was_training = model.training
    try:
        with torch.no_grad():
            logits = model.eval()(inputs)
    except Exception as error:  # the user's forward: any error is a model that does not fit the data
        first_line = (str(error).strip().splitlines() or [""])[0][:300]
        shape = "x".join(str(size) for size in inputs.shape)
        raise ModelError(f"model {kind!r} fails on {batch} of the data ({shape} {inputs.dtype}): {type(error).__name__}: {first_line}") from None
    finally:
        model.train(was_training)
    if not isinstance(logits, torch.Tensor):
        raise ModelError(f"model {kind!r} returns a {type(logits).__name__} for {batch}, not a tensor of logits")
    expected = (len(inputs), num_classes)
    if tuple(logits.shape) != expected:
        raise ModelError(
            f"model {kind!r} gives logits of shape {tuple(logits.shape)} for {batch}; the data has {num_classes} "
            f"classes, so {expected} is expected"
        )


def _build_mlp(input_shape, num_classes, hidden):
    _check_widths("hidden", hidden)
    in_features = math.prod(input_shape)
    widths = [in_features, *hidden, num_classes]
    _check_fits("hidden", hidden, input_shape, num_classes, sum((a + 1) * b for a, b in zip(widths, widths[1:])))
    layers = [nn.Flatten()]
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
    height, width = input_shape[1] >> len(channels), input_shape[2] >> len(channels)  # each pool halves, rounding down
    if not height or not width:
        raise ModelError(
            f"model kind 'cnn': input_shape={tuple(input_shape)} is too small for {len(channels)} pooling blocks "
            f"(each halves the height and width)",
            key="model.channels",
        )
    flat_features = channels[-1] * height * width
    in_out = list(zip([input_shape[0], *channels], channels))
    parameters = sum(a * b * 9 + b for a, b in in_out) + (flat_features + 1) * num_classes
    _check_fits("channels", channels, input_shape, num_classes, parameters)
    layers = []
    for in_channels, out_channels in in_out:
        layers += [nn.Conv2d(in_channels, out_channels, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
    layers += [nn.Flatten(), nn.Linear(flat_features, num_classes)]
    return nn.Sequential(*layers)


def _build_from_factory(kind, input_shape, num_classes, options):
    module_name, _, factory_name = kind.partition(":")
    if not module_name or not factory_name:
        raise ModelError(f"model kind {kind!r} must look like 'package.module:factory'")
    try:
        module = importlib.import_module(module_name)
    except (Exception, SystemExit) as error:  # the user's module runs here: it may raise or even exit
        logger.info("importing %s failed:", module_name, exc_info=True)
        raise ModelError(f"model kind {kind!r}: cannot import {module_name!r}: {error!r}") from None
    if not hasattr(module, factory_name):
        raise ModelError(f"model kind {kind!r}: module {module_name!r} has no attribute {factory_name!r}")
    factory = getattr(module, factory_name)
    if not callable(factory):
        raise ModelError(f"model kind {kind!r}: {factory_name!r} is a {type(factory).__name__}, not callable")
    arguments = _accepted_arguments(kind, factory, {"input_shape": tuple(input_shape), "num_classes": num_classes}, options)
    try:
        model = factory(**arguments)
    except TypeError as error:
        raise ModelError(f"model kind {kind!r} rejected its arguments {sorted(arguments)}: {error}") from error
    except (Exception, SystemExit) as error:
        logger.info("factory %s failed:", kind, exc_info=True)
        raise ModelError(f"factory {kind} raised {type(error).__name__}: {error}") from None
    if not isinstance(model, nn.Module):
        raise ModelError(f"model kind {kind!r} returned a {type(model).__name__}, not a torch.nn.Module")
    logger.info("built model %s with arguments %s", kind, arguments)
    return model


def _accepted_arguments(kind, factory, given, options):
    # what we know (shape, classes) goes only where the factory takes it; the user's options all go,
    # and a parameter without a default that we cannot fill is named here rather than as a TypeError
    try:
        parameters = inspect.signature(factory).parameters
    except (TypeError, ValueError):  # builtins and some C extensions have no signature: pass everything
        return given | options
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    arguments = {name: value for name, value in given.items() if takes_any or name in parameters} | options
    missing = [
        name
        for name, p in parameters.items()
        if p.default is inspect.Parameter.empty
        and p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        and name not in arguments
    ]
    if missing:
        raise ModelError(
            f"model kind {kind!r} needs argument(s) {missing} that accelsweep cannot give: "
            f"it passes input_shape and num_classes; add the others under model.options"
        )
    return arguments


def _check_widths(field, widths):
    if any(width < 1 for width in widths):
        raise ModelError(f"model {field}={list(widths)!r} must all be at least 1", key=f"model.{field}")


def _check_fits(field, widths, input_shape, num_classes, parameters):
    problem = too_large(parameters * TRAINING_BYTES_PER_PARAMETER)
    if problem:
        raise ModelError(
            f"{list(widths)} on inputs {tuple(input_shape)} with {num_classes} classes makes {parameters:.3g} "
            f"parameters: training {problem}",
            key=f"model.{field}",
        )
