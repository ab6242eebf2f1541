"""Kubernetes / KServe manifests and the server Dockerfiles, checked against the real server.

Probes are checked against the route table of the Starlette app, the container command against
modelport's own argparse parser and ``serve`` command, the grace period against the server's
shutdown timeout, and the Dockerfiles' ports, user and entrypoint against the manifests, so
none of them can drift from the server without a test failing.
"""

from __future__ import annotations

import argparse
import copy
import fnmatch
import importlib
import importlib.metadata
import json
import math
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from modelport.bench.analyze import AnalysisResult, Candidate, Constraints, Measurement, ModelLoad, ModelSettings
from modelport.cli.main import build_parser
from modelport.errors import ConfigError, ModelSaveError, RepositoryError
from modelport.pack import k8s
from modelport.pack.k8s import (
    GRPC_PORT,
    HTTP_PORT,
    KSERVE_MODELS_DIR,
    MEMORY_HEADROOM,
    METRICS_PATH,
    MODELS_DIR,
    READY_PATH,
    RUN_AS_USER,
    RUNTIME_BASELINE_MIB,
    SERVER_SHUTDOWN_TIMEOUT_S,
    STORAGE_URI_PLACEHOLDER,
    K8sOptions,
    build_manifests,
    read_analysis,
    validate,
    write_manifests,
)
from modelport.serve.repository import ModelRepository
from serve.serve_models import mixed_model, text_model, write_version

ROOT = Path(__file__).resolve().parents[2]
Obj = dict[str, Any]


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """My_Repo/mixed/{1,2} (both served, 2 instances × 2 threads) and My_Repo/text/1 (defaults)."""
    root = tmp_path_factory.mktemp("k8s") / "My_Repo"
    write_version(root, "mixed", 1, mixed_model(offset=1))
    write_version(root, "mixed", 2, mixed_model(offset=2))
    (root / "mixed" / "config.yaml").write_text(
        "version_policy: all\ninstance_count: 2\nintra_op_threads: 2\n", encoding="utf-8"
    )
    write_version(root, "text", 1, text_model())
    return root


def size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def write_analysis(
    path: Path,
    settings: dict[str, ModelSettings],
    *,
    memory_mb: float | None = 400.0,
    feasible: bool = True,
    held_up: bool = True,
) -> Path:
    """An analysis result as `modelport analyze --json-file` writes it (through AnalysisResult)."""
    loads = {name: ModelLoad(throughput=100.0, p50_ms=1.0, p99_ms=2.0, requests=500) for name in settings}
    best = Measurement(Candidate.of(settings), loads=loads, memory_mb=memory_mb)
    default = Measurement(Candidate.of({name: ModelSettings() for name in settings}), loads=loads, memory_mb=200.0)
    confirmation = None
    if not held_up:  # measured again, the default made 10× the best's throughput
        fast = {name: replace(load, throughput=1000.0) for name, load in loads.items()}
        confirmation = (replace(default, loads=fast), best)
    result = AnalysisResult(
        repo="My_Repo",
        mode="quick",
        cores=8,
        concurrency=dict.fromkeys(settings, 8),
        constraints=Constraints(),
        default=default,
        measurements=[default, best],
        best=best if feasible else None,
        pareto=[best],
        confirmation=confirmation,
    )
    result.write_json(path)
    return path


def containers(obj: Obj) -> list[Obj]:
    if obj["kind"] == "Deployment":
        result: list[Obj] = obj["spec"]["template"]["spec"]["containers"]
        return result
    if obj["kind"] == "ServingRuntime":
        result = obj["spec"]["containers"]
        return result
    return []


def by_kind(objects: list[Obj]) -> dict[str, Obj]:
    return {obj["kind"]: obj for obj in objects}


