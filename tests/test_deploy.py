"""``scorepack deploy`` and ``scorepack delete`` with the real azureml-core (SDK v1) and
azure-ai-ml (SDK v2), answered at the HTTP transport by recorded Azure responses
(tests/azure_http.py, tests/recordings/). The tests check the requests the SDKs really
send: the bodies that carry the settings batching depends on, the files uploaded, the
clean-up calls — and that a dry run sends nothing at all."""

from __future__ import annotations

import io
import json
import logging
import runpy
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from azure_http import (
    RESOURCE_GROUP,
    SUBSCRIPTION,
    WORKSPACE,
    FakeCredential,
    RecordedAzure,
    install,
    v1_auth,
)
from deploy_packages import (
    BACKEND_WHEEL,
    GPU_IMAGE,
    SCOREPACK_WHEEL,
    SEVERAL,
    make_package,
    make_several_package,
    make_spec,
)
from scorepack.errors import DeployError
from scorepack.hookspecs import hookimpl
from scorepack.plugins import make_plugin_manager, set_plugin_manager
from scorepack.targets import DeployOptions
from scorepack.targets.azureml_v1 import AzureMLV1Target
from scorepack.targets.azureml_v2 import AzureMLV2Target
from scorepack.targets.azureml_v2_sdk import _FILTER

pytestmark = [
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::PendingDeprecationWarning"),
    pytest.mark.filterwarnings("ignore::FutureWarning"),
    pytest.mark.filterwarnings("ignore:.*marshmallow 4.*"),
]

V1_DEPLOY = ("arm", "v1_compute_exists", "v1_artifacts", "blob_storage", "v1_model", "v1_service")
V2_DEPLOY = ("arm", "v2_compute", "v2_endpoint", "v2_assets", "blob_storage", "v2_deployment")
URI_V1 = "http://20.73.10.20:80/api/v1/service/resnet50-demo/score"
URI_V2 = "https://resnet50-demo.westeurope.inference.ml.azure.com/score"
KEYS = ("recorded-primary-key-0000", "recorded-secondary-key-1111")
AZURE_HOSTS = {
    "management.azure.com",
    "westeurope.api.azureml.ms",
    "westeurope.modelmanagement.azureml.net",
    "scorepackstorage.blob.core.windows.net",
}


@pytest.fixture
def package(tmp_path: Path) -> Path:
    return make_package(tmp_path / "resnet50-demo")


@pytest.fixture
def workspace_config(tmp_path: Path) -> Path:
    path = tmp_path / "config.json"
    path.write_text(
        json.dumps(
            {
                "subscription_id": SUBSCRIPTION,
                "resource_group": RESOURCE_GROUP,
                "workspace_name": WORKSPACE,
            }
        )
    )
    return path


@pytest.fixture
def v1() -> AzureMLV1Target:
    pytest.importorskip("azureml.core")
    return AzureMLV1Target(auth=v1_auth(), poll_interval_s=0)


@pytest.fixture
def v2(monkeypatch: pytest.MonkeyPatch) -> AzureMLV2Target:
    pytest.importorskip("azure.ai.ml")
    from azure.ai.ml.constants._common import LROConfigurations

    # the SDK polls long-running operations every 5 s; the recordings answer at once
    monkeypatch.setattr(LROConfigurations, "POLL_INTERVAL", 0)
    return AzureMLV2Target(credential=FakeCredential(), poll_interval_s=0)


def _deploy(target: Any, package: Path, **options: Any) -> tuple[Any, list[str]]:
    progress: list[str] = []
    result = target.deploy(package, make_spec(), DeployOptions(**options), progress.append)
    return result, progress


def _checked(azure: RecordedAzure) -> None:
    assert azure.unmatched == [], [f"{r.method} {r.url}" for r in azure.unmatched]
    assert azure.hosts() <= AZURE_HOSTS


# --- SDK v1 --------------------------------------------------------------------------------


