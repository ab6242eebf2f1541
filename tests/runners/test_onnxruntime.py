"""OrtRunner on models built in code."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx_ir as ir
import pytest

from modelport.errors import BackendError, ConfigError, InputDtypeError, InputShapeError
from modelport.ir.serde import load, save, to_bytes
from modelport.ir.specs import TensorSpec
from modelport.runners.onnxruntime import OrtRunner, auto_providers

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
TRT = "TensorrtExecutionProvider"

Arrays = dict[str, np.ndarray[Any, Any]]


def affine_model() -> ir.Model:
    """y = relu(x * w + b), k_next = k + 1: a float and an int64 input, dynamic batch."""
    return ir.from_onnx_text(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        affine (float[N, 3] x, int64[N] k) => (float[N, 3] y, int64[N] k_next)
        <float[3] w = {0.5, -1.0, 2.0}, float[3] b = {0.1, 0.2, -0.3}, int64 one = {1}>
        {
            t = Mul(x, w)
            u = Add(t, b)
            y = Relu(u)
            k_next = Add(k, one)
        }
        """
    )


def expected(feeds: Arrays) -> Arrays:
    w = np.array([0.5, -1.0, 2.0], np.float32)
    b = np.array([0.1, 0.2, -0.3], np.float32)
    return {"y": np.maximum(feeds["x"] * w + b, 0), "k_next": feeds["k"] + 1}


def make_feeds(batch: int) -> Arrays:
    rng = np.random.default_rng(batch)
    return {
        "x": rng.standard_normal((batch, 3)).astype(np.float32),
        "k": rng.integers(-5, 5, size=batch).astype(np.int64),
    }


@pytest.fixture
def model_path(tmp_path: Path) -> Path:
    return save(affine_model(), tmp_path / "affine.onnx")


