"""orchestrator.config (schema, safe YAML, space rules, loading): every rule of a sweep spec, and that each message names the file, the key
path and the value."""

import os
from pathlib import Path

import pytest

from orchestrator.config.loading import load_spec, parse_spec
from orchestrator.config.schema import Spec, SpecError

SOURCE = "sweep.yaml"
SEARCH_SPACES = Path(__file__).resolve().parents[3] / "search_spaces"


def spec_error(raw) -> str:
    with pytest.raises(SpecError) as caught:
        parse_spec(raw, source=SOURCE)
    message = str(caught.value)
    assert all(line.startswith(f"{SOURCE}: ") for line in message.splitlines()), message
    return message


def test_quickstart_parses(quickstart):
    spec = parse_spec(quickstart, source=SOURCE)
    assert spec.name == "quickstart"
    assert spec.search.num_samples == 8
    assert spec.space["rank"] == {"choice": [None, 8, 16, 32]}


@pytest.mark.parametrize("path", sorted(SEARCH_SPACES.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_search_space_loads(path):
    assert isinstance(load_spec(path), Spec)


def test_unknown_top_level_key_suggests_the_close_one(quickstart):
    quickstart["nmae"] = "x"
    message = spec_error(quickstart)
    assert "nmae: unknown key 'nmae' (did you mean 'name'?)" in message


def test_unknown_nested_key_names_its_path_and_suggests(quickstart):
    quickstart["data"]["sorce"] = "digits"
    message = spec_error(quickstart)
    assert "data.sorce: unknown key 'sorce' (did you mean 'source'?)" in message
    assert "valid keys: source, path" in message


def test_unknown_space_key(quickstart):
    quickstart["space"]["rnak"] = 4
    message = spec_error(quickstart)
    assert "space.rnak: unknown key 'rnak' (did you mean 'rank'?)" in message


def test_unknown_sampling_form(quickstart):
    quickstart["space"]["rank"] = {"chioce": [4, 8]}
    message = spec_error(quickstart)
    assert "space.rank: unknown sampling form 'chioce' (did you mean 'choice'?)" in message


def test_two_sampling_forms_in_one_entry(quickstart):
    quickstart["space"]["rank"] = {"choice": [4], "grid": [8]}
    assert "space.rank: give exactly one sampling form" in spec_error(quickstart)


def test_wrong_type_names_key_and_value(quickstart):
    quickstart["train"]["epochs"] = "five"
    message = spec_error(quickstart)
    assert "train.epochs:" in message
    assert "'five'" in message


@pytest.mark.parametrize("rank", [0, -1, 1.5, True])
def test_rank_rejects_non_ranks(quickstart, rank):
    quickstart["space"]["rank"] = rank
    message = spec_error(quickstart)
    assert "space.rank:" in message
    assert f"got {rank!r}" in message


@pytest.mark.parametrize("rank", [4, 0.5, 1.0, None])
def test_rank_accepts_ints_fractions_and_off(quickstart, rank):
    quickstart["space"]["rank"] = rank
    assert parse_spec(quickstart).space["rank"] == rank


def test_a_bad_choice_names_its_index(quickstart):
    quickstart["space"]["rank"] = {"choice": [None, 4, 0]}
    assert "space.rank.choice[2]: LowRank.rank must be" in spec_error(quickstart)


@pytest.mark.parametrize("bits", [2, 4, 8, 16, 32])
def test_quant_bits_accepts_supported_widths(quickstart, bits):
    quickstart["space"]["quant_bits"] = bits
    assert parse_spec(quickstart).space["quant_bits"] == bits


def test_quant_bits_rejects_five(quickstart):
    quickstart["space"]["quant_bits"] = 5
    message = spec_error(quickstart)
    assert "space.quant_bits:" in message
    assert "got 5" in message


@pytest.mark.parametrize("dropout", [-0.1, 1.0, 1.5])
def test_dropout_must_be_in_zero_one(quickstart, dropout):
    quickstart["space"]["dropout"] = dropout
    message = spec_error(quickstart)
    assert "space.dropout:" in message
    assert f"got {dropout!r}" in message


@pytest.mark.parametrize("dropout", [0.0, 0.5, 0.99])
def test_dropout_accepts_zero_to_below_one(quickstart, dropout):
    quickstart["space"]["dropout"] = dropout
    assert parse_spec(quickstart).space["dropout"] == dropout


@pytest.mark.parametrize("key", ["weight_decay", "l1"])
def test_penalties_must_be_non_negative(quickstart, key):
    quickstart["space"][key] = -1e-3
    message = spec_error(quickstart)
    assert f"space.{key}:" in message
    assert "got -0.001" in message
    quickstart["space"][key] = 0.0
    assert parse_spec(quickstart).space[key] == 0.0


def test_loguniform_needs_positive_low(quickstart):
    quickstart["space"]["weight_decay"] = {"loguniform": [0, 1e-2]}
    assert "space.weight_decay.loguniform: loguniform needs low > 0, got 0" in spec_error(quickstart)


@pytest.mark.parametrize("form", ["uniform", "loguniform"])
def test_ranges_need_low_below_high(quickstart, form):
    quickstart["space"]["dropout"] = {form: [0.3, 0.1]}
    assert f"space.dropout.{form}: low must be below high, got [0.3, 0.1]" in spec_error(quickstart)


def test_range_needs_two_numbers(quickstart):
    quickstart["space"]["dropout"] = {"uniform": [0.1, "x"]}
    assert "space.dropout.uniform: expected [low, high] numbers" in spec_error(quickstart)


def test_randint_rejects_a_range_with_invalid_values(quickstart):
    quickstart["space"]["quant_bits"] = {"randint": [2, 8]}
    message = spec_error(quickstart)
    assert "space.quant_bits.randint: the range admits 3, which is invalid" in message


def test_randint_accepts_a_range_of_valid_values(quickstart):
    quickstart["space"]["rank"] = {"randint": [2, 8]}
    assert parse_spec(quickstart).space["rank"] == {"randint": [2, 8]}


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("schedule", "linear", "train.schedule:"),
        ("warmup_epochs", -1, "train.warmup_epochs:"),
        ("warmup_epochs", 3, "train.warmup_epochs: must be less than train.epochs (3), got 3"),
        ("clip_norm", 0, "train.clip_norm:"),
        ("target_accuracy", 0, "train.target_accuracy:"),
        ("target_accuracy", 1.5, "train.target_accuracy:"),
    ],
)
def test_bad_training_settings_name_their_key(quickstart, key, value, message):
    quickstart["train"] |= {"epochs": 3, key: value}
    assert message in spec_error(quickstart)