def test_v1_deploy_registers_uploads_and_creates_the_aks_service(
    monkeypatch: pytest.MonkeyPatch, package: Path, workspace_config: Path, v1: AzureMLV1Target
) -> None:
    azure = install(monkeypatch, *V1_DEPLOY)
    result, progress = _deploy(v1, package, workspace_config=workspace_config)
    _checked(azure)
    assert (result.service_name, result.scoring_uri, result.keys) == ("resnet50-demo", URI_V1, ())
    assert "get_keys()" in result.keys_hint
    assert not azure.find("POST", r"/listkeys$")  # keys are never read unless asked for
    assert any("Transitioning" in line for line in progress) and any(
        "Healthy" in line for line in progress
    )

    # every Azure ML call carried the credential's token; azureml-core fetches the
    # workspace's public discovery document without one (once: install() gives each test
    # an empty discovery cache, so this no longer depends on what earlier tests left)
    token = v1.auth._get_arm_token()
    discovery = azure.find("GET", r"/discovery$")
    assert len(discovery) == 1 and "Authorization" not in discovery[0].headers
    for request in azure.sent:
        if (
            request.host != "scorepackstorage.blob.core.windows.net"
            and "/metadata/" not in request.path
            and request not in discovery
        ):
            assert request.headers.get("Authorization") == f"Bearer {token}", request.url

    # the model directory went up byte for byte and was registered with the package's tags
    uploaded = {
        url.split("/model/", 1)[1]: data for url, data in azure.blobs.items() if "/model/" in url
    }
    assert uploaded == {
        name: (package / "model" / name).read_bytes() for name in make_spec().model_files
    }
    model = azure.one("POST", r"/models$").json()
    assert model["name"] == "resnet50-demo"
    assert model["kvTags"]["backend"] == "tensorflow" and model["kvTags"]["device"] == "cuda"

    # the wheels went up as private pip wheels, under content-tagged names
    wheel_blobs = {
        url.rsplit("/", 1)[1]: data for url, data in azure.blobs.items() if url.endswith(".whl")
    }
    assert sorted(wheel_blobs.values()) == sorted(
        (package / "wheels" / n).read_bytes() for n in (SCOREPACK_WHEEL, BACKEND_WHEEL)
    )
    assert all(name.split("-")[2][0].isdigit() for name in wheel_blobs)

    create = azure.one("POST", r"/services$").json()
    assert create["name"] == "resnet50-demo" and create["computeType"] == "AKS"
    assert create["computeName"] == "gpu-aks"
    assert create["maxConcurrentRequestsPerContainer"] == 32
    assert create["numReplicas"] == 1 and create["autoScaler"]["autoscaleEnabled"] is False
    assert create["containerResourceRequirements"]["gpu"] == 1
    assert create["containerResourceRequirements"]["cpu"] == 2.0
    assert create["containerResourceRequirements"]["memoryInGB"] == 8.0
    assert create["authEnabled"] is True and create["scoringTimeoutMs"] == 60000
    assert create["livenessProbeRequirements"] == {
        "initialDelaySeconds": 120,
        "periodSeconds": 10,
        "failureThreshold": 6,
        "successThreshold": 1,
        "timeoutSeconds": 5,
    }
    request = create["environmentImageRequest"]
    assert request["modelIds"] == ["resnet50-demo:3"]
    env = request["environment"]
    assert env["docker"]["baseImage"] == GPU_IMAGE
    assert (
        env["environmentVariables"]["GUNICORN_CMD_ARGS"]
        == "--threads 33 --worker-class scorepack.azureml.worker.BufferingThreadWorker"
    )
    assert env["environmentVariables"]["WORKER_COUNT"] == "1"
    assert env["environmentVariables"]["AZUREML_ENTRY_SCRIPT"] == "resnet50-demo/score.py"
    pip = next(
        d["pip"] for d in env["python"]["condaDependencies"]["dependencies"] if isinstance(d, dict)
    )
    assert "azureml-inference-server-http==1.5.1" in pip
    assert not [line for line in pip if "./wheels/" in line]
    wheel_urls = [line for line in pip if line.endswith(".whl")]
    assert len(wheel_urls) == 2
    assert all(
        url.startswith("https://scorepackstorage.blob.core.windows.net/") for url in wheel_urls
    )

    # the source directory Azure ML unpacks next to score.py: no model, no wheels
    source = next(data for url, data in azure.blobs.items() if url.endswith(".tar.gz"))
    names = tarfile.open(fileobj=io.BytesIO(source)).getnames()
    assert "resnet50-demo/score.py" in names and "resnet50-demo/scorepack.yaml" in names
    assert not [n for n in names if n.startswith(("resnet50-demo/model", "resnet50-demo/wheels"))]


def test_v1_keys_are_read_only_when_asked_for(
    monkeypatch: pytest.MonkeyPatch, package: Path, workspace_config: Path, v1: AzureMLV1Target
) -> None:
    azure = install(monkeypatch, *V1_DEPLOY)
    result, _ = _deploy(v1, package, workspace_config=workspace_config, show_keys=True)
    _checked(azure)
    assert result.keys == KEYS
    assert KEYS[0] not in repr(result)
    azure.one("POST", r"/services/resnet50-demo/listkeys$")


def test_v1_provision_creates_a_gpu_aks_cluster(
    monkeypatch: pytest.MonkeyPatch, package: Path, workspace_config: Path, v1: AzureMLV1Target
) -> None:
    azure = install(
        monkeypatch,
        "arm",
        "v1_compute_create",
        "v1_artifacts",
        "blob_storage",
        "v1_model",
        "v1_service",
    )
    result, progress = _deploy(
        v1,
        package,
        workspace_config=workspace_config,
        provision=True,
        overrides={"vm_size": "Standard_NC8as_T4_v3"},
    )
    _checked(azure)
    assert result.scoring_uri == URI_V1
    body = azure.one("PUT", r"/computes/gpu-aks$").json()
    assert body["properties"]["computeType"] == "AKS"
    assert body["properties"]["properties"] == {
        "agentCount": 1,
        "agentVmSize": "Standard_NC8as_T4_v3",
        "clusterPurpose": "DevTest",
    }
    assert body["location"] == "westeurope"
    assert any("Compute gpu-aks: Creating" in line for line in progress)
    assert any("Compute gpu-aks: Succeeded" in line for line in progress)