# ---------------------------------------------------------------------------------------------
# What is generated
# ---------------------------------------------------------------------------------------------
def test_deployment_and_service_from_config(repo: Path) -> None:
    manifests = build_manifests(repo)
    objects = by_kind(manifests.objects)
    assert list(objects) == ["Deployment", "Service"]
    assert manifests.validated
    deployment = objects["Deployment"]
    assert deployment["metadata"]["name"] == "my-repo"  # from the folder name, made a valid name
    assert deployment["spec"]["replicas"] == 1
    (server,) = containers(deployment)
    # 2 versions × 2 instances × 2 threads of mixed, plus text's 1 instance with threads unset (1 counted)
    assert server["resources"]["requests"]["cpu"] == "9"
    loaded = size(repo / "mixed") - (repo / "mixed" / "config.yaml").stat().st_size
    largest = max(size(repo / "mixed" / "1"), size(repo / "mixed" / "2"), size(repo / "text" / "1"))
    memory = math.ceil((RUNTIME_BASELINE_MIB + (2 * loaded + size(repo / "text" / "1") + largest) / 2**20) * 1.25)
    assert server["resources"]["requests"]["memory"] == f"{memory}Mi"
    assert server["resources"]["limits"] == server["resources"]["requests"]  # Guaranteed QoS
    annotations = deployment["metadata"]["annotations"]
    assert "mixed/config.yaml" in annotations["modelport/cpu-request"]
    assert "threads unset, 1 counted (defaults)" in annotations["modelport/cpu-request"]
    assert "estimated" in annotations["modelport/memory-request"]
    assert any("intra_op_threads is unset for text" in note for note in manifests.notes)
    volume = deployment["spec"]["template"]["spec"]["volumes"][0]
    assert volume == {"name": "models", "persistentVolumeClaim": {"claimName": "my-repo-models", "readOnly": True}}
    assert {"name": "models", "mountPath": MODELS_DIR, "readOnly": True} in server["volumeMounts"]
    service = objects["Service"]
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert {(p["port"], p["targetPort"]) for p in service["spec"]["ports"]} == {
        (HTTP_PORT, "http"),
        (GRPC_PORT, "grpc"),
    }


def test_probes_and_metrics_point_at_routes_the_server_has(repo: Path) -> None:
    from starlette.routing import Route

    from modelport.serve.app import create_app

    app = create_app(ModelRepository(repo))
    gets = {route.path for route in app.routes if isinstance(route, Route) and "GET" in (route.methods or set())}
    for kserve in (False, True):
        manifests = build_manifests(repo, K8sOptions(kserve=kserve, storage_uri="s3://b/r" if kserve else None))
        (server,) = [c for obj in manifests.objects for c in containers(obj)]
        probes = {name: server[name]["httpGet"] for name in ("readinessProbe", "livenessProbe", "startupProbe")}
        assert probes["readinessProbe"]["path"] == READY_PATH
        assert {p["path"] for p in probes.values()} <= gets
        declared = {p["containerPort"] for p in server["ports"]} | {p["name"] for p in server["ports"]}
        assert all(p["port"] in declared for p in probes.values())
        assert HTTP_PORT in {p["containerPort"] for p in server["ports"]}
    deployment = by_kind(build_manifests(repo).objects)["Deployment"]
    assert deployment["spec"]["template"]["metadata"]["annotations"]["prometheus.io/path"] in gets
    assert METRICS_PATH in gets


@pytest.mark.parametrize("kserve", [False, True], ids=["deployment", "kserve"])
def test_container_command_runs_the_real_serve_command(
    repo: Path, monkeypatch: pytest.MonkeyPatch, kserve: bool
) -> None:
    import modelport.serve.server as server_module

    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(server_module, "run_server", lambda source, **kw: calls.append({"source": source, **kw}))
    options = K8sOptions(kserve=kserve, drain_delay=7.5, storage_uri="gs://b/r" if kserve else None)
    (server,) = [c for obj in build_manifests(repo, options).objects for c in containers(obj)]
    assert server["command"][0] == "modelport"
    args = build_parser().parse_args([*server["command"][1:], *server["args"]])
    assert args.command == "serve"
    assert args.run(args) == 0
    (call,) = calls
    assert call["source"] == (KSERVE_MODELS_DIR if kserve else MODELS_DIR)
    assert (call["host"], call["port"], call["grpc_port"]) == ("0.0.0.0", HTTP_PORT, GRPC_PORT)
    assert call["options"].drain_delay == 7.5