def test_training_settings_default_to_the_old_trainer_and_accept_their_values(quickstart):
    train = parse_spec(quickstart).train
    assert (train.schedule, train.warmup_epochs, train.clip_norm, train.target_accuracy) == ("constant", 0, None, None)
    quickstart["train"] |= {"epochs": 3, "schedule": "onecycle", "warmup_epochs": 2, "clip_norm": 1.0, "target_accuracy": 1}
    train = parse_spec(quickstart).train
    assert (train.schedule, train.warmup_epochs, train.clip_norm, train.target_accuracy) == ("onecycle", 2, 1.0, 1)


def test_start_from_defaults_to_scratch_and_a_bad_value_names_its_key(quickstart):
    assert parse_spec(quickstart).train.start_from == "scratch"
    quickstart["train"]["start_from"] = "trained"
    assert "train.start_from: Input should be 'scratch' or 'baseline', got 'trained'" in spec_error(quickstart)
    quickstart["train"]["start_from"] = "baseline"
    assert parse_spec(quickstart).train.start_from == "baseline"


def test_starting_from_the_baseline_refuses_a_technique_that_changes_the_models_inputs(quickstart):
    quickstart["train"]["start_from"] = "baseline"
    quickstart["space"]["feature_keep"] = {"choice": [1.0, 0.5]}
    assert (
        f"{SOURCE}: train.start_from: baseline cannot start the trials of space.feature_keep=0.5 from the baseline's "
        "weights: feature_keep changes the model's inputs, so the baseline's first layer does not fit them; "
        "sweep feature_keep in a spec with start_from: scratch"
    ) in spec_error(quickstart).splitlines()
    quickstart["space"]["feature_keep"] = 1.0  # its off value: every trial keeps the baseline's inputs
    assert parse_spec(quickstart).space["feature_keep"] == 1.0
    quickstart["train"]["start_from"], quickstart["space"]["feature_keep"] = "scratch", 0.5
    assert parse_spec(quickstart).space["feature_keep"] == 0.5


def test_several_metrics_need_optuna(quickstart):
    quickstart["search"] |= {"metric": ["val_accuracy", "latency_ms"], "mode": ["max", "min"]}
    message = spec_error(quickstart)
    assert "search:" in message
    assert "need algorithm: optuna" in message
    quickstart["search"]["algorithm"] = "optuna"
    assert parse_spec(quickstart).search.metrics == ["val_accuracy", "latency_ms"]