def test_v1_missing_compute_without_provision_stops_before_uploading(
    monkeypatch: pytest.MonkeyPatch, package: Path, workspace_config: Path, v1: AzureMLV1Target
) -> None:
    azure = install(monkeypatch, "arm", "v1_compute_create", "v1_artifacts", "blob_storage")
    with pytest.raises(DeployError, match="--provision"):
        _deploy(v1, package, workspace_config=workspace_config)
    assert not azure.find("POST", r"/artifacts/") and not azure.blobs


def test_v1_failed_service_reports_azures_error(
    monkeypatch: pytest.MonkeyPatch, package: Path, workspace_config: Path, v1: AzureMLV1Target
) -> None:
    azure = install(monkeypatch, "v1_service_failed", *V1_DEPLOY)
    with pytest.raises(DeployError, match=r"ended Failed.*IntegrityError") as info:
        _deploy(v1, package, workspace_config=workspace_config)
    assert "get_logs()" in str(info.value)
    _checked(azure)


def test_v1_delete_removes_the_service_and_the_cluster(
    monkeypatch: pytest.MonkeyPatch, workspace_config: Path, v1: AzureMLV1Target
) -> None:
    azure = install(monkeypatch, "arm", "v1_compute_exists", "v1_delete")
    progress: list[str] = []
    v1.delete(
        make_spec(),
        DeployOptions(workspace_config=workspace_config, delete_compute=True),
        progress.append,
    )
    _checked(azure)
    azure.one("DELETE", r"/services/resnet50-demo$")
    compute = azure.one("DELETE", r"/computes/gpu-aks$")
    assert compute.query["underlyingResourceAction"] == ["delete"]
    assert any("Deleted service resnet50-demo" in line for line in progress)


def test_v1_generated_deploy_script_deploys_the_same_service(
    monkeypatch: pytest.MonkeyPatch, package: Path, workspace_config: Path, tmp_path: Path
) -> None:
    pytest.importorskip("azureml.core")
    import azureml.core.workspace

    azure = install(monkeypatch, *V1_DEPLOY)
    # the script signs in as azureml-core does by default; here that login is the fake token
    monkeypatch.setattr(azureml.core.workspace, "InteractiveLoginAuthentication", v1_auth)
    monkeypatch.chdir(tmp_path)  # the script changes directory; this puts it back afterwards
    script = package / "deploy" / "azureml-v1" / "deploy.py"
    monkeypatch.setattr(
        sys,
        "argv",
        [str(script), "--workspace-config", str(workspace_config), "--poll-seconds", "0"],
    )
    out = io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    runpy.run_path(str(script), run_name="__main__")
    _checked(azure)
    assert f"Scoring URI: {URI_V1}" in out.getvalue()
    create = azure.one("POST", r"/services$").json()
    assert create["maxConcurrentRequestsPerContainer"] == 32
    assert create["containerResourceRequirements"]["gpu"] == 1
    env = create["environmentImageRequest"]["environment"]
    assert (
        env["environmentVariables"]["GUNICORN_CMD_ARGS"]
        == "--threads 33 --worker-class scorepack.azureml.worker.BufferingThreadWorker"
    )
    pip = next(
        d["pip"] for d in env["python"]["condaDependencies"]["dependencies"] if isinstance(d, dict)
    )
    assert len([line for line in pip if line.startswith("https://") and line.endswith(".whl")]) == 2


# --- SDK v2 --------------------------------------------------------------------------------


