from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from modelport.deploy.recipe import Recipe, load_recipe, parse_recipe, resolved_yaml
from modelport.errors import ConfigError


def _recipe(**extra: object) -> dict[str, object]:
    return {"source": {"onnx": "model.onnx"}, **extra}


def test_defaults_fill_every_stage() -> None:
    recipe = parse_recipe(_recipe())
    assert recipe.target == "cpu"
    assert recipe.stages.quantize.mode == "int8-static"
    assert recipe.stages.bench.batches == [1, 8]
    assert recipe.cache.enabled is True


def test_unknown_key_names_allowed_keys_and_suggests() -> None:
    with pytest.raises(
        ConfigError, match=r"unknown key 'stages.quantise' — did you mean 'quantize'\? allowed keys: export"
    ):
        parse_recipe(_recipe(stages={"quantise": {}}))
    with pytest.raises(ConfigError, match=r"unknown key 'stages.bench.second' — did you mean 'seconds'\?"):
        parse_recipe(_recipe(stages={"bench": {"second": 1}}))
    with pytest.raises(ConfigError, match=r"unknown key 'stages.surgery.0.recipes' — did you mean 'recipe'\?"):
        parse_recipe(_recipe(stages={"surgery": [{"recipes": "nms"}]}))


def test_bad_value_names_allowed_values() -> None:
    with pytest.raises(
        ConfigError, match=r"stages.quantize.mode: 'int4' is not allowed — allowed values: 'int8-static'"
    ):
        parse_recipe(_recipe(stages={"quantize": {"mode": "int4"}}))
    with pytest.raises(ConfigError, match=r"target: 'tpu' is not allowed — allowed values: 'cpu', 'gpu'"):
        parse_recipe(_recipe(target="tpu"))
    with pytest.raises(ConfigError, match=r"stages.bench.seconds: .*greater than 0"):
        parse_recipe(_recipe(stages={"bench": {"seconds": 0}}))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"source": {}}, "give exactly one of onnx, pytorch or example"),
        ({"source": {"onnx": "a.onnx", "example": True}}, r"got onnx, example"),
        ({"source": {"onnx": "a.onnx", "inputs": ["x:1x3"]}}, "inputs are the PyTorch input specs"),
        (
            _recipe(stages={"quantize": {"mode": "fp16", "calibration": {"data": "c.npz"}}}),
            "only used by mode int8-static",
        ),
        (_recipe(stages={"quantize": {"mode": "fp16", "min_sqnr_db": 30}}), "only used by mode int8-static"),
        (
            _recipe(stages={"quantize": {"calibration": {"data": "c.npz", "preprocess": "resize=8"}}}),
            "folder of images",
        ),
        (_recipe(stages={"quantize": {"enabled": False, "mode": "fp16"}}), "disabled: remove its other options"),
        (_recipe(stages={"export": {"opset": 18}}), "export only applies to a pytorch source"),
        (_recipe(stages={"verify": {"dataset": "d.npz"}}), "dataset and metric go together"),
        (_recipe(goals={"accuracy_floor": 0.7}), "accuracy goals need stages.verify.dataset"),
        (
            _recipe(stages={"serve": {"dynamic_batching": False, "max_queue_delay_ms": 2}}),
            "only applies with dynamic_batching",
        ),
        (_recipe(stages={"bench": {"batches": [0]}}), "batches must be positive"),
    ],
)
def test_options_that_would_do_nothing_are_refused(data: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_recipe(data)


def test_missing_source_and_wrong_top_level() -> None:
    with pytest.raises(ConfigError, match="source: required key is missing"):
        parse_recipe({"target": "cpu"})
    with pytest.raises(ConfigError, match="must be a mapping of keys"):
        parse_recipe(["source"])


def test_resolved_yaml_round_trips(tmp_path: Path) -> None:
    recipe = parse_recipe(_recipe(stages={"bench": {"batches": [1, 4]}}, goals={"latency_ms": 5}))
    text = resolved_yaml(recipe)
    again = parse_recipe(yaml.safe_load(text))
    assert again == recipe
    assert "sensitivity: true" in text  # defaults are written out, not left implicit


def test_load_recipe_resolves_paths_against_its_folder(tmp_path: Path) -> None:
    (tmp_path / "r").mkdir()
    path = tmp_path / "r" / "deploy.yaml"
    path.write_text(yaml.safe_dump({"source": {"onnx": "m.onnx"}, "output": "out", "stages": {"verify": {"batch": 2}}}))
    recipe = load_recipe(path)
    assert isinstance(recipe, Recipe)
    assert recipe.source.onnx == tmp_path / "r" / "m.onnx"
    assert recipe.output == tmp_path / "r" / "out"


def test_load_recipe_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_recipe(tmp_path / "none.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("source: [unclosed")
    with pytest.raises(ConfigError, match="is not valid YAML"):
        load_recipe(bad)
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text("source:\n  onnx: m.onnx\nstagez: {}\n")
    with pytest.raises(
        ConfigError, match=r"recipe '.*wrong.yaml' is invalid:\n  unknown key 'stagez' — did you mean 'stages'"
    ):
        load_recipe(wrong)


def test_accuracy_budget_is_one_kind_and_needs_its_data() -> None:
    with pytest.raises(ConfigError, match="min_sqnr_db OR max_accuracy_drop, not both"):
        parse_recipe(_recipe(stages={"quantize": {"min_sqnr_db": 30, "max_accuracy_drop": 0.01}}))
    with pytest.raises(ConfigError, match=r"max_accuracy_drop needs stages\.verify\.dataset and metric"):
        parse_recipe(_recipe(stages={"quantize": {"max_accuracy_drop": 0.01}}))
    recipe = parse_recipe(
        _recipe(stages={"quantize": {"max_accuracy_drop": 0.01}, "verify": {"dataset": "d.npz", "metric": "top1"}})
    )
    assert recipe.stages.quantize.max_accuracy_drop == 0.01


def test_gpu_targets_default_to_fp16_or_int8_with_calibration_data() -> None:
    assert parse_recipe(_recipe(target="gpu")).stages.quantize.mode == "fp16"
    assert parse_recipe(_recipe(target="tensorrt")).stages.quantize.mode == "fp16"
    calibrated = parse_recipe(_recipe(target="gpu", stages={"quantize": {"calibration": {"data": "c.npz"}}}))
    assert calibrated.stages.quantize.mode == "int8-static"
    explicit = parse_recipe(_recipe(target="gpu", stages={"quantize": {"mode": "int8-dynamic"}}))
    assert explicit.stages.quantize.mode == "int8-dynamic"
    assert parse_recipe(_recipe()).stages.quantize.mode == "int8-static"  # the CPU default is unchanged
    off = parse_recipe(_recipe(target="gpu", stages={"quantize": {"enabled": False}}))
    assert not off.stages.quantize.enabled
    # the resolved recipe states the choice, so a re-run does not depend on the rule
    assert "mode: fp16" in resolved_yaml(parse_recipe(_recipe(target="gpu")))