def test_one_mode_per_metric(quickstart):
    quickstart["search"] |= {"algorithm": "optuna", "metric": ["val_accuracy", "latency_ms"], "mode": "max"}
    assert "2 metrics but 1 modes" in spec_error(quickstart)


def test_asha_refuses_several_metrics(quickstart):
    quickstart["search"] |= {
        "algorithm": "optuna",
        "scheduler": "asha",
        "metric": ["val_accuracy", "latency_ms"],
        "mode": ["max", "min"],
    }
    assert "scheduler asha stops trials on one metric" in spec_error(quickstart)


def test_asha_needs_a_per_epoch_metric(quickstart):
    quickstart["search"] |= {"scheduler": "asha", "metric": "latency_ms", "mode": "min"}
    assert "scheduler asha needs a per-epoch metric" in spec_error(quickstart)
    quickstart["search"]["metric"] = "val_loss"
    assert parse_spec(quickstart).search.scheduler == "asha"


@pytest.mark.parametrize(
    "search, message",
    [
        ({"grace_period": 4, "max_t": 3}, "search.grace_period: 4 is more than search.max_t (3)"),
        ({"grace_period": 9}, "search.grace_period: 9 is more than train.epochs (5), ASHA's max_t when search.max_t is unset"),
    ],
)
def test_asha_grace_period_within_max_t(quickstart, search, message):
    quickstart["train"]["epochs"] = 5
    quickstart["search"] |= {"scheduler": "asha", "metric": "val_accuracy", "mode": "max"} | search
    assert spec_error(quickstart) == f"{SOURCE}: {message}: ASHA lets every trial train grace_period epochs"
    quickstart["search"]["grace_period"] = 3  # equal to max_t is what Ray accepts
    quickstart["search"]["max_t"] = 3
    assert parse_spec(quickstart).search.grace_period == 3


def test_grid_algorithm_refuses_sampled_ranges(quickstart):
    quickstart["search"]["algorithm"] = "grid"
    quickstart["space"]["dropout"] = {"uniform": [0.0, 0.5]}
    message = spec_error(quickstart)
    assert "space.dropout: algorithm grid needs fixed values or lists (choice/grid), got uniform" in message


def test_optuna_refuses_grid(quickstart):
    quickstart["search"]["algorithm"] = "optuna"
    quickstart["space"]["rank"] = {"grid": [4, 8]}
    assert "space.rank: algorithm optuna samples, it does not enumerate" in spec_error(quickstart)


def test_workers_cannot_be_uniform(quickstart):
    quickstart["space"]["workers"] = {"uniform": [1, 4]}
    assert "space.workers.uniform: workers are counted" in spec_error(quickstart)


@pytest.mark.parametrize("workers", [0, 1.5, "2"])
def test_workers_are_positive_integers(quickstart, workers):
    quickstart["space"]["workers"] = workers
    assert f"space.workers: workers must be an integer >= 1, got {workers!r}" in spec_error(quickstart)


def test_unknown_metric_suggests_the_close_one(quickstart):
    quickstart["search"]["metric"] = "val_acuracy"
    message = spec_error(quickstart)
    assert "search.metric: unknown metric 'val_acuracy' (did you mean 'val_accuracy'?)" in message


def test_unknown_data_source_suggests_the_close_one(quickstart):
    quickstart["data"]["source"] = "digit"
    assert "data.source: unknown source 'digit' (did you mean 'digits'?)" in spec_error(quickstart)


@pytest.mark.parametrize("key", ["name", "data"])
def test_required_keys(quickstart, key):
    del quickstart[key]
    assert f"{key}: missing (required)" in spec_error(quickstart)


def test_a_misspelt_required_key_is_one_problem_not_two(quickstart):
    quickstart["data"] = {"sorce": "digits"}
    quickstart["nme"] = quickstart.pop("name")
    lines = spec_error(quickstart).splitlines()
    assert sorted(line.split(": ")[1] for line in lines) == ["data.sorce", "nme"], lines
    assert "(did you mean 'source'?)" in lines[0]


def test_every_problem_is_reported_at_once(quickstart):
    quickstart["train"]["epochs"] = 0
    quickstart["data"]["sorce"] = "digits"
    message = spec_error(quickstart)
    assert "train.epochs:" in message
    assert "data.sorce:" in message
    assert len(message.splitlines()) == 2