def test_path_bytes_and_model_give_identical_outputs(model_path: Path) -> None:
    feeds = make_feeds(4)
    sources: list[Any] = [model_path, str(model_path), model_path.read_bytes(), load(model_path)]
    results = []
    for source in sources:
        with OrtRunner(source, graph_optimization="disable") as runner:
            results.append(runner.infer(feeds))
    for out in results[1:]:
        assert list(out) == ["y", "k_next"]
        np.testing.assert_array_equal(out["y"], results[0]["y"])
        np.testing.assert_array_equal(out["k_next"], results[0]["k_next"])
    want = expected(feeds)
    np.testing.assert_allclose(results[0]["y"], want["y"], rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(results[0]["k_next"], want["k_next"])


def test_in_memory_model_runs_without_a_file() -> None:
    feeds = make_feeds(2)
    with OrtRunner(affine_model()) as runner:
        out = runner.infer(feeds)
    np.testing.assert_allclose(out["y"], expected(feeds)["y"], rtol=1e-6, atol=1e-6)
    with OrtRunner(to_bytes(affine_model())) as runner:
        np.testing.assert_array_equal(runner.infer(feeds)["y"], out["y"])


@pytest.mark.parametrize("level", ["disable", "basic", "extended", "all"])
def test_graph_optimization_levels_agree(model_path: Path, level: Any) -> None:
    feeds = make_feeds(3)
    with OrtRunner(model_path, graph_optimization=level, intra_op_threads=1) as runner:
        out = runner.infer(feeds)
    np.testing.assert_allclose(out["y"], expected(feeds)["y"], rtol=1e-6, atol=1e-6)


def test_specs_come_from_the_session(model_path: Path) -> None:
    with OrtRunner(model_path) as runner:
        assert runner.inputs == [
            TensorSpec("x", np.dtype("float32"), ("N", 3)),
            TensorSpec("k", np.dtype("int64"), ("N",)),
        ]
        assert runner.outputs == [
            TensorSpec("y", np.dtype("float32"), ("N", 3)),
            TensorSpec("k_next", np.dtype("int64"), ("N",)),
        ]


def test_name_defaults(model_path: Path) -> None:
    assert OrtRunner(model_path).name == "affine"
    assert OrtRunner(str(model_path)).name == "affine"
    assert OrtRunner(model_path.read_bytes()).name == "model"
    assert OrtRunner(model_path, name="custom").name == "custom"


def test_unknown_provider(model_path: Path) -> None:
    runner = OrtRunner(model_path, providers=["FooExecutionProvider"])
    with pytest.raises(
        BackendError,
        match=r"ONNX Runtime has no FooExecutionProvider here \(available: .*CPUExecutionProvider"
        r".*\) — install the matching onnxruntime package",
    ):
        runner.activate()
    assert not runner.is_active


def test_unparseable_bytes() -> None:
    runner = OrtRunner(b"definitely not onnx")
    with pytest.raises(BackendError, match="ONNX Runtime could not load model 'model'"):
        runner.activate()
    assert not runner.is_active


def test_engine_failure_is_backend_error(model_path: Path) -> None:
    feeds = make_feeds(2)
    feeds["x"] = feeds["x"].astype(np.float64)
    with OrtRunner(model_path) as runner:
        with pytest.raises(InputDtypeError, match=r"arr\.astype\(np\.float32\)"):
            runner.infer(feeds)
        with pytest.raises(BackendError, match="ONNX Runtime failed running model 'affine'"):
            runner.infer(feeds, check=False)


def test_feeds_checked_against_session_specs(model_path: Path) -> None:
    feeds = make_feeds(2)
    feeds["x"] = np.zeros((2, 4), np.float32)
    with OrtRunner(model_path) as runner, pytest.raises(InputShapeError, match=r"^input 'x' has size 4 on axis 1"):
        runner.infer(feeds)


def test_session_only_while_active(model_path: Path) -> None:
    runner = OrtRunner(model_path)
    with pytest.raises(BackendError, match="onnxruntime runner for 'affine' is not active"):
        _ = runner.session
    with runner:
        assert runner.session is not None
        assert [i.name for i in runner.session.get_inputs()] == ["x", "k"]
    with pytest.raises(BackendError, match="is not active"):
        _ = runner.session


def test_describe(model_path: Path) -> None:
    runner = OrtRunner(
        model_path,
        intra_op_threads=2,
        graph_optimization="basic",
        session_config={"session.intra_op.allow_spinning": "0"},
    )
    settings = {
        "backend": "onnxruntime",
        "providers": [CPU],
        "requested_providers": [CPU],
        "provider_options": {},
        "intra_op_threads": 2,
        "inter_op_threads": "default",
        "graph_optimization": "basic",
        "session_config": {"session.intra_op.allow_spinning": "0"},
    }
    assert runner.describe() == settings
    with runner:
        # Once active: what the session uses (the CPU provider reports no options).
        assert runner.describe() == {**settings, "provider_options": {CPU: {}}}


@pytest.mark.parametrize(
    ("available", "chosen"),
    [
        ([CPU], [CPU]),
        ([CUDA, CPU], [CUDA, CPU]),
        ([TRT, CUDA, CPU], [TRT, CUDA, CPU]),
        ([CPU, CUDA, TRT], [TRT, CUDA, CPU]),  # preference order, not the order offered
        (["AzureExecutionProvider", CPU], [CPU]),
        ([TRT, CPU], [TRT, CPU]),
        ([], [CPU]),  # CPU is always the fallback
    ],
)
def test_auto_providers_prefers_tensorrt_then_cuda_then_cpu(available: list[str], chosen: list[str]) -> None:
    assert auto_providers(available) == chosen


def test_auto_resolves_from_what_onnxruntime_offers(model_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import onnxruntime as ort

    created: list[dict[str, Any]] = []
    real_session = ort.InferenceSession

    def recording_session(source: Any, **kwargs: Any) -> Any:
        created.append(kwargs)
        return real_session(source, sess_options=kwargs["sess_options"], providers=[CPU])

    monkeypatch.setattr(ort, "get_available_providers", lambda: [CPU, "AzureExecutionProvider", CUDA])
    monkeypatch.setattr(ort, "InferenceSession", recording_session)
    options = {CUDA: {"device_id": 0}}
    runner = OrtRunner(model_path, providers="auto", provider_options=options)
    assert runner.describe()["providers"] == "auto"
    with runner:
        assert created[0]["providers"] == [CUDA, CPU]
        assert created[0]["provider_options"] == [{"device_id": 0}, {}]  # aligned with the providers
        info = runner.describe()
        # What the session really runs on (here CPU: the CUDA offer was faked), not what was asked.
        assert info["providers"] == [CPU]
        assert info["requested_providers"] == "auto"
        assert info["provider_options"] == {CPU: {}}


def test_auto_runs_on_this_machine(model_path: Path) -> None:
    import onnxruntime as ort

    feeds = make_feeds(2)
    runner = OrtRunner(model_path, providers="auto")
    with runner:
        assert runner.describe()["providers"][-1] == CPU
        assert runner.describe()["providers"] == [
            p for p in auto_providers(ort.get_available_providers()) if p in runner.session.get_providers()
        ]
        np.testing.assert_allclose(runner.infer(feeds)["y"], expected(feeds)["y"], rtol=1e-6, atol=1e-6)


def test_provider_options_for_a_provider_not_in_use(model_path: Path) -> None:
    with pytest.raises(
        ConfigError,
        match=r"provider options were given for CUDAExecutionProvider, which is not among the providers "
        r"\(CPUExecutionProvider\) — add it to providers",
    ):
        OrtRunner(model_path, provider_options={CUDA: {"device_id": 0}})
    with pytest.raises(
        ConfigError,
        match=r"given for FooExecutionProvider, which is not among the providers \(auto: one of "
        r"TensorrtExecutionProvider, CUDAExecutionProvider, CPUExecutionProvider\)",
    ):
        OrtRunner(model_path, providers="auto", provider_options={"FooExecutionProvider": {}})


def test_providers_must_be_a_list_or_auto(model_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"providers='CPUExecutionProvider' is invalid — give 'auto' or a list"):
        OrtRunner(model_path, providers="CPUExecutionProvider")


@pytest.mark.gpu
def test_cuda_provider_with_options_is_reported_from_the_session(model_path: Path) -> None:
    feeds = make_feeds(4)
    options = {CUDA: {"device_id": 0, "cudnn_conv_algo_search": "DEFAULT"}}
    with OrtRunner(model_path, providers=[CUDA, CPU], provider_options=options) as runner:
        info = runner.describe()
        assert info["providers"] == [CUDA, CPU]
        assert info["provider_options"][CUDA]["device_id"] == "0"  # the session reports strings
        assert info["provider_options"][CUDA]["cudnn_conv_algo_search"] == "DEFAULT"
        np.testing.assert_allclose(runner.infer(feeds)["y"], expected(feeds)["y"], rtol=1e-6, atol=1e-6)


@pytest.mark.gpu
def test_auto_picks_the_gpu_when_there_is_one(model_path: Path) -> None:
    feeds = make_feeds(4)
    with OrtRunner(model_path, providers="auto") as runner:
        used = runner.describe()["providers"]
        assert used[0] in (TRT, CUDA)
        assert used[-1] == CPU
        np.testing.assert_allclose(runner.infer(feeds)["y"], expected(feeds)["y"], rtol=1e-5, atol=1e-5)


def test_records_inference_time(model_path: Path) -> None:
    with OrtRunner(model_path) as runner:
        runner.infer(make_feeds(1))
        assert runner.last_inference_time is not None
        assert runner.last_inference_time > 0.0


def test_string_tensors_accept_bytes_and_reject_non_utf8() -> None:
    model = ir.from_onnx_text(
        '<ir_version: 8, opset_import: ["" : 17]> g (string[N] s) => (string[N] t) { t = Identity(s) }'
    )
    with OrtRunner(model) as runner:
        out = runner.infer({"s": np.array([b"ab", "c\u00e9"], dtype=object)})
        assert out["t"].tolist() == ["ab", "c\u00e9"]  # not "b'ab'"
        with pytest.raises(InputDtypeError, match="input 's' holds bytes that are not UTF-8 text"):
            runner.infer({"s": np.array([b"\xff"], dtype=object)})


@pytest.mark.parametrize("prepack", [False, True])
def test_shared_weights_give_the_same_outputs_without_copying_into_the_model(prepack: bool) -> None:
    model = ir.from_onnx_text(
        '<ir_version: 8, opset_import: ["" : 17]> g (float[N, 512] x) => (float[N, 512] y) { y = MatMul(x, w) }'
    )
    w = np.random.default_rng(0).standard_normal((512, 512)).astype(np.float32)  # 1 MiB: shared
    value = next(v for n in model.graph for v in n.inputs if v is not None and v.name == "w")
    value.const_value = ir.tensor(w, name="w")
    model.graph.register_initializer(value)
    x = np.random.default_rng(1).standard_normal((3, 512)).astype(np.float32)
    with OrtRunner(model, graph_optimization="disable", share_weights=True, prepack_shared=prepack) as runner:
        got = runner.infer({"x": x})["y"]
        options = runner.session.get_session_options()
        if prepack:  # ORT prepacks the shared weights, as for a model loaded from bytes
            with pytest.raises(Exception, match=r"does not have configuration with key: session\.disable_prepacking"):
                options.get_session_config_entry("session.disable_prepacking")
        else:  # off by default: prepacking would copy the shared weights again
            assert options.get_session_config_entry("session.disable_prepacking") == "1"
    assert model.graph.initializers["w"].const_value is value.const_value  # restored after serializing
    # Prepacked or not, only the summation order may differ.
    np.testing.assert_allclose(got, x @ w, rtol=1e-4, atol=1e-4)


# --- the CUDA and TensorRT runners -------------------------------------------------------------------


def _has(provider: str) -> bool:
    import onnxruntime as ort

    return provider in ort.get_available_providers()


@pytest.mark.skipif(_has(CUDA), reason="this onnxruntime has CUDA: the refusal cannot be seen")
def test_gpu_runners_refuse_clearly_without_the_provider(model_path: Path) -> None:
    from modelport.runners import create_runner

    with pytest.raises(BackendError, match=r"has no CUDAExecutionProvider here .* the 'gpu' extra"):
        create_runner("onnxruntime-cuda", model_path).activate()
    with pytest.raises(BackendError, match=r"has no TensorrtExecutionProvider, CUDAExecutionProvider here"):
        create_runner("onnxruntime-trt", model_path, fp16=True).activate()


def test_gpu_runners_ask_for_their_providers_and_options(tmp_path: Path, model_path: Path) -> None:
    from modelport.runners.onnxruntime import OrtCudaRunner, OrtTensorrtRunner

    cuda = OrtCudaRunner(model_path, device_id=1)
    assert cuda.backend == "onnxruntime-cuda"
    assert cuda.providers == [CUDA, CPU] and cuda.provider_options == {CUDA: {"device_id": 1}}
    trt = OrtTensorrtRunner(model_path, fp16=True, engine_cache=tmp_path)
    assert trt.providers == [TRT, CUDA, CPU]
    assert trt.provider_options[TRT] == {
        "device_id": 0,
        "trt_fp16_enable": True,
        "trt_engine_cache_enable": True,
        "trt_engine_cache_path": str(tmp_path),
        "trt_timing_cache_enable": True,
    }


def test_a_provider_the_session_dropped_is_an_error(model_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """ONNX Runtime falls back to the CPU when CUDA cannot start; asked for by name, that must not pass silently."""
    import onnxruntime as ort

    real_session = ort.InferenceSession

    def cpu_only(source: Any, sess_options: Any = None, providers: Any = None, provider_options: Any = None) -> Any:
        return real_session(source, sess_options=sess_options, providers=[CPU])  # what a failed CUDA start leaves

    monkeypatch.setattr(ort, "get_available_providers", lambda: [CUDA, CPU])
    monkeypatch.setattr(ort, "InferenceSession", cpu_only)
    runner = OrtRunner(model_path, providers=[CUDA, CPU])
    with pytest.raises(BackendError, match=r"dropped CUDAExecutionProvider .* would run on CPUExecutionProvider"):
        runner.activate()
    with OrtRunner(model_path, providers="auto") as auto:  # "auto" allows the fallback, and says what it runs on
        assert auto.describe()["providers"] == [CPU]


@pytest.mark.gpu
def test_cuda_runner_matches_the_cpu(model_path: Path) -> None:
    from modelport.runners.onnxruntime import OrtCudaRunner

    feeds = make_feeds(4)
    with OrtCudaRunner(model_path) as runner:
        assert runner.describe()["providers"][0] == CUDA
        np.testing.assert_allclose(runner.infer(feeds)["y"], expected(feeds)["y"], rtol=1e-5, atol=1e-5)


@pytest.mark.gpu
@pytest.mark.trt
def test_tensorrt_runner_fp16_stays_close_to_the_cpu(model_path: Path, tmp_path: Path) -> None:
    from modelport.runners.onnxruntime import OrtTensorrtRunner

    feeds = make_feeds(4)
    with OrtTensorrtRunner(model_path, fp16=True, engine_cache=tmp_path) as runner:
        assert runner.describe()["providers"][0] == TRT
        np.testing.assert_allclose(runner.infer(feeds)["y"], expected(feeds)["y"], rtol=2e-2, atol=2e-2)