def test_v2_deploy_creates_the_endpoint_uploads_and_deploys(
    monkeypatch: pytest.MonkeyPatch, package: Path, workspace_config: Path, v2: AzureMLV2Target
) -> None:
    azure = install(monkeypatch, *V2_DEPLOY)
    result, progress = _deploy(v2, package, workspace_config=workspace_config)
    _checked(azure)
    assert (result.service_name, result.scoring_uri, result.keys) == ("resnet50-demo", URI_V2, ())
    assert "az ml online-endpoint get-credentials --name resnet50-demo" in result.keys_hint
    assert not azure.find("POST", r"/listKeys$")
    assert ("https://management.azure.com/.default",) in v2.credential.scopes
    for request in azure.sent:
        if request.host == "management.azure.com":
            assert request.headers["Authorization"].startswith("Bearer ey"), request.url

    endpoint_puts = azure.find("PUT", r"/onlineEndpoints/resnet50-demo$")
    assert len(endpoint_puts) == 2
    first, traffic = (r.json() for r in endpoint_puts)
    assert first["properties"]["authMode"] == "Key"
    assert first["properties"]["compute"].endswith("/computes/gpu-aks")
    assert traffic["properties"]["traffic"] == {"blue": 100}

    # the code upload (the package root) leaves the model out, as .amlignore says
    code = {url.split("/resnet50-demo/", 1)[1] for url in azure.blobs if "/tmp-codes-" in url}
    assert {
        "score.py",
        "scorepack.yaml",
        "environment.yml",
        "deploy/azureml-v2/Dockerfile",
        f"wheels/{SCOREPACK_WHEEL}",
        f"wheels/{BACKEND_WHEEL}",
    } <= code
    assert not [p for p in code if p.startswith("model/")]
    # the model is its own asset, uploaded once, byte for byte
    model = {
        url.split("/model/", 1)[1]: data
        for url, data in azure.blobs.items()
        if "/LocalUpload/" in url and "/model/" in url
    }
    assert model == {
        name: (package / "model" / name).read_bytes() for name in make_spec().model_files
    }
    model_version = azure.one("PUT", r"/models/resnet50-demo/versions/1$").json()
    assert model_version["properties"]["modelUri"].endswith("/model")
    # the image is built from the package with the package's Dockerfile
    env = azure.one("PUT", r"/environments/scorepack-resnet50-demo/versions/1$").json()
    assert env["properties"]["build"]["dockerfilePath"] == "deploy/azureml-v2/Dockerfile"
    context = {
        url.split("/resnet50-demo/", 1)[1]
        for url in azure.blobs
        if "/LocalUpload/" in url and "/model/" not in url and "/tmp-codes-" not in url
    }
    assert {
        "environment.yml",
        "deploy/azureml-v2/Dockerfile",
        f"wheels/{SCOREPACK_WHEEL}",
    } <= context

    body = azure.one("PUT", r"/onlineEndpoints/resnet50-demo/deployments/blue$").json()
    props = body["properties"]
    assert props["endpointComputeType"] == "Kubernetes"
    assert props["requestSettings"] == {
        "maxConcurrentRequestsPerInstance": 32,
        "requestTimeout": "PT1M",
    }
    assert props["containerResourceRequirements"] == {
        "containerResourceRequests": {"cpu": "2", "memory": "8Gi", "gpu": "1"},
        "containerResourceLimits": {"cpu": "2", "memory": "8Gi", "gpu": "1"},
    }
    assert (
        props["environmentVariables"]["GUNICORN_CMD_ARGS"]
        == "--threads 33 --worker-class scorepack.azureml.worker.BufferingThreadWorker"
    )
    assert props["environmentVariables"]["WORKER_COUNT"] == "1"
    assert (
        props["livenessProbe"]["initialDelay"] == "PT2M"
        and props["readinessProbe"]["period"] == "PT10S"
    )
    assert props["codeConfiguration"]["scoringScript"] == "score.py"
    assert props["model"].endswith("/models/resnet50-demo/versions/1")
    assert body["sku"]["capacity"] == 1
    # the SDK polls on its own thread: whether an InProgress state is caught before it
    # reaches Succeeded depends on thread timing (it failed once under load): only the end
    states = [line for line in progress if line.startswith("Deployment blue: ")]
    assert states and "Succeeded" in states[-1], states


