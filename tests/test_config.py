"""The shared TOML schema of ``dysonsgd sweep`` and ``dysonsgd validate`` (dysonsgd.runs.config)."""

from __future__ import annotations

import math

import pytest

from dysonsgd.model.config import TeacherStudentConfig
from dysonsgd.runs.config import ConfigError, SweepConfig, load_config, parse_config

EXAMPLE = """
name = "quick"
description = "figure-6 points"

[grid]
temperature = [0.03125, 0.25, 1.0, 4.0]
inv_sigma_w = [8.0, 0.00390625]
seeds = 10

[training]
epochs = 100
snapshots = 21
seed = 0
activation = "tanh"
widths = [3, 32, 16, 1]
n_data = 4000
batch_size = 4
data_order = "fixed"
divergence_threshold = 100.0
dtype = "float64"

[expect]
phases = [{ temperature = 0.03125, inv_sigma_w = 8.0, phase = "ordered" }]

[validate]
start_snapshot = 1
"""


def _write(tmp_path, text: str, name: str = "quick.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def _base() -> dict:
    return {"grid": {"temperature": [0.5, 2.0], "sigma_w": [0.125, 1.0], "seeds": 3},
            "training": {"epochs": 4, "n_data": 40}}


def test_example_schema_parses_to_the_papers_axes(tmp_path):
    cfg = load_config(_write(tmp_path, EXAMPLE))
    assert cfg.name == "quick" and cfg.description == "figure-6 points"
    assert cfg.temperature == (0.03125, 0.25, 1.0, 4.0)
    assert cfg.sigma_w == (0.125, 256.0)  # 1 / inv_sigma_w, exact for powers of two
    assert cfg.seeds == 10 and cfg.epochs == 100 and cfg.snapshots == 21 and cfg.seed == 0
    assert cfg.dtype == "float64"
    assert cfg.model == TeacherStudentConfig()
    assert cfg.expect["phases"][0]["phase"] == "ordered"
    assert cfg.validate == {"start_snapshot": 1}
    assert cfg.source.name == "quick.toml"
    assert cfg.cells() == [(i, j) for i in range(4) for j in range(2)]
    # 4 x 2 cells x 10 seeds x 100 epochs x 1000 steps
    assert cfg.model_steps() == 8 * 10 * 100 * 1000


def test_defaults_are_the_training_defaults():
    cfg = parse_config({"grid": {"temperature": [1], "sigma_w": [1], "seeds": 1},
                        "training": {"epochs": 100}})
    assert cfg.model == TeacherStudentConfig()
    assert (cfg.snapshots, cfg.seed, cfg.dtype) == (21, 0, "float32")
    assert cfg.name == "sweep" and cfg.description == ""
    assert isinstance(cfg.temperature[0], float)


def test_to_dict_round_trips_and_keeps_the_axis(tmp_path):
    cfg = load_config(_write(tmp_path, EXAMPLE))
    back = parse_config(cfg.to_dict(), source=cfg.source)
    assert back == cfg and back.expect == cfg.expect and back.validate == cfg.validate
    assert "inv_sigma_w" in cfg.to_dict()["grid"]
    other = parse_config(_base())
    assert "sigma_w" in other.to_dict()["grid"] and parse_config(other.to_dict()) == other


def test_fingerprint_ignores_labels_and_expectations_but_not_numbers():
    base = parse_config(_base())
    relabelled = dict(_base(), name="x", description="y", expect={"a": 1}, validate={"b": 2})
    assert parse_config(relabelled).fingerprint() == base.fingerprint()
    inv = _base()
    inv["grid"] = {"temperature": [0.5, 2.0], "inv_sigma_w": [8.0, 1.0], "seeds": 3}
    assert parse_config(inv).fingerprint() == base.fingerprint()
    changes = [("grid", "temperature", [0.5, 4.0]), ("grid", "sigma_w", [0.125, 2.0]),
               ("grid", "seeds", 4), ("training", "epochs", 5), ("training", "seed", 1),
               ("training", "snapshots", 3), ("training", "dtype", "float64"),
               ("training", "activation", "relu"), ("training", "n_data", 80),
               ("training", "batch_size", 2), ("training", "data_order", "shuffled"),
               ("training", "divergence_threshold", 50.0),
               ("training", "widths", [3, 8, 4, 1])]
    prints = {base.fingerprint()}
    for table, key, value in changes:
        m = _base()
        m[table] = dict(m[table], **{key: value})
        prints.add(parse_config(m).fingerprint())
    assert len(prints) == len(changes) + 1
    assert len(base.fingerprint()) == 16


def test_error_message_format():
    err = ConfigError.at("quick.toml", "grid", "temprature", "unknown key")
    assert isinstance(err, ValueError)
    assert str(err) == "quick.toml: [grid] temprature: unknown key"
    assert (err.file, err.section, err.key, err.reason) == ("quick.toml", "grid", "temprature",
                                                            "unknown key")


def test_unknown_grid_key_names_file_table_key_and_allowed(tmp_path):
    path = _write(tmp_path, EXAMPLE.replace("temperature =", "temprature ="))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == ("quick.toml: [grid] temprature: unknown key (allowed: "
                               "temperature, inv_sigma_w, sigma_w, seeds, batch_size)")


def _mutate(table, key, value):
    m = _base()
    if table is None:
        m[key] = value
    elif value is _DROP:
        m[table] = {k: v for k, v in m[table].items() if k != key}
    else:
        m[table] = dict(m[table], **{key: value})
    return m


_DROP = object()

BAD = [
    # (table, key, value, section in message, key in message, words of the reason)
    (None, "grdi", {}, "top level", "grdi", "unknown key"),
    (None, "name", 3, "top level", "name", "string"),
    (None, "grid", [1], "top level", "grid", "table"),
    ("training", "epoch", 3, "training", "epoch", "unknown key"),
    ("grid", "temperature", [], "grid", "temperature", "empty grid"),
    ("grid", "temperature", "1.0", "grid", "temperature", "array"),
    ("grid", "temperature", [0.5, -1.0], "grid", "temperature", "> 0"),
    ("grid", "temperature", [0.5, math.inf], "grid", "temperature", "finite"),
    ("grid", "temperature", [0.5, True], "grid", "temperature", "number"),
    ("grid", "temperature", [0.5, 0.5], "grid", "temperature", "duplicate"),
    ("grid", "temperature", _DROP, "grid", "temperature", "missing"),
    ("grid", "sigma_w", [0.0], "grid", "sigma_w", "> 0"),
    ("grid", "inv_sigma_w", [1.0], "grid", "sigma_w", "both"),
    ("grid", "sigma_w", _DROP, "grid", "sigma_w", "neither"),
    ("grid", "seeds", 10.0, "grid", "seeds", "integer"),
    ("grid", "seeds", 0, "grid", "seeds", ">= 1"),
    ("grid", "seeds", _DROP, "grid", "seeds", "missing"),
    ("training", "epochs", _DROP, "training", "epochs", "missing"),
    ("training", "epochs", True, "training", "epochs", "integer"),
    ("training", "snapshots", 1, "training", "snapshots", ">= 2"),
    ("training", "seed", -1, "training", "seed", ">= 0"),
    ("training", "dtype", "float16", "training", "dtype", "float32, float64"),
    ("training", "activation", "swish", "training", "activation", "tanh"),
    ("training", "data_order", "random", "training", "data_order", "shuffled"),
    ("training", "widths", [3, 32], "training", "widths", "at least 3 layer sizes"),
    ("training", "widths", [3, 32, 0, 1], "training", "widths[2]", ">= 1"),
    ("training", "batch_size", 3, "training", "batch_size", "divide n_data"),
    ("training", "divergence_threshold", -1.0, "training", "divergence_threshold", "> 0"),
    ("training", "divergence_threshold", math.nan, "training", "divergence_threshold", "> 0"),
]


@pytest.mark.parametrize(("table", "key", "value", "section", "named", "reason"), BAD,
                         ids=[f"{b[0]}.{b[1]}-{b[5]}" for b in BAD])
def test_bad_input_is_refused_with_key_and_reason(table, key, value, section, named, reason):
    with pytest.raises(ConfigError) as info:
        parse_config(_mutate(table, key, value), source="bad.toml")
    err = info.value
    assert (err.file, err.section, err.key) == ("bad.toml", section, named)
    assert reason in err.reason
    assert str(err).startswith(f"bad.toml: [{section}] {named}: ")


def test_infinite_threshold_is_allowed():
    cfg = parse_config(_mutate("training", "divergence_threshold", math.inf))
    assert cfg.model.divergence_threshold == math.inf


def test_missing_tables_file_and_bad_toml(tmp_path):
    with pytest.raises(ConfigError, match=r"\[top level\] grid: missing"):
        parse_config({"training": {"epochs": 1}})
    with pytest.raises(ConfigError, match=r"\[top level\] training: missing"):
        parse_config({"grid": _base()["grid"]})
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(_write(tmp_path, "[grid\ntemperature = 1"))


def test_expect_and_validate_are_free_form_but_must_be_tables():
    cfg = parse_config(dict(_base(), expect={"anything": [1, "x"]}, validate={"z": {"y": 1}}))
    assert cfg.expect == {"anything": [1, "x"]}
    with pytest.raises(ConfigError, match=r"\[top level\] expect: must be a table"):
        parse_config(dict(_base(), expect=3))


def test_sweep_config_is_frozen_and_hashable():
    cfg = parse_config(_base())
    assert isinstance(cfg, SweepConfig)
    with pytest.raises(AttributeError):
        cfg.seeds = 4  # type: ignore[misc]
    assert hash(cfg) == hash(parse_config(_base()))


def test_bundled_configs_are_found_by_name_and_path(tmp_path):
    from dysonsgd.runs.config import bundled_config, bundled_configs, find_config

    assert {"quick", "paper-small", "paper"} <= set(bundled_configs())
    assert load_config(bundled_config("quick")).name == "quick"
    assert find_config("paper-small.toml").name == "paper-small.toml"
    path = _write(tmp_path, EXAMPLE)
    assert find_config(path) == path
    with pytest.raises(ConfigError, match="nor a bundled config"):
        find_config(tmp_path / "quick")
    with pytest.raises(ConfigError, match="no bundled config"):
        bundled_config("nope")



def test_matches_compares_grid_model_and_snapshots():
    from types import SimpleNamespace

    import numpy as np

    cfg = parse_config(_base())  # 4 epochs: the default snapshots shrink to one per epoch, 5
    run = SimpleNamespace(temperature=[0.5, 2.0], sigma_w=[0.125, 1.0], config=cfg.model,
                          snapshot_epochs=[0, 1, 2, 3, 4], seed=cfg.seed, dtype=cfg.dtype,
                          diverged=np.zeros((2, 2, cfg.seeds), dtype=bool))
    assert cfg.matches(run)
    assert not cfg.matches(SimpleNamespace(**{**vars(run), "temperature": [0.5]}))
    assert not cfg.matches(SimpleNamespace(**{**vars(run), "snapshot_epochs": [0, 4]}))


def test_validation_config_is_typed_and_checked_once(tmp_path):
    from dysonsgd.analysis.spec import Transition, ValidationSpec
    from dysonsgd.runs.validation_config import load_validation_config, parse_validation_config

    cfg = load_validation_config(_write(tmp_path, EXAMPLE))
    assert cfg.sweep == load_config(tmp_path / "quick.toml") and cfg.name == "quick"
    assert cfg.expected_phases == {(0, 0): "ordered"} and cfg.diagram is None
    assert isinstance(cfg.spec, ValidationSpec) and cfg.spec.options["start_snapshot"] == 1
    phases = [{"temperature": 0.5, "sigma_w": 1.0, "phase": "jamming"}]
    diagram = {"transition": {"inv_sigma_w": 8.0, "between": [0.5, 2]}}
    got = parse_validation_config(dict(_base(), expect={"phases": phases, "diagram": diagram}))
    assert got.expected_phases == {(0, 1): "jamming"}
    assert got.diagram.transition == Transition(8.0, (0.5, 2.0))
    diagram["transition"]["inv_sigma_w"] = 3.0
    with pytest.raises(ConfigError, match=r"\[expect.diagram\] transition: inv_sigma_w = 3 is "
                                          "not in the grid"):
        parse_validation_config(dict(_base(), expect={"phases": phases, "diagram": diagram}))
    with pytest.raises(ConfigError, match=r"\[expect\] phases: no cells to check"):
        parse_validation_config(dict(_base(), expect={"phases": []}))
    with pytest.raises(ConfigError, match=r"\[validate\] start_snapshot: must be < 4"):
        parse_validation_config(dict(_base(), expect={"phases": phases},
                                     validate={"start_snapshot": 20}))


def test_validation_refuses_a_batch_size_axis(tmp_path):
    """validate checks one |B|: a [grid] batch_size list is refused before any training."""
    from dysonsgd.runs.config import bundled_config
    from dysonsgd.runs.validation_config import load_validation_config

    path = tmp_path / "axis.toml"
    path.write_text(bundled_config("quick").read_text().replace(
        "seeds = 20", "seeds = 20\nbatch_size = [1, 4]"))
    with pytest.raises(ConfigError, match=r"\[grid\] batch_size: validate checks one batch size"):
        load_validation_config(path)


@pytest.mark.parametrize(("training", "key"), [
    ({"epochs": 2, "snapshots": 50}, "snapshots"),     # a run of 2 epochs records at most 3
    ({"epochs": 2, "widths": [3, 8, 16, 1]}, "widths"),  # n2 > n1
    ({"epochs": 2, "widths": [3, 32, 1, 1]}, "widths"),  # n2 < 2: no spacing
])
def test_what_later_stages_need_is_checked_when_the_config_is_read(training, key):
    with pytest.raises(ConfigError, match=rf"\[training\] {key}:"):
        parse_config({"grid": {"temperature": [1], "sigma_w": [1], "seeds": 1},
                      "training": training})


def test_short_runs_default_to_one_snapshot_per_epoch():
    cfg = parse_config({"grid": {"temperature": [1], "sigma_w": [1], "seeds": 1},
                        "training": {"epochs": 2}})
    assert cfg.snapshots == 3


def test_a_run_matches_only_with_the_same_seeds_seed_and_dtype():
    """validate --run compares what the run recorded in full (issue 13, class 6)."""
    from dataclasses import replace

    import torch

    from dysonsgd.train import train_ensemble

    cfg = parse_config({"grid": {"temperature": [1], "sigma_w": [1], "seeds": 2},
                        "training": {"epochs": 1, "n_data": 8, "dtype": "float64"}})
    run = train_ensemble(cfg.model, [1.0], [1.0], n_seeds=2, epochs=1, snapshots=2, seed=0,
                         dtype=torch.float64, progress=False)
    assert cfg.matches(run)
    for other in (replace(cfg, seeds=3), replace(cfg, seed=1), replace(cfg, dtype="float32")):
        assert not other.matches(run)
