"""The pre-flight: load a spec's data and build its model once, so that a bad file, label or model
factory fails before Ray starts.
"""

import dataclasses
import logging

from orchestrator.config.schema import Spec, SpecError
from orchestrator.config.space_rules import domain_of
from orchestrator.config.streamed_source import SourceError, StreamedSource

logger = logging.getLogger(__name__)


def load_data(spec: Spec, spec_path: str):
    """Load the spec's data set, build its baseline model and run it on one batch, so that a bad
    file, label or model factory (one built for other input widths or another number of classes)
    fails before Ray starts.

    Args:
        spec: the validated spec.
        spec_path: the spec's file, named in messages.

    Returns:
        The loaded data set (a trainers.data.Dataset), or for a streaming source its
        `orchestrator.config.streamed_source.StreamedSource`, checked from file metadata and a few rows
        (`orchestrator.sweep.streaming.open_streamed` streams it once Ray runs).

    Raises:
        SpecError: the data or the model cannot be loaded, a swept technique value cannot apply
            to the model (`trainers.techniques.unsupported`), or `train.teacher_path` is not a
            trained checkpoint of this model; the message names the spec file, the key and the cause.

    Example:
        >>> data = load_data(load_spec("search_spaces/quickstart.yaml"), "quickstart.yaml")  # doctest: +SKIP
    """
    data = _streaming_source(spec, spec_path) if spec.data.streams else _loaded(spec, spec_path)
    from trainers.models import ModelError, build_model, check_logits

    try:
        model = build_model(
            spec.model.kind,
            data.input_shape,
            data.num_classes,
            hidden=spec.model.hidden,
            channels=spec.model.channels,
            options=spec.model.options,
        )
        check_logits(model, _two_examples(data), data.num_classes, spec.model.kind)
    except ModelError as error:
        raise SpecError(f"{spec_path}: {error.key}: {error}") from None
    _check_techniques_apply(spec, spec_path, model)
    if spec.train.teacher_path:
        _check_teacher(spec.train.teacher_path, spec_path, model)
    return data


def load_in_memory(spec: Spec, spec_path: str, command: str):
    """`load_data` for the commands that need the data set in memory, which a streamed source is not
    (`accelsweep bench`, `report --register`): a streaming source is refused with the reason.

    Args:
        spec: the validated spec.
        spec_path: the spec's file, named in messages.
        command: the command that needs the data, named in the message.

    Raises:
        SpecError: as `load_data`, or the source streams.

    Example:
        >>> data = load_in_memory(load_spec("search_spaces/quickstart.yaml"), "quickstart.yaml", "accelsweep bench")  # doctest: +SKIP
    """
    if spec.data.streams:
        raise SpecError(f"{spec_path}: data.source={spec.data.source!r} streams: {command} does not stream data yet")
    return load_data(spec, spec_path)


def inspect_source(data: dict, seed: int) -> StreamedSource:
    """Check a streaming source from its metadata and first rows, without reading the data set.

    Args:
        data: the spec's `data` section as a dict (source, path or train_path/val_path/test_path,
            label_column, num_classes, val_fraction, test_fraction).
        seed: the split's seed (`train.seed`).

    Returns:
        The StreamedSource.

    Raises:
        SourceError: no file matches, a file cannot be read as its format, files differ in their
            columns, the label column is missing or not integer, a feature is not numeric, or a
            label is negative or past `data.num_classes`; the message names the file and the key.

    Example:
        >>> inspect_source({"source": "parquet", "path": "no/such/dir"}, seed=0)
        Traceback (most recent call last):
        ...
        orchestrator.config.streamed_source.SourceError: data.path 'no/such/dir' matches no parquet file
    """
    from orchestrator.config import csv_files, image_folders, parquet
    from orchestrator.config.streamed_source import split_keys

    inspect = {"parquet": parquet.inspect_parquet, "csv": csv_files.inspect_csv_files, "images": image_folders.inspect_image_folders}
    source = dataclasses.replace(inspect[data["source"]](data, split_keys(data), seed), classes_from_spec=bool(data.get("num_classes")))
    size = f"~{source.size_bytes / 1e9:.3g} GB" if source.size_bytes >= 1e8 else f"~{source.size_bytes / 1e6:.3g} MB"
    logger.info("%s: %s rows%s, %s as read, streamed", source.name, source.n_rows, " (estimated)" * source.counted_at_start, size)
    return source


def _loaded(spec, spec_path):
    from trainers.data import DataError, load_dataset  # torch and sklearn: only when data is needed

    fields = spec.data.model_dump(exclude={"source", "path", "train_path", "val_path", "test_path", "image_size"})
    try:
        return load_dataset(spec.data.source, spec.data.path, seed=spec.train.seed, **fields)
    except DataError as error:
        raise SpecError(f"{spec_path}: data: {error}") from None
    except MemoryError:  # past the estimate: another process took the memory meanwhile
        raise SpecError(f"{spec_path}: data: out of memory loading {spec.data.path or spec.data.source!r}") from None


def _two_examples(data):
    # a streamed source is known from its metadata: its examples' shape is all the model check needs
    import torch

    if isinstance(data, StreamedSource):
        return torch.zeros((2, *data.input_shape))
    return data.preprocess()(data.x_train[:2])


def _streaming_source(spec, spec_path):
    try:
        return inspect_source(spec.data.model_dump(), seed=spec.train.seed)
    except SourceError as error:
        raise SpecError(f"{spec_path}: data: {error}") from None


def _check_techniques_apply(spec, spec_path, model):
    from trainers.techniques import TECHNIQUES, off_value, techniques_from_choices, unsupported

    for key, entry in spec.space.items():
        if key not in TECHNIQUES:
            continue
        for value in dict.fromkeys(domain_of(entry)[1]):  # a range's bounds stand for it
            if value == off_value(key):
                continue
            reasons = unsupported(model, techniques_from_choices({key: value}))
            if reasons:
                raise SpecError(f"{spec_path}: space.{key}: {'; '.join(reasons)}, got {value!r}")


def _check_teacher(path, spec_path, model):
    import torch

    from trainers.checkpoints import CheckpointError
    from trainers.techniques.distill import load_teacher

    try:
        load_teacher(model, path, torch.device("cpu"))
    except (CheckpointError, ValueError) as error:
        raise SpecError(f"{spec_path}: train.teacher_path: {error}") from None