def test_v2_deploy_quiets_azure_ai_ml_without_touching_other_logging(
    monkeypatch: pytest.MonkeyPatch,
    package: Path,
    workspace_config: Path,
    v2: AzureMLV2Target,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # regression: the SDK's INFO chatter used to be filtered at handlers shared with the
    # root logger, which then dropped every INFO line of the process (the server's request log)
    caplog.set_level(logging.INFO, logger="scorepack.server")
    install(monkeypatch, *V2_DEPLOY)
    _deploy(v2, package, workspace_config=workspace_config)
    logging.getLogger("scorepack.server").info("after-deploy")
    assert "after-deploy" in [r.getMessage() for r in caplog.records]
    assert all(_FILTER not in h.filters for h in logging.getLogger().handlers)


def test_v2_overrides_reach_the_deployment_and_keys_only_when_asked(
    monkeypatch: pytest.MonkeyPatch, package: Path, workspace_config: Path, v2: AzureMLV2Target
) -> None:
    azure = install(monkeypatch, *V2_DEPLOY)
    result, _ = _deploy(
        v2,
        package,
        workspace_config=workspace_config,
        show_keys=True,
        overrides={"replicas": 2, "gpu_cores": 2, "memory_gb": 16, "max_concurrent_requests": 64},
    )
    _checked(azure)
    assert result.keys == KEYS
    body = azure.one("PUT", r"/deployments/blue$").json()
    assert body["sku"]["capacity"] == 2
    assert body["properties"]["requestSettings"]["maxConcurrentRequestsPerInstance"] == 64
    assert body["properties"]["containerResourceRequirements"]["containerResourceLimits"] == {
        "cpu": "2",
        "memory": "16Gi",
        "gpu": "2",
    }


def test_v2_missing_compute_says_to_attach_a_cluster(
    monkeypatch: pytest.MonkeyPatch, package: Path, workspace_config: Path, v2: AzureMLV2Target
) -> None:
    azure = install(monkeypatch, "arm", "v2_compute_missing")
    with pytest.raises(DeployError, match="attach") as info:
        _deploy(v2, package, workspace_config=workspace_config)
    assert "--sdk v1 --provision" in str(info.value)
    assert not azure.find("PUT", r"/onlineEndpoints/")


def test_v2_refuses_a_v1_aks_compute_and_provisioning(
    monkeypatch: pytest.MonkeyPatch, package: Path, workspace_config: Path, v2: AzureMLV2Target
) -> None:
    azure = install(monkeypatch, "arm", "v2_compute_aks")
    with pytest.raises(DeployError, match="--sdk v1"):
        _deploy(v2, package, workspace_config=workspace_config)
    with pytest.raises(DeployError, match="--provision works with --sdk v1 only"):
        _deploy(v2, package, workspace_config=workspace_config, provision=True)
    assert not azure.find("PUT", r"/onlineEndpoints/")


def test_v2_failed_deployment_reports_azures_error(
    monkeypatch: pytest.MonkeyPatch, package: Path, workspace_config: Path, v2: AzureMLV2Target
) -> None:
    azure = install(monkeypatch, "v2_deployment_failed", *V2_DEPLOY)
    with pytest.raises(DeployError, match="Liveness probe failed"):
        _deploy(v2, package, workspace_config=workspace_config)
    _checked(azure)
    # no traffic was sent to a deployment that never came up
    assert len(azure.find("PUT", r"/onlineEndpoints/resnet50-demo$")) == 1


def test_v2_delete_removes_the_endpoint_and_detaches_the_compute(
    monkeypatch: pytest.MonkeyPatch, workspace_config: Path, v2: AzureMLV2Target
) -> None:
    azure = install(monkeypatch, "arm", "v2_compute", "v2_delete")
    progress: list[str] = []
    v2.delete(
        None,
        DeployOptions(
            workspace_config=workspace_config, service_name="resnet50-demo", delete_compute=True
        ),
        progress.append,
    )
    _checked(azure)
    azure.one("DELETE", r"/onlineEndpoints/resnet50-demo$")
    assert azure.one("DELETE", r"/computes/gpu-aks$").query["underlyingResourceAction"] == [
        "Detach"
    ]
    assert any("az aks delete --ids /subscriptions/" in line for line in progress)


# --- dry runs --------------------------------------------------------------------------------


def test_v1_dry_run_writes_the_requests_and_sends_none(
    monkeypatch: pytest.MonkeyPatch,
    package: Path,
    workspace_config: Path,
    tmp_path: Path,
    v1: AzureMLV1Target,
) -> None:
    azure = install(monkeypatch)
    result, _ = _deploy(
        v1,
        package,
        workspace_config=workspace_config,
        dry_run=True,
        dry_run_dir=tmp_path / "dry",
        provision=True,
    )
    assert azure.sent == []
    assert result.dry_run and result.scoring_uri is None
    names = [p.name for p in result.written]
    assert names == [
        "01-workspace.json",
        "02-compute.json",
        "03-compute-create.json",
        "04-model-register.json",
        "05-private-wheels.json",
        "06-inference-source.json",
        "07-service-create.json",
    ]
    create = json.loads((tmp_path / "dry" / "07-service-create.json").read_text())
    assert create["method"] == "POST" and create["url"].endswith(
        f"/workspaces/{WORKSPACE}/services"
    )
    assert create["body"]["maxConcurrentRequestsPerContainer"] == 32
    assert (
        create["body"]["environmentImageRequest"]["environment"]["docker"]["baseImage"] == GPU_IMAGE
    )
    compute = json.loads((tmp_path / "dry" / "03-compute-create.json").read_text())
    assert compute["body"]["properties"]["properties"]["agentVmSize"] == "Standard_NC4as_T4_v3"
    source = json.loads((tmp_path / "dry" / "06-inference-source.json").read_text())
    assert not [f for f in source["files"] if f["path"].startswith("model/")]


def test_v2_dry_run_writes_the_requests_and_sends_none(
    monkeypatch: pytest.MonkeyPatch, package: Path, tmp_path: Path, v2: AzureMLV2Target
) -> None:
    azure = install(monkeypatch)
    monkeypatch.chdir(tmp_path)  # no workspace config anywhere: the URLs carry placeholders
    result, _ = _deploy(v2, package, dry_run=True, dry_run_dir=tmp_path / "dry")
    assert azure.sent == []
    names = [p.name for p in result.written]
    assert names == [
        "01-compute.json",
        "02-endpoint-create.json",
        "03-uploads.json",
        "04-deployment-create.json",
        "05-endpoint-traffic.json",
    ]
    deployment = json.loads((tmp_path / "dry" / "04-deployment-create.json").read_text())
    assert "<subscription id>" in deployment["url"]
    assert (
        deployment["body"]["properties"]["requestSettings"]["maxConcurrentRequestsPerInstance"]
        == 32
    )
    uploads = json.loads((tmp_path / "dry" / "03-uploads.json").read_text())
    assert not [f for f in uploads["code_and_build_context"] if f["path"].startswith("model/")]
    assert len(uploads["model"]) == 3


# --- the command line ----------------------------------------------------------------------


class _FakeAzureTargets:
    """A plugin registering the two Azure ML targets with fake credentials."""

    def __init__(self, v1: AzureMLV1Target, v2: AzureMLV2Target) -> None:
        self.targets = (v1, v2)

    @hookimpl
    def register_deploy_targets(self, register: Any) -> None:
        for target in self.targets:
            register(target)


@pytest.fixture
def cli(v1: AzureMLV1Target, v2: AzureMLV2Target) -> Any:
    from scorepack.cli import build_cli

    pm = make_plugin_manager(entry_points=False, defaults=False)
    pm.register(_FakeAzureTargets(v1, v2), name="fake-azure")
    set_plugin_manager(pm)
    return build_cli()


def _run(cli: Any, *args: str) -> Any:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_cli_deploy_prints_the_uri_and_how_to_get_keys_never_the_keys(
    monkeypatch: pytest.MonkeyPatch, cli: Any, package: Path, workspace_config: Path
) -> None:
    azure = install(monkeypatch, *V2_DEPLOY)
    result = _run(
        cli, "deploy", str(package), "--workspace-config", str(workspace_config), "--replicas", "2"
    )
    assert result.exit_code == 0, result.output
    _checked(azure)
    assert f"Scoring URI: {URI_V2}" in result.output
    assert "az ml online-endpoint get-credentials" in result.output
    assert KEYS[0] not in result.output
    assert azure.one("PUT", r"/deployments/blue$").json()["sku"]["capacity"] == 2


def test_cli_deploy_v1_shows_keys_when_asked(
    monkeypatch: pytest.MonkeyPatch, cli: Any, package: Path, workspace_config: Path
) -> None:
    azure = install(monkeypatch, *V1_DEPLOY)
    result = _run(
        cli,
        "deploy",
        str(package),
        "--sdk",
        "v1",
        "--workspace-config",
        str(workspace_config),
        "--show-keys",
    )
    assert result.exit_code == 0, result.output
    _checked(azure)
    assert (
        f"Primary key: {KEYS[0]}" in result.output and f"Secondary key: {KEYS[1]}" in result.output
    )


def test_cli_dry_run_names_its_files_and_sends_nothing(
    monkeypatch: pytest.MonkeyPatch, cli: Any, package: Path, workspace_config: Path, tmp_path: Path
) -> None:
    azure = install(monkeypatch)
    # what an earlier dry run left (a delete's step), and a file of the user's own
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "01-endpoint-delete.json").write_text("{}")
    (tmp_path / "out" / "notes.txt").write_text("mine")
    result = _run(
        cli,
        "deploy",
        str(package),
        "--workspace-config",
        str(workspace_config),
        "--dry-run",
        "--dry-run-dir",
        str(tmp_path / "out"),
    )
    assert result.exit_code == 0, result.output
    assert azure.sent == []
    assert "Dry run: nothing was sent" in result.output
    assert str(tmp_path / "out" / "04-deployment-create.json") in result.output
    # the folder holds this run's steps only, in order (and the user's file)
    numbered = sorted(p.name for p in (tmp_path / "out").iterdir() if p.name[:2].isdigit())
    assert numbered[0] == "01-compute.json" and "01-endpoint-delete.json" not in numbered
    assert len(numbered) == len({name[:2] for name in numbered})
    assert (tmp_path / "out" / "notes.txt").read_text() == "mine"