def test_space_values_are_checked_once_the_rest_is_valid(quickstart):
    # checking space values loads torch; a schema mistake is answered without it
    quickstart["train"]["epochs"] = 0
    quickstart["space"]["quant_bits"] = 5
    assert "space.quant_bits" not in spec_error(quickstart)
    quickstart["train"]["epochs"] = 1
    assert "space.quant_bits: " in spec_error(quickstart)


@pytest.mark.parametrize("raw", [["a", "b"], "just text", None, 3])
def test_top_level_must_be_a_mapping(raw):
    message = spec_error(raw)
    assert "a spec is a mapping of keys" in message
    assert repr(raw) in message


def test_non_string_space_key_is_a_spec_error(quickstart):
    quickstart["space"][1] = 2
    assert "space.1.[key]: Input should be a valid string, got 1" in spec_error(quickstart)


def test_load_spec_names_a_missing_file(tmp_path):
    path = tmp_path / "nope.yaml"
    with pytest.raises(SpecError, match="cannot read the spec") as caught:
        load_spec(path)
    assert str(caught.value).startswith(f"{path}: ")


def test_load_spec_names_a_file_with_bad_yaml(write_spec):
    path = write_spec("name: demo\ndata: {source: digits\n", "broken.yaml")
    with pytest.raises(SpecError, match="not valid YAML") as caught:
        load_spec(path)
    assert str(caught.value).startswith(f"{path}: ")


def test_load_spec_names_the_file_in_every_problem(write_spec, quickstart):
    quickstart["train"]["epochs"] = "five"
    path = write_spec(quickstart, "mine.yaml")
    with pytest.raises(SpecError) as caught:
        load_spec(path)
    assert str(caught.value).startswith(f"{path}: train.epochs:")


def test_load_spec_rejects_a_list_file(write_spec):
    path = write_spec("- name\n- data\n", "list.yaml")
    with pytest.raises(SpecError, match="a spec is a mapping") as caught:
        load_spec(Path(path))
    assert str(path) in str(caught.value)


@pytest.mark.parametrize(
    ("section", "key", "value"),
    [
        ("train", "lr", float("inf")),
        ("train", "lr", float("nan")),
        ("resources", "cpus_per_worker", float("inf")),
        ("data", "val_fraction", float("nan")),
    ],
)
def test_non_finite_numbers_are_refused(quickstart, section, key, value):
    quickstart[section][key] = value
    assert f"{section}.{key}: Input should be a finite number, got {value}" in spec_error(quickstart)


@pytest.mark.parametrize("value", [float("inf"), {"choice": [0.0, float("nan")]}, {"uniform": [0.0, float("inf")]}])
def test_non_finite_space_values_are_refused(quickstart, value):
    quickstart["space"]["weight_decay"] = value
    assert "space.weight_decay" in spec_error(quickstart)


def test_a_name_too_long_for_file_names_is_refused(quickstart):
    quickstart["name"] = "a" * 10_000
    message = spec_error(quickstart)
    assert "name: String should have at most 100 characters" in message
    assert len(message) < 300


def test_a_long_value_is_quoted_cut(quickstart):
    quickstart["data"]["source"] = "x" * 1_000_000
    message = spec_error(quickstart)
    assert "data.source: unknown source 'xxxx" in message and "..." in message
    assert len(message) < 300


def test_values_nested_too_deep_are_refused(quickstart):
    deep = []
    for _ in range(3000):
        deep = [deep]
    quickstart["model"]["options"] = {"x": deep}
    assert "model.options.x[0][0]" in spec_error(quickstart)


def test_duplicate_yaml_keys_name_the_key_and_both_lines(write_spec):
    path = write_spec("name: demo\ndata: {source: digits}\ntrain:\n  epochs: 1\n  epochs: 100000\n")
    with pytest.raises(SpecError, match=r"not valid YAML: line 5, column 3: duplicate key 'epochs' \(first on line 4\)"):
        load_spec(path)


def test_yaml_merge_keys_are_not_duplicates(write_spec):
    text = "name: demo\ndata: {source: digits}\ntrain:\n  <<: {epochs: 1, lr: 0.1}\n  epochs: 2\n"
    spec = load_spec(write_spec(text))
    assert (spec.train.epochs, spec.train.lr) == (2, 0.1)


