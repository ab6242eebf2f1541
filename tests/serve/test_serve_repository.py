"""ModelRepository: layout, config.yaml, version policies, lookup errors, and the load lifecycle."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from modelport.errors import BackendError, InputShapeError, ModelNotFoundError, RepositoryError
from modelport.ir.serde import save
from modelport.serve.repository import (
    AllVersions,
    LatestVersions,
    ModelConfig,
    ModelRepository,
    SpecificVersions,
    read_config,
)

from .serve_models import fixed_model, mixed_model, text_model, write_version


def make_repo(root: Path, versions: dict[str, list[int]], config: str | None = None) -> Path:
    for name, numbers in versions.items():
        for number in numbers:
            write_version(root, name, number, mixed_model(offset=number))
        if config is not None:
            (root / name / "config.yaml").write_text(config, encoding="utf-8")
    return root


def write_config(tmp_path: Path, text: str) -> Path:
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "config.yaml").write_text(text, encoding="utf-8")
    return folder


# layout and lookup ----------------------------------------------------------------------------


def test_repository_lists_models_versions_and_config(repo_dir: Path) -> None:
    repo = ModelRepository(repo_dir)
    assert repo.models == ["mixed", "text"]
    assert repo.versions("mixed") == [1, 2]
    assert repo.versions("text") == [1]
    assert [(m.name, m.version) for m in repo] == [("mixed", 1), ("mixed", 2), ("text", 1)]
    config = repo.get("mixed").config
    assert config.instance_count == 4
    assert config.max_batch_size == 8
    assert config.version_policy == AllVersions()
    assert repo.get("text").config == ModelConfig()


def test_get_picks_the_highest_version_by_default(repo_dir: Path) -> None:
    repo = ModelRepository(repo_dir)
    assert repo.get("mixed").version == 2
    assert repo.get("mixed", "1").version == 1
    assert repo.get("mixed", 1).path == repo_dir / "mixed" / "1" / "model.onnx"


def test_unknown_model_lists_the_served_ones(repo_dir: Path) -> None:
    repo = ModelRepository(repo_dir)
    with pytest.raises(
        ModelNotFoundError,
        match=r"model 'mixd' is not in repository .*; "
        r"it serves 'mixed', 'text' — did you mean 'mixed'\?",
    ):
        repo.get("mixd")


@pytest.mark.parametrize("version", ["7", 7, "latest", "-1"])
def test_unknown_version_lists_the_served_ones(repo_dir: Path, version: str | int) -> None:
    repo = ModelRepository(repo_dir)
    with pytest.raises(
        ModelNotFoundError,
        match=rf"model 'mixed' has no version '{version}' being served — served versions: 1, 2$",
    ):
        repo.get("mixed", version)


def test_latest_policy_serves_the_highest_version(tmp_path: Path) -> None:
    repo = ModelRepository(make_repo(tmp_path, {"m": [1, 3, 10]}))
    assert repo.versions("m") == [10]
    with pytest.raises(
        ModelNotFoundError,
        match=r"served versions: 10 \(1, 3 on disk but excluded by version_policy\)",
    ):
        repo.get("m", 3)


def test_latest_policy_with_several_versions(tmp_path: Path) -> None:
    repo = ModelRepository(make_repo(tmp_path, {"m": [1, 2, 3]}, "version_policy: {kind: latest, num_versions: 2}\n"))
    assert repo.versions("m") == [2, 3]
    assert repo.get("m").config.version_policy == LatestVersions(num_versions=2)


def test_specific_policy(tmp_path: Path) -> None:
    repo = ModelRepository(
        make_repo(tmp_path, {"m": [1, 2, 3]}, "version_policy:\n  kind: specific\n  versions: [3, 1]\n")
    )
    assert repo.versions("m") == [1, 3]
    assert repo.get("m").config.version_policy == SpecificVersions(versions=[3, 1])


def test_specific_policy_naming_a_missing_version(tmp_path: Path) -> None:
    make_repo(tmp_path, {"m": [1, 2]}, "version_policy: {kind: specific, versions: [2, 5]}\n")
    with pytest.raises(RepositoryError, match=r"asks for version 5 of model 'm', but its folder holds 1, 2"):
        ModelRepository(tmp_path)


def test_single_onnx_file_is_a_repository(tmp_path: Path) -> None:
    path = save(mixed_model(), tmp_path / "detector.onnx")
    repo = ModelRepository(str(path))
    assert repo.models == ["detector"]
    assert repo.versions("detector") == [1]
    assert repo.get("detector", "1").path == path


# malformed repositories -----------------------------------------------------------------------


def test_empty_repository_folder(tmp_path: Path) -> None:
    with pytest.raises(RepositoryError, match=r"has no model folders — expected .*/<name>/<version>/model.onnx$"):
        ModelRepository(tmp_path)


def test_onnx_files_at_the_repository_root_get_a_hint(tmp_path: Path) -> None:
    save(mixed_model(), tmp_path / "a.onnx")
    with pytest.raises(RepositoryError, match=r"it holds a.onnx — serve one file by passing its path"):
        ModelRepository(tmp_path)


def test_missing_repository(tmp_path: Path) -> None:
    with pytest.raises(RepositoryError, match=r"model repository '.*nowhere' does not exist"):
        ModelRepository(tmp_path / "nowhere")


def test_file_that_is_not_onnx(tmp_path: Path) -> None:
    path = tmp_path / "model.txt"
    path.write_text("hi", encoding="utf-8")
    with pytest.raises(RepositoryError, match=r"is neither a model repository folder nor an .onnx file"):
        ModelRepository(path)


def test_model_folder_without_versions(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    with pytest.raises(RepositoryError, match=r"model folder '.*m' has no version folders — put the model in"):
        ModelRepository(tmp_path)


def test_version_folders_must_be_integers(tmp_path: Path) -> None:
    make_repo(tmp_path, {"m": [1]})
    (tmp_path / "m" / "v2").mkdir()
    with pytest.raises(RepositoryError, match=r"'.*v2' is not a version folder — versions of model 'm' are integer"):
        ModelRepository(tmp_path)


def test_version_folders_must_be_unique(tmp_path: Path) -> None:
    make_repo(tmp_path, {"m": [1]})
    write_version(tmp_path, "m", "01", mixed_model())
    with pytest.raises(RepositoryError, match=r"are both version 1 — keep one"):
        ModelRepository(tmp_path)


def test_version_folder_without_model_file(tmp_path: Path) -> None:
    save(mixed_model(), tmp_path / "m" / "1" / "net.onnx")
    with pytest.raises(RepositoryError, match=r"has no model.onnx \(it holds net.onnx\) — put the model there"):
        ModelRepository(tmp_path)


def test_hidden_folders_are_ignored(tmp_path: Path) -> None:
    make_repo(tmp_path, {"m": [1]})
    (tmp_path / ".cache").mkdir()
    (tmp_path / "m" / ".ipynb_checkpoints").mkdir()
    assert ModelRepository(tmp_path).models == ["m"]


# config.yaml ----------------------------------------------------------------------------------


def test_config_defaults_when_absent_or_empty(tmp_path: Path) -> None:
    assert read_config(tmp_path) == ModelConfig()
    assert read_config(write_config(tmp_path, "")) == ModelConfig()


def test_config_fields(tmp_path: Path) -> None:
    folder = write_config(
        tmp_path,
        "name: m\nplatform: onnxruntime_onnx\nmax_batch_size: 16\ninstance_count: 2\n"
        "intra_op_threads: 1\ninter_op_threads: 1\ngraph_optimization: basic\n"
        "version_policy: latest\n",
    )
    config = read_config(folder)
    assert (config.max_batch_size, config.instance_count) == (16, 2)
    assert (config.intra_op_threads, config.inter_op_threads) == (1, 1)
    assert config.graph_optimization == "basic"
    assert config.version_policy == LatestVersions()


@pytest.mark.parametrize(
    ("text", "match"),
    [
        (
            "max_batch: 8\n",
            r"config.yaml' is invalid: unknown key 'max_batch' — "
            r"did you mean 'max_batch_size'\? allowed: name, platform, ",
        ),
        (
            "version_policy: {kind: latest, count: 2}\n",
            r"unknown key 'version_policy.latest.count' — allowed: kind, num_versions",
        ),
        (
            "instance_count: four\n",
            r"instance_count: Input should be a valid integer \(got 'four'\)",
        ),
        (
            "instance_count: 0\n",
            r"instance_count: Input should be greater than or equal to 1 \(got 0\)",
        ),
        ("max_batch_size: true\n", r"max_batch_size: Input should be a valid integer \(got True\)"),
        (
            "platform: tensorrt_plan\n",
            r"platform: Input should be 'onnxruntime_onnx' \(got 'tensorrt_plan'\)",
        ),
        (
            "version_policy: newest\n",
            r"version_policy: Input tag 'newest' found using 'kind' does not match",
        ),
        (
            "version_policy: {kind: specific, versions: []}\n",
            r"version_policy.specific.versions: List should have at least 1 item",
        ),
        ("- 1\n- 2\n", r"must be a mapping of settings \(key: value\), got list"),
        ("max_batch_size: [\n", r"config.yaml' is not valid YAML: "),
    ],
)
def test_invalid_config(tmp_path: Path, text: str, match: str) -> None:
    folder = write_config(tmp_path, text)
    with pytest.raises(RepositoryError, match=match):
        read_config(folder)


def test_config_naming_another_model(tmp_path: Path) -> None:
    make_repo(tmp_path, {"m": [1]}, "name: other\n")
    with pytest.raises(RepositoryError, match=r"names the model 'other', but its folder is 'm'"):
        ModelRepository(tmp_path)


def test_triton_config_pbtxt_is_read(tmp_path: Path) -> None:
    write_version(tmp_path, "m", 1, mixed_model())
    (tmp_path / "m" / "config.pbtxt").write_text(
        'name: "m"\nplatform: "onnxruntime_onnx"\nmax_batch_size: 8\n'
        "instance_group [{ count: 2, kind: KIND_CPU }]\n"
        "dynamic_batching { max_queue_delay_microseconds: 500 preferred_batch_size: [4] }\n",
        encoding="utf-8",
    )
    repo = ModelRepository(tmp_path)
    model = repo.get("m")
    assert (model.config.max_batch_size, model.config.instance_count) == (8, 2)
    assert model.config.dynamic_batching is not None
    assert model.config.dynamic_batching.max_queue_delay_ms == 0.5
    assert model.config.dynamic_batching.preferred_batch_sizes == [4]
    with repo:
        assert repo.ready


def test_triton_config_declaring_the_wrong_dtype_fails_on_load(tmp_path: Path) -> None:
    write_version(tmp_path, "m", 1, fixed_model())
    (tmp_path / "m" / "config.pbtxt").write_text(
        'input [{ name: "x", data_type: TYPE_FP16, dims: [1, 4] }]\n', encoding="utf-8"
    )
    repo = ModelRepository(tmp_path)
    with pytest.raises(RepositoryError, match=r"'x'.*FP16.*FP32|'x'.*FP32.*FP16"):
        repo.load()
    assert not repo.get("m").ready


def test_yaml_and_pbtxt_together_is_an_error(tmp_path: Path) -> None:
    make_repo(tmp_path, {"m": [1]}, "instance_count: 1\n")
    (tmp_path / "m" / "config.pbtxt").write_text('name: "m"\n', encoding="utf-8")
    with pytest.raises(RepositoryError, match=r"has both config.yaml and config.pbtxt — keep one of them"):
        ModelRepository(tmp_path)


# lifecycle ------------------------------------------------------------------------------------


def test_load_and_unload(repo_dir: Path) -> None:
    repo = ModelRepository(repo_dir)
    assert not repo.ready
    with repo:
        assert repo.ready
        runner = repo.get("mixed", 1).runner
        assert [s.name for s in runner.inputs] == ["x", "k"]
        assert runner.infer({"x": np.zeros((1, 3), np.float32), "k": np.array([2])})["k_next"].tolist() == [3]
    assert not repo.ready
    assert not repo.get("text").ready


def test_config_reaches_the_runner(tmp_path: Path) -> None:
    make_repo(
        tmp_path,
        {"m": [1]},
        "intra_op_threads: 1\ninter_op_threads: 2\ngraph_optimization: disable\nallow_spinning: false\n",
    )
    runner = ModelRepository(tmp_path).get("m").runner
    assert (runner.intra_op_threads, runner.inter_op_threads) == (1, 2)
    assert runner.graph_optimization == "disable"
    assert runner.session_config == {"session.intra_op.allow_spinning": "0"}


def test_max_batch_size_needs_a_dynamic_first_axis(tmp_path: Path) -> None:
    write_version(tmp_path, "fixed", 1, fixed_model())
    write_version(tmp_path, "text", 1, text_model())
    (tmp_path / "fixed" / "config.yaml").write_text("max_batch_size: 4\n", encoding="utf-8")
    repo = ModelRepository(tmp_path)
    with pytest.raises(
        RepositoryError,
        match=r"model 'fixed' version 1 sets max_batch_size 4, "
        r"but input 'x' has shape \[1, 4\], whose first",
    ):
        repo.load()
    assert not repo.get("fixed").ready
    assert not repo.get("text").ready


def test_a_model_that_fails_to_load_unloads_the_others(tmp_path: Path) -> None:
    write_version(tmp_path, "a_good", 1, mixed_model())
    broken = tmp_path / "b_broken" / "1" / "model.onnx"
    broken.parent.mkdir(parents=True)
    broken.write_bytes(b"\x08\x07garbage")
    repo = ModelRepository(tmp_path)
    with pytest.raises(BackendError, match=r"ONNX Runtime could not load model 'b_broken'"):
        repo.load()
    assert not repo.get("a_good").ready


def test_check_batch_enforces_max_batch_size(repo_dir: Path) -> None:
    model = ModelRepository(repo_dir).get("mixed")
    model.check_batch({"x": np.zeros((8, 3), np.float32)})
    with pytest.raises(
        InputShapeError,
        match=r"input 'x' of model 'mixed' version 2 has batch size 9 \(shape \[9, 3\]\), "
        r"but the model's max_batch_size is 8",
    ):
        model.check_batch({"x": np.zeros((9, 3), np.float32)})


# --- execution providers ---------------------------------------------------------------------------


def test_execution_picks_the_runner_and_its_options(tmp_path: Path) -> None:
    from modelport.runners.onnxruntime import OrtCudaRunner, OrtRunner, OrtTensorrtRunner

    cpu = ModelRepository(make_repo(tmp_path / "a", {"m": [1]})).get("m")
    assert type(cpu.runner) is OrtRunner and cpu.runner.providers == ["CPUExecutionProvider"]
    cuda = ModelRepository(make_repo(tmp_path / "b", {"m": [1]}, "execution: cuda\ndevice_id: 1\n")).get("m")
    assert isinstance(cuda.runner, OrtCudaRunner)
    assert cuda.runner.provider_options == {"CUDAExecutionProvider": {"device_id": 1}}
    trt = ModelRepository(make_repo(tmp_path / "c", {"m": [1]}, "execution: tensorrt\nfp16: true\n")).get("m")
    assert isinstance(trt.runner, OrtTensorrtRunner)
    options = trt.runner.provider_options["TensorrtExecutionProvider"]
    assert options["trt_fp16_enable"] is True and options["trt_engine_cache_path"].endswith("tensorrt")


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ("device_id: 1\n", "device_id and fp16 apply to execution: cuda or tensorrt"),
        ("execution: cuda\nfp16: true\n", "fp16 lets TensorRT pick FP16 kernels: it needs execution: tensorrt"),
        ("execution: gpu\n", r"execution: Input should be 'cpu', 'cuda' or 'tensorrt'"),
    ],
)
def test_execution_options_that_cannot_apply_are_refused(tmp_path: Path, config: str, message: str) -> None:
    with pytest.raises(RepositoryError, match=message):
        ModelRepository(make_repo(tmp_path, {"m": [1]}, config))


def test_a_gpu_model_without_a_gpu_refuses_to_load(tmp_path: Path) -> None:
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has CUDA: the refusal cannot be seen")
    repo = ModelRepository(make_repo(tmp_path, {"m": [1]}, "execution: cuda\n"))
    with pytest.raises(BackendError, match="has no CUDAExecutionProvider here"):
        repo.get("m").load()


@pytest.mark.gpu
def test_a_cuda_model_serves_the_same_answers_as_the_cpu(tmp_path: Path) -> None:
    from modelport.runners.onnxruntime import OrtRunner

    root = make_repo(tmp_path, {"m": [1]}, "execution: cuda\n")
    served = ModelRepository(root).get("m")
    served.load()
    try:
        feeds = {
            s.name: np.ones([d if isinstance(d, int) else 2 for d in s.shape or []], s.dtype)
            for s in served.runner.inputs
        }
        with OrtRunner(served.path) as cpu:
            expected = cpu.infer(feeds)
        got = served.runner.infer(feeds)
        assert served.runner.describe()["providers"][0] == "CUDAExecutionProvider"
        for name, value in expected.items():
            np.testing.assert_allclose(got[name], value, rtol=1e-5, atol=1e-5)
    finally:
        served.unload()