def test_cli_refuses_a_damaged_package_before_any_request(
    monkeypatch: pytest.MonkeyPatch, cli: Any, package: Path, workspace_config: Path
) -> None:
    azure = install(monkeypatch, *V2_DEPLOY)
    (package / "model" / "saved_model.pb").write_bytes(b"tampered")
    result = _run(cli, "deploy", str(package), "--workspace-config", str(workspace_config))
    assert result.exit_code == 1
    assert "does not match the package manifest" in result.output
    assert azure.sent == []


def test_cli_delete_by_name_cleans_up_and_checks_its_arguments(
    monkeypatch: pytest.MonkeyPatch, cli: Any, workspace_config: Path
) -> None:
    azure = install(monkeypatch, "arm", "v2_compute", "v2_delete")
    result = _run(
        cli,
        "delete",
        "--name",
        "resnet50-demo",
        "--workspace-config",
        str(workspace_config),
        "--delete-compute",
        "--yes",
    )
    assert result.exit_code == 0, result.output
    _checked(azure)
    azure.one("DELETE", r"/onlineEndpoints/resnet50-demo$")
    assert "az aks delete" in result.output

    missing = _run(cli, "delete", "--workspace-config", str(workspace_config))
    assert missing.exit_code == 2 and "--name SERVICE" in missing.output
    unknown = _run(cli, "delete", "--name", "x-svc", "--target", "nowhere", "--yes")
    assert unknown.exit_code == 2 and "azureml-v1, azureml-v2" in unknown.output
    declined = CliRunner().invoke(
        cli,
        ["delete", "--name", "resnet50-demo", "--workspace-config", str(workspace_config)],
        input="n\n",
    )
    assert declined.exit_code == 1 and len(azure.find("DELETE", r"/onlineEndpoints/")) == 1