def test_a_yaml_alias_bomb_is_refused_without_expanding_it(write_spec):
    lines = ["name: demo", "data: {source: digits}", "a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]
    path = write_spec("\n".join(lines) + "\n")
    with pytest.raises(SpecError, match="aliases expand to more than 100,000 values") as caught:
        load_spec(path)
    assert len(str(caught.value)) < 300


def test_a_self_referencing_alias_is_refused(write_spec):
    path = write_spec("name: demo\ndata: {source: digits}\nmodel: {options: &o {x: *o}}\n")
    with pytest.raises(SpecError, match="aliases expand to more than"):
        load_spec(path)


def test_yaml_nested_thousands_deep_is_refused(write_spec):
    path = write_spec("name: demo\ndata: {source: digits}\nmodel: {options: {x: " + "[" * 3000 + "]" * 3000 + "}}\n")
    with pytest.raises(SpecError, match="line 3, column .*: nested more than 32 levels deep"):
        load_spec(path)


def test_a_spec_that_is_not_a_regular_file_is_refused_unopened(tmp_path):
    fifo = tmp_path / "spec.fifo"
    os.mkfifo(fifo)
    for path in (fifo, Path("/dev/zero"), tmp_path):
        with pytest.raises(SpecError, match="is not a regular file"):
            load_spec(path)


def test_a_spec_larger_than_a_megabyte_is_refused(write_spec):
    path = write_spec("name: demo\n#" + "x" * 1_000_001 + "\n")
    with pytest.raises(SpecError, match="more than a spec's limit of 1,000,000"):
        load_spec(path)


def test_a_spec_that_is_not_utf8_is_refused(tmp_path):
    path = tmp_path / "binary.yaml"
    path.write_bytes(b"name: demo\xff\n")
    with pytest.raises(SpecError, match="not UTF-8 text"):
        load_spec(path)


def test_a_figure_worked_out_against_the_baseline_cannot_steer_the_search(quickstart):
    quickstart["search"] = {"algorithm": "optuna", "metric": ["test_accuracy", "train_speedup"], "mode": ["max", "max"]}
    message = spec_error(quickstart)
    assert "search.metric: 'train_speedup' is worked out by the report after the sweep, against the baseline" in message
    assert "accelsweep report SWEEP --objectives test_accuracy,train_speedup" in message


def test_searching_by_time_to_target_needs_a_stated_target(quickstart):
    quickstart["search"] = {"algorithm": "optuna", "metric": ["test_accuracy", "time_to_target_s"], "mode": ["max", "min"]}
    assert "search.metric: time_to_target_s needs train.target_accuracy" in spec_error(quickstart)
    quickstart["train"]["target_accuracy"] = 0.9
    assert parse_spec(quickstart, source=SOURCE).search.metrics == ["test_accuracy", "time_to_target_s"]


def test_communication_knobs_are_space_keys_checked_like_techniques(quickstart):
    quickstart["space"] = {"workers": 2, "sync_every": {"choice": [1, 8]}, "powersgd_rank": 0}
    assert "space.powersgd_rank: GradCompression.powersgd_rank must be a number >= 1, got 0" in spec_error(quickstart)
    quickstart["space"] = {"workers": 2, "grad_compression": {"choice": ["none", "powersgd"]}, "powersgd_rank": {"choice": [2, 4]}}
    assert parse_spec(quickstart).space["powersgd_rank"] == {"choice": [2, 4]}


def test_compression_and_averaging_together_are_refused_with_the_reason(quickstart):
    quickstart["space"] = {"workers": 2, "sync_every": {"choice": [1, 8]}, "grad_compression": {"choice": ["none", "fp16"]}}
    assert "space.grad_compression and space.sync_every: gradient compression compresses DDP's per-step" in spec_error(quickstart)


@pytest.mark.parametrize("key, value", [("sync_every", 4), ("grad_compression", "powersgd")])
def test_communication_knobs_need_a_multi_worker_trial(quickstart, key, value):
    quickstart["space"] = {key: value}
    assert f"space.{key}: needs trials with workers >= 2" in spec_error(quickstart)
    quickstart["space"] = {key: value, "workers": {"choice": [1, 2]}}  # the 1-worker trials say it is inactive
    assert parse_spec(quickstart).space[key] == value


def test_powersgd_rank_needs_powersgd(quickstart):
    quickstart["space"] = {"workers": 2, "grad_compression": "fp16", "powersgd_rank": 4}
    assert "space.powersgd_rank: sets PowerSGD's rank, but space.grad_compression never takes powersgd" in spec_error(quickstart)