def test_grace_period_outlasts_the_drain_and_the_servers_own_shutdown(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import modelport.serve.server as server_module
    from modelport.serve.core import ServerOptions

    seen: list[Any] = []

    class Capture:
        def __init__(self, config: Any, core: Any, drain_delay: float) -> None:
            seen.append((config.timeout_graceful_shutdown, drain_delay))

        def run(self) -> None:
            pass

    monkeypatch.setattr(server_module, "_DrainingServer", Capture)
    monkeypatch.setattr(server_module, "_configure_logging", lambda level: None)
    server_module.run_server(repo, options=ServerOptions(drain_delay=12.0))
    assert seen == [(SERVER_SHUTDOWN_TIMEOUT_S, 12.0)]
    deployment = by_kind(build_manifests(repo, K8sOptions(drain_delay=12.0)).objects)["Deployment"]
    assert deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > 12.0 + SERVER_SHUTDOWN_TIMEOUT_S


def test_startup_probe_allows_for_model_loading(repo: Path) -> None:
    def threshold(options: K8sOptions) -> int:
        (server,) = containers(build_manifests(repo, options).objects[0])
        probe = server["startupProbe"]
        return int(probe["failureThreshold"] * probe["periodSeconds"])

    assert threshold(K8sOptions()) >= 60
    assert threshold(K8sOptions(startup_timeout=300)) == 300


def test_kserve_runtime_and_inference_service(repo: Path) -> None:
    manifests = build_manifests(repo, K8sOptions(kserve=True, replicas=2, storage_uri="s3://models/repo", gpu=True))
    objects = by_kind(manifests.objects)
    assert list(objects) == ["ServingRuntime", "InferenceService"]
    runtime, isvc = objects["ServingRuntime"], objects["InferenceService"]
    (server,) = containers(runtime)
    assert server["name"] == "kserve-container"
    assert server["args"][0] == KSERVE_MODELS_DIR
    assert [p["containerPort"] for p in server["ports"]] == [HTTP_PORT]  # Knative: one port per container
    predictor = isvc["spec"]["predictor"]
    model = predictor["model"]
    assert model["runtime"] == runtime["metadata"]["name"]
    assert model["protocolVersion"] == "v2"
    assert model["storageUri"] == "s3://models/repo"
    assert (predictor["minReplicas"], predictor["maxReplicas"]) == (2, 2)
    assert model["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert "nvidia.com/gpu" not in model["resources"]["requests"]
    assert predictor["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert server["image"].endswith("-gpu")
    assert not any("storageUri is the placeholder" in note for note in manifests.notes)

    placeholder = build_manifests(repo, K8sOptions(kserve=True))
    assert by_kind(placeholder.objects)["InferenceService"]["spec"]["predictor"]["model"]["storageUri"] == (
        STORAGE_URI_PLACEHOLDER
    )
    assert any("storageUri is the placeholder" in note for note in placeholder.notes)


def test_gpu_deployment(repo: Path) -> None:
    deployment = by_kind(build_manifests(repo, K8sOptions(gpu=True)).objects)["Deployment"]
    (server,) = containers(deployment)
    assert server["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert deployment["spec"]["template"]["spec"]["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    ]
    assert deployment["metadata"]["annotations"]["modelport/gpu-request"].startswith("1")


def test_gpu_note_names_the_models_that_would_run_on_the_cpu(repo: Path, tmp_path: Path) -> None:
    import shutil

    notes = build_manifests(repo, K8sOptions(gpu=True)).notes
    assert any("mixed, text run(s) on the CPU (execution: cpu)" in note for note in notes)
    repo = Path(shutil.copytree(repo, tmp_path / "My_Repo"))  # the fixture is shared: edit a copy
    for config in repo.glob("*/config.yaml"):
        config.write_text(config.read_text() + "\nexecution: cuda\n")
    for folder in (p for p in repo.iterdir() if p.is_dir() and not (p / "config.yaml").exists()):
        (folder / "config.yaml").write_text("execution: cuda\n")
    assert not any("execution: cpu" in note for note in build_manifests(repo, K8sOptions(gpu=True)).notes)


def test_model_image_fills_an_empty_dir(repo: Path) -> None:
    options = K8sOptions(model_image="registry.example/models:1", image="registry.example/modelport:1")
    pod = by_kind(build_manifests(repo, options).objects)["Deployment"]["spec"]["template"]["spec"]
    (init,) = pod["initContainers"]
    assert init["image"] == "registry.example/models:1"
    assert init["command"] == ["cp", "-R", f"{MODELS_DIR}/.", "/fill/"]
    volume = pod["volumes"][0]
    assert volume["name"] == "models"
    limit = int(volume["emptyDir"]["sizeLimit"].removesuffix("Mi"))
    assert limit * 2**20 >= size(repo)
    assert pod["containers"][0]["image"] == "registry.example/modelport:1"


def test_pvc_name_and_replicas(repo: Path) -> None:
    deployment = by_kind(build_manifests(repo, K8sOptions(pvc="shared-models", replicas=4, name="resnet")).objects)[
        "Deployment"
    ]
    assert deployment["metadata"]["name"] == "resnet"
    assert deployment["spec"]["replicas"] == 4
    claim = deployment["spec"]["template"]["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"]
    assert claim == "shared-models"


@pytest.mark.parametrize(("folder", "name"), [("My_Repo", "my-repo"), ("123", "m-123"), ("__", "modelport")])
def test_default_name(tmp_path: Path, folder: str, name: str) -> None:
    assert k8s.default_name(tmp_path / folder) == name


# ---------------------------------------------------------------------------------------------
# Resources from an analysis
# ---------------------------------------------------------------------------------------------
def test_requests_from_analysis(repo: Path, tmp_path: Path) -> None:
    path = write_analysis(
        tmp_path / "analysis.json",
        {"mixed": ModelSettings(instance_count=3, intra_op_threads=1), "text": ModelSettings(instance_count=1)},
        memory_mb=400.0,
    )
    deployment = by_kind(build_manifests(repo, analysis=path).objects)["Deployment"]
    (server,) = containers(deployment)
    # mixed: 2 versions × 3 × 1; text: threads unset → 8 analyzed cores // 7 instances = 1
    assert server["resources"]["requests"]["cpu"] == "7"
    assert server["resources"]["requests"]["memory"] == f"{math.ceil(400 * MEMORY_HEADROOM)}Mi"
    annotations = deployment["metadata"]["annotations"]
    assert "measured peak RSS 400 MiB (analysis.json" in annotations["modelport/memory-request"]
    assert "analysis analysis.json" in annotations["modelport/cpu-request"]
    assert "8 analyzed cores / 7 instances" in annotations["modelport/cpu-request"]


def test_analysis_of_some_models_estimates_memory(repo: Path, tmp_path: Path) -> None:
    path = write_analysis(tmp_path / "a.json", {"mixed": ModelSettings(instance_count=1, intra_op_threads=4)})
    resources = k8s.plan_resources(repo, read_analysis(path))
    assert resources.cpu == 2 * 1 * 4 + 1
    assert "does not cover every served model" in resources.memory_source
    assert "text/" not in resources.cpu_source and "text: 1 version(s)" in resources.cpu_source


def test_analysis_without_memory_estimates_it(repo: Path, tmp_path: Path) -> None:
    settings = {"mixed": ModelSettings(intra_op_threads=1), "text": ModelSettings(intra_op_threads=1)}
    path = write_analysis(tmp_path / "a.json", settings, memory_mb=None)
    assert "estimated" in k8s.plan_resources(repo, read_analysis(path)).memory_source


# ---------------------------------------------------------------------------------------------
# Validation catches generator bugs
# ---------------------------------------------------------------------------------------------
def _deployment_server(objects: list[Obj]) -> Obj:
    server: Obj = objects[0]["spec"]["template"]["spec"]["containers"][0]
    return server


def _unknown_container_field(objects: list[Obj]) -> None:
    _deployment_server(objects)["readinesProbe"] = {}


def _probe_port(objects: list[Obj]) -> None:
    _deployment_server(objects)["livenessProbe"]["httpGet"]["port"] = "htp"


def _service_target(objects: list[Obj]) -> None:
    objects[1]["spec"]["ports"][1]["targetPort"] = "grcp"


def _selector(objects: list[Obj]) -> None:
    objects[0]["spec"]["selector"]["matchLabels"]["app.kubernetes.io/instance"] = "other"


def _requests_over_limits(objects: list[Obj]) -> None:
    _deployment_server(objects)["resources"]["requests"]["memory"] = "100Gi"


def _bad_quantity(objects: list[Obj]) -> None:
    _deployment_server(objects)["resources"]["requests"]["cpu"] = "two"


def _bad_name(objects: list[Obj]) -> None:
    objects[1]["metadata"]["name"] = "My_Service"


def _wrong_type(objects: list[Obj]) -> None:
    objects[0]["spec"]["replicas"] = "3"


@pytest.mark.parametrize(
    ("corrupt", "message"),
    [
        (_unknown_container_field, r"Deployment 'my-repo': spec\.template\.spec\.containers\.0: .*'readinesProbe'"),
        (_probe_port, r"livenessProbe uses port 'htp', which the container does not declare"),
        (_service_target, r"Service 'my-repo': port 'grpc' targets 'grcp', which the pods do not declare"),
        (_selector, r"does not match the pod template's labels"),
        (_requests_over_limits, r"resources\.requests\.memory 100Gi is over the limit"),
        (_bad_quantity, r"resources\.requests\.cpu 'two' is not a Kubernetes quantity"),
        (_bad_name, r"name 'My_Service' is not a DNS-1035 label"),
        (_wrong_type, r"spec\.replicas: '3' is not of type 'integer'"),
    ],
)
def test_validate_rejects_broken_deployments(repo: Path, corrupt: Callable[[list[Obj]], None], message: str) -> None:
    objects = copy.deepcopy(build_manifests(repo).objects)
    validate(objects)
    corrupt(objects)
    with pytest.raises(ConfigError, match=message):
        validate(objects)


def _runtime_name(objects: list[Obj]) -> None:
    objects[1]["spec"]["predictor"]["model"]["runtime"] = "triton"


def _unknown_predictor_field(objects: list[Obj]) -> None:
    objects[1]["spec"]["predictor"]["minReplica"] = 1


def _bad_protocol(objects: list[Obj]) -> None:
    objects[0]["spec"]["protocolVersions"] = ["v1"]


def _runtime_container_field(objects: list[Obj]) -> None:
    objects[0]["spec"]["containers"][0]["port"] = 8000


def _bad_storage_uri(objects: list[Obj]) -> None:
    objects[1]["spec"]["predictor"]["model"]["storageUri"] = "/local/repo"


@pytest.mark.parametrize(
    ("corrupt", "message"),
    [
        (_runtime_name, r"runtime 'triton' is not among the ServingRuntimes \(my-repo-runtime\)"),
        (_unknown_predictor_field, r"spec\.predictor: .*'minReplica' was unexpected.*KServe schema"),
        (_bad_protocol, r"protocol 'v2' is not one its runtime speaks"),
        (_runtime_container_field, r"spec\.containers\.0: .*'port' was unexpected"),
        (_bad_storage_uri, r"storageUri: '/local/repo' does not match"),
    ],
)
def test_validate_rejects_broken_kserve_objects(repo: Path, corrupt: Callable[[list[Obj]], None], message: str) -> None:
    objects = copy.deepcopy(build_manifests(repo, K8sOptions(kserve=True, storage_uri="s3://b/r")).objects)
    validate(objects)
    corrupt(objects)
    with pytest.raises(ConfigError, match=message):
        validate(objects)


def test_validation_needs_kubernetes_validate(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.import_module

    def without(name: str, package: str | None = None) -> Any:
        if name.startswith("kubernetes_validate"):
            raise ImportError(f"No module named {name!r}")
        return real(name, package)

    monkeypatch.setattr(importlib, "import_module", without)
    assert not k8s.validation_available()
    with pytest.raises(ConfigError, match=r"needs the kubernetes-validate package .* pip install kubernetes-validate"):
        build_manifests(repo)
    manifests = build_manifests(repo, check=False)
    assert not manifests.validated
    assert "NOT validated" in manifests.to_yaml()


def test_unsupported_kubernetes_version(repo: Path) -> None:
    objects = build_manifests(repo).objects
    with pytest.raises(ConfigError, match=r"no strict schemas for Kubernetes 9\.99"):
        validate(objects, kubernetes_version="9.99")


# ---------------------------------------------------------------------------------------------
# Refusals
# ---------------------------------------------------------------------------------------------
def test_missing_and_invalid_repositories(tmp_path: Path) -> None:
    with pytest.raises(RepositoryError, match="does not exist"):
        build_manifests(tmp_path / "nowhere")
    model = write_version(tmp_path / "repo", "m", 1, text_model())
    with pytest.raises(RepositoryError, match="is a file; Kubernetes manifests mount a repository folder"):
        build_manifests(model)
    (tmp_path / "repo" / "m" / "2").mkdir()
    with pytest.raises(RepositoryError, match=r"version folder .*2' has no model\.onnx"):
        build_manifests(tmp_path / "repo")
    (tmp_path / "empty").mkdir()
    with pytest.raises(RepositoryError, match="has no model folders"):
        build_manifests(tmp_path / "empty")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"replicas": 0}, r"replicas must be an integer >= 1, got 0"),
        ({"replicas": -2}, r"replicas must be an integer >= 1, got -2"),
        ({"replicas": 1.5}, r"replicas must be an integer >= 1, got 1\.5"),
        ({"name": "My_Model"}, r"name 'My_Model' is not a valid Kubernetes name"),
        ({"name": "a" * 41}, r"at most 40 characters"),
        ({"drain_delay": -1.0}, r"drain delay must be 0\.\.600 seconds, got -1\.0"),
        ({"startup_timeout": 0.0}, r"startup timeout must be a positive number of seconds"),
        ({"image": "my image"}, r"image 'my image' is not an image reference"),
        ({"pvc": "a", "model_image": "b"}, r"either a PVC or a model image"),
        ({"kserve": True, "pvc": "claim"}, r"with KServe the repository comes from the storage URI"),
        ({"storage_uri": "s3://b/r"}, r"a storage URI is for KServe manifests — add --kserve"),
        ({"kserve": True, "storage_uri": "ftp://b/r"}, r"storage URI 'ftp://b/r' is not one KServe's storage"),
        ({"pvc": "Bad_Claim"}, r"PVC claim name 'Bad_Claim' is not a valid Kubernetes name"),
    ],
)
def test_bad_options(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        K8sOptions(**options)


def test_bad_analysis_files(repo: Path, tmp_path: Path) -> None:
    settings = {"mixed": ModelSettings(), "text": ModelSettings()}
    with pytest.raises(ConfigError, match=r"analysis file '.*missing\.json' does not exist — run `modelport analyze"):
        build_manifests(repo, analysis=tmp_path / "missing.json")
    (tmp_path / "garbage.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(ConfigError, match="is not readable JSON"):
        read_analysis(tmp_path / "garbage.json")
    (tmp_path / "other.json").write_text(json.dumps({"cores": 0, "best": {"settings": {}}}), encoding="utf-8")
    with pytest.raises(
        ConfigError, match=r"is not what `modelport analyze` writes: cores: .*best\.label: Field required"
    ):
        read_analysis(tmp_path / "other.json")
    infeasible = write_analysis(tmp_path / "infeasible.json", settings, feasible=False)
    with pytest.raises(ConfigError, match="has no best configuration"):
        read_analysis(infeasible)
    unconfirmed = write_analysis(tmp_path / "unconfirmed.json", settings, held_up=False)
    with pytest.raises(ConfigError, match="did not hold up when measured again"):
        read_analysis(unconfirmed)
    foreign = write_analysis(tmp_path / "foreign.json", {"resnet": ModelSettings()})
    with pytest.raises(ConfigError, match=r"has settings for 'resnet', which repository .* does not serve"):
        build_manifests(repo, analysis=foreign)


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------
def test_write_one_file_per_object_and_refuse_to_overwrite(repo: Path, tmp_path: Path) -> None:
    manifests = build_manifests(repo)
    out = tmp_path / "k8s"
    paths = write_manifests(manifests, out)
    assert [p.name for p in paths] == ["deployment.yaml", "service.yaml"]
    assert [yaml.safe_load(p.read_text(encoding="utf-8")) for p in paths] == manifests.objects
    assert sorted(p.name for p in out.iterdir()) == ["deployment.yaml", "service.yaml"]  # no temporary files left
    before = paths[0].read_text(encoding="utf-8")
    with pytest.raises(ModelSaveError, match=r"not overwriting .*deployment\.yaml, .*service\.yaml — pass --force"):
        write_manifests(build_manifests(repo, K8sOptions(replicas=5)), out)
    assert paths[0].read_text(encoding="utf-8") == before
    write_manifests(build_manifests(repo, K8sOptions(replicas=5)), out, force=True)
    assert yaml.safe_load(paths[0].read_text(encoding="utf-8"))["spec"]["replicas"] == 5


def test_write_one_multi_document_file(repo: Path, tmp_path: Path) -> None:
    manifests = build_manifests(repo, K8sOptions(kserve=True, storage_uri="s3://b/r"))
    (path,) = write_manifests(manifests, tmp_path / "sub" / "kserve.yaml")
    text = path.read_text(encoding="utf-8")
    assert text.startswith("# Generated by modelport k8s")
    assert [doc for doc in yaml.safe_load_all(text) if doc] == manifests.objects
    with pytest.raises(ModelSaveError, match="not overwriting"):
        write_manifests(manifests, path)
    (tmp_path / "file").write_text("x", encoding="utf-8")
    with pytest.raises(ModelSaveError, match=r"it is a file — give a folder or a \.yaml file"):
        write_manifests(manifests, tmp_path / "file")


# ---------------------------------------------------------------------------------------------
# The Dockerfiles
# ---------------------------------------------------------------------------------------------
def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile: continuation lines joined, comments dropped, the
    default of each global ARG substituted."""
    result: list[tuple[str, str]] = []
    current = ""
    for line in path.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        keyword, _, rest = (current + stripped).partition(" ")
        result.append((keyword.upper(), rest.strip()))
        current = ""
    assert not current, f"{path} ends inside a continued line"
    args = {}
    for keyword, rest in result:
        if keyword == "FROM":
            break
        if keyword == "ARG" and "=" in rest:
            name, _, default = rest.partition("=")
            args[name] = default
    for name, default in args.items():
        result = [(k, r.replace("${" + name + "}", default)) for k, r in result]
    return result


def final_stage(steps: list[tuple[str, str]]) -> list[tuple[str, str]]:
    last = max(i for i, (keyword, _) in enumerate(steps) if keyword == "FROM")
    return steps[last:]


def only(steps: list[tuple[str, str]], keyword: str) -> str:
    (value,) = [rest for k, rest in steps if k == keyword]
    return value


DOCKERFILES = {"cpu": ROOT / "docker" / "Dockerfile", "gpu": ROOT / "docker" / "Dockerfile.gpu"}


@pytest.mark.parametrize("variant", sorted(DOCKERFILES))
def test_dockerfile_matches_the_server_and_the_manifests(variant: str, monkeypatch: pytest.MonkeyPatch) -> None:
    steps = final_stage(instructions(DOCKERFILES[variant]))
    base = steps[0][1]
    if variant == "cpu":
        assert base.startswith("python:3.11-slim")
    else:
        assert base.startswith("nvidia/cuda:") and "-runtime-" in base
    # Everything is installed as root, then the image runs as the manifests' numeric non-root user.
    keywords = [k for k, _ in steps]
    user = only(steps, "USER")
    assert user.split(":")[0] == str(RUN_AS_USER)
    assert keywords.index("USER") > max(i for i, k in enumerate(keywords) if k == "RUN")
    assert {int(p) for p in only(steps, "EXPOSE").split()} == {HTTP_PORT, GRPC_PORT}
    entrypoint = json.loads(only(steps, "ENTRYPOINT"))
    cmd = json.loads(only(steps, "CMD"))
    assert entrypoint[0] == "modelport"
    args = build_parser().parse_args([*entrypoint[1:], *cmd])
    assert (args.command, args.source, args.host) == ("serve", MODELS_DIR, "0.0.0.0")
    assert (args.port, args.grpc_port) == (HTTP_PORT, GRPC_PORT)
    import modelport.serve.server as server_module

    monkeypatch.setattr(server_module, "run_server", lambda source, **kw: None)
    assert args.run(args) == 0  # the flag values pass the serve command's own checks
    check_healthcheck(only(steps, "HEALTHCHECK"), monkeypatch)


def check_healthcheck(healthcheck: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The health check is Python calling the ready route the server really has: 200 → exit 0, else not."""
    options, _, command = healthcheck.partition("CMD ")
    assert "--start-period=" in options
    program, flag, code = json.loads(command)
    assert (program, flag) == ("python", "-c")
    url = f"http://127.0.0.1:{HTTP_PORT}{READY_PATH}"
    asked: list[str] = []

    class Response:
        status = 200

    def ready(target: str, timeout: float) -> Response:
        asked.append(target)
        return Response()

    def not_ready(target: str, timeout: float) -> Response:
        raise urllib.error.HTTPError(target, 400, "not ready", None, None)  # type: ignore[arg-type]

    monkeypatch.setattr(urllib.request, "urlopen", ready)
    with pytest.raises(SystemExit) as exit_info:
        exec(code, {})
    assert exit_info.value.code == 0
    assert asked == [url]
    monkeypatch.setattr(urllib.request, "urlopen", not_ready)
    with pytest.raises(urllib.error.HTTPError, match="not ready"):
        exec(code, {})


def test_dockerfiles_install_what_they_should() -> None:
    assert "gpu" in (importlib.metadata.metadata("modelport").get_all("Provides-Extra") or [])
    gpu_runs = " ".join(rest for k, rest in final_stage(instructions(DOCKERFILES["gpu"])) if k == "RUN")
    assert "[gpu]" in gpu_runs
    assert "pip uninstall -y onnxruntime" in gpu_runs  # the CPU build must not shadow onnxruntime-gpu
    cpu_runs = " ".join(rest for k, rest in final_stage(instructions(DOCKERFILES["cpu"])) if k == "RUN")
    assert "/wheels/modelport-" in cpu_runs and "[gpu]" not in cpu_runs
    ignored = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for path in DOCKERFILES.values():
        for keyword, rest in instructions(path):
            if keyword == "COPY" and not rest.startswith("--from"):
                *sources, _ = rest.split()
                for source in sources:
                    assert (ROOT / source).exists(), f"{path.name} copies {source}, which does not exist"
                    assert not any(fnmatch.fnmatch(source, pattern) for pattern in ignored), (
                        f"{path.name} copies {source}, which .dockerignore leaves out"
                    )


def test_serve_help_knows_every_flag_the_manifests_pass() -> None:
    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    serve = subparsers.choices["serve"]
    flags = {s for action in serve._actions for s in action.option_strings}
    args = k8s.server_args(MODELS_DIR, 5.0)
    assert {a for a in args if a.startswith("--")} <= flags