def test_a_package_from_scorepack_build_dry_runs_with_both_sdks(
    monkeypatch: pytest.MonkeyPatch, small_cnn_path: Path, tmp_path: Path
) -> None:
    """The package writer and the deploy targets together: a real `scorepack build`."""
    pytest.importorskip("azureml.core")
    pytest.importorskip("azure.ai.ml")
    from scorepack.cli import build_cli

    runner = CliRunner()
    cli = build_cli()
    built = runner.invoke(
        cli,
        [
            "build",
            str(small_cnn_path),
            "-o",
            str(tmp_path / "pkg"),
            "--name",
            "small-cnn",
            "--no-check",
        ],
    )
    assert built.exit_code == 0, built.output
    azure = install(monkeypatch)
    monkeypatch.chdir(tmp_path)
    for sdk in ("v1", "v2"):
        result = runner.invoke(
            cli,
            [
                "deploy",
                str(tmp_path / "pkg"),
                "--sdk",
                sdk,
                "--dry-run",
                "--dry-run-dir",
                str(tmp_path / sdk),
            ],
            catch_exceptions=False,
        )
        assert result.exit_code == 0, result.output
        # a GPU package says what the nodes need before anything is (or would be) sent
        assert "GPU: CUDA 12.5 from pip wheels; the nodes need an NVIDIA driver >= 555" in (
            result.output
        )
        assert "PTX for compute_90" in result.output
    assert azure.sent == []
    assert "NVIDIA driver >= 555" in built.output

    def written(sdk: str, step: str) -> Any:
        (path,) = (tmp_path / sdk).glob(f"*-{step}.json")
        return json.loads(path.read_text())

    wheels = written("v1", "private-wheels")
    assert sorted(w["environment_yml_line"] for w in wheels) == sorted(
        f"./wheels/{p.name}" for p in (tmp_path / "pkg" / "wheels").iterdir()
    )
    service = written("v1", "service-create")["body"]
    assert (
        service["maxConcurrentRequestsPerContainer"] == 32
        and service["containerResourceRequirements"]["gpu"] == 1
    )
    deployment = written("v2", "deployment-create")["body"]
    assert deployment["properties"]["requestSettings"]["maxConcurrentRequestsPerInstance"] == 32
    # TensorFlow 2.21 has no sm_90 code: the PTX JIT cache is sized and placed
    variables = deployment["properties"]["environmentVariables"]
    assert variables["CUDA_CACHE_MAXSIZE"] == str(4 * 1024**3)
    assert variables["CUDA_CACHE_PATH"]
    uploads = written("v2", "uploads")
    code = {f["path"] for f in uploads["code_and_build_context"]}
    assert {"score.py", "scorepack.yaml", "environment.yml", "deploy/azureml-v2/Dockerfile"} <= code
    assert not [p for p in code if p.startswith("model/")]


# --- a package of several models ------------------------------------------------------------


def test_v1_deploy_of_several_models_registers_each_and_deploys_them_together(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, workspace_config: Path, v1: AzureMLV1Target
) -> None:
    package, spec = make_several_package(tmp_path / "resnet50-demo")
    azure = install(monkeypatch, "v1_models_several", *V1_DEPLOY)
    progress: list[str] = []
    result = v1.deploy(
        package, spec, DeployOptions(workspace_config=workspace_config), progress.append
    )
    _checked(azure)
    assert (result.service_name, result.scoring_uri) == ("resnet50-demo", URI_V1)

    # SDK v1: each model/NAME folder is a registered model NAME with its own tags
    registered = [r.json() for r in azure.find("POST", r"/models$")]
    assert [m["name"] for m in registered] == list(SEVERAL)
    assert all(m["kvTags"]["backend"] == "tensorflow" for m in registered)
    assert "Registered model cnn version 1" in progress
    assert "Registered model resnet version 1" in progress
    # each folder went up byte for byte, under its own name (azureml-core mounts it at
    # $AZUREML_MODEL_DIR/NAME/VERSION/NAME, where the entry script looks)
    for model in spec.models:
        uploaded = {
            url.split(f"/{model.name}/", 1)[1]: data
            for url, data in azure.blobs.items()
            if f"/{model.name}/" in url and not url.endswith((".whl", ".tar.gz"))
        }
        assert uploaded == {
            name: (package / "model" / model.name / name).read_bytes() for name in model.model_files
        }

    # one service serving both registrations
    create = azure.one("POST", r"/services$").json()
    assert create["environmentImageRequest"]["modelIds"] == ["cnn:1", "resnet:1"]
    # the source directory carries each model's manifest, never the model files
    source = next(data for url, data in azure.blobs.items() if url.endswith(".tar.gz"))
    names = tarfile.open(fileobj=io.BytesIO(source)).getnames()
    assert {f"resnet50-demo/models/{n}/scorepack.yaml" for n in SEVERAL} <= set(names)
    assert not [n for n in names if n.startswith("resnet50-demo/model/")]


def test_v1_generated_deploy_script_registers_several_models_the_same_way(
    monkeypatch: pytest.MonkeyPatch, workspace_config: Path, tmp_path: Path
) -> None:
    pytest.importorskip("azureml.core")
    import azureml.core.workspace

    package, _ = make_several_package(tmp_path / "resnet50-demo")
    inference = json.loads((package / "deploy/azureml-v1/inference_config.json").read_text())
    assert [(m["name"], m["path"]) for m in inference["models"]] == [
        ("cnn", "model/cnn"),
        ("resnet", "model/resnet"),
    ]
    azure = install(monkeypatch, "v1_models_several", *V1_DEPLOY)
    monkeypatch.setattr(azureml.core.workspace, "InteractiveLoginAuthentication", v1_auth)
    monkeypatch.chdir(tmp_path)
    script = package / "deploy" / "azureml-v1" / "deploy.py"
    monkeypatch.setattr(
        sys,
        "argv",
        [str(script), "--workspace-config", str(workspace_config), "--poll-seconds", "0"],
    )
    out = io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    runpy.run_path(str(script), run_name="__main__")
    _checked(azure)
    assert f"Scoring URI: {URI_V1}" in out.getvalue()
    assert [r.json()["name"] for r in azure.find("POST", r"/models$")] == list(SEVERAL)
    create = azure.one("POST", r"/services$").json()
    assert create["environmentImageRequest"]["modelIds"] == ["cnn:1", "resnet:1"]


def test_v2_deploy_of_several_models_registers_one_model_folder(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, workspace_config: Path, v2: AzureMLV2Target
) -> None:
    package, spec = make_several_package(tmp_path / "resnet50-demo")
    azure = install(monkeypatch, *V2_DEPLOY)
    progress: list[str] = []
    result = v2.deploy(
        package, spec, DeployOptions(workspace_config=workspace_config), progress.append
    )
    _checked(azure)
    assert (result.service_name, result.scoring_uri) == ("resnet50-demo", URI_V2)

    # SDK v2: model/ is one model asset holding every model's folder, uploaded once
    versions = azure.find("PUT", r"/models/[^/]+/versions/[^/]+$")
    assert [r.path.rsplit("/models/", 1)[1] for r in versions] == ["resnet50-demo/versions/1"]
    assert versions[0].json()["properties"]["modelUri"].endswith("/model")
    model = {
        url.split("/model/", 1)[1]: data
        for url, data in azure.blobs.items()
        if "/LocalUpload/" in url and "/model/" in url
    }
    assert model == {name: (package / "model" / name).read_bytes() for name in spec.model_files}
    assert {name.split("/", 1)[0] for name in model} == set(SEVERAL)
    # the code upload carries the models' manifests and the entry script, not their files
    code = {url.split("/resnet50-demo/", 1)[1] for url in azure.blobs if "/tmp-codes-" in url}
    assert {"score.py", "scorepack.yaml", *(f"models/{n}/scorepack.yaml" for n in SEVERAL)} <= code
    assert not [p for p in code if p.startswith("model/")]
    body = azure.one("PUT", r"/onlineEndpoints/resnet50-demo/deployments/blue$").json()
    assert body["properties"]["model"].endswith("/models/resnet50-demo/versions/1")
    # scorepack's own server serves one model a package: not offered for several
    assert not (package / "deploy" / "azureml-v2" / "deployment-scorepack.yml").exists()
    with pytest.raises(DeployError, match="several models deploys under azmlinfsrv"):
        v2.deploy(
            package,
            spec,
            DeployOptions(workspace_config=workspace_config, runtime="scorepack"),
            progress.append,
        )


def test_v1_dry_run_of_several_models_writes_one_registration_each(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, v1: AzureMLV1Target
) -> None:
    package, spec = make_several_package(tmp_path / "resnet50-demo")
    azure = install(monkeypatch)
    out = tmp_path / "dry"
    v1.deploy(package, spec, DeployOptions(dry_run=True, dry_run_dir=out), lambda _: None)
    assert azure.sent == []
    registrations = [json.loads(p.read_text()) for p in sorted(out.glob("*-model-register.json"))]
    assert [(r["model_name"], len(r["files"])) for r in registrations] == [
        ("cnn", 2),
        ("resnet", 3),
    ]
    service = json.loads(next(out.glob("*-service-create.json")).read_text())
    assert service["body"]["environmentImageRequest"]["modelIds"] == [
        "cnn:<new version>",
        "resnet:<new version>",
    ]


class _OneModelTarget:
    """A deploy target that serves one model a package (it says nothing of several)."""

    name = "one-model"
    description = "serves one model"

    def render(self, spec: Any) -> dict[str, str]:
        return {}

    def deploy(self, *args: Any) -> Any:
        raise AssertionError("a package of several models reached a one-model target")


class _OneModelPlugin:
    @hookimpl
    def register_deploy_targets(self, register: Any) -> None:
        register(_OneModelTarget())


def test_cli_deploys_several_models_only_to_targets_that_serve_them(
    monkeypatch: pytest.MonkeyPatch,
    v1: AzureMLV1Target,
    v2: AzureMLV2Target,
    tmp_path: Path,
    workspace_config: Path,
) -> None:
    from scorepack.cli import build_cli

    pm = make_plugin_manager(entry_points=False, defaults=False)
    pm.register(_FakeAzureTargets(v1, v2), name="fake-azure")
    pm.register(_OneModelPlugin(), name="one-model")
    set_plugin_manager(pm)
    cli = build_cli()
    package, _ = make_several_package(tmp_path / "resnet50-demo")
    azure = install(monkeypatch)
    result = _run(cli, "deploy", str(package), "--target", "one-model", "--dry-run")
    assert result.exit_code == 2
    assert "package of several models" in result.output and "serves one" in result.output
    # a damaged model file of one of them is refused before any request, as for one model
    (package / "model" / "cnn" / "saved_model.pb").write_bytes(b"tampered")
    result = _run(cli, "deploy", str(package), "--workspace-config", str(workspace_config))
    assert result.exit_code == 1 and "does not match the package manifest" in result.output
    assert azure.sent == []
