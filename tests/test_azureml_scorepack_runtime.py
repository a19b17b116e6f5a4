"""``scorepack deploy --runtime scorepack``: an Azure ML SDK v2 Kubernetes online deployment
running scorepack's own server (the package's container image) as a custom container,
beside the azmlinfsrv runtime. The files are loaded by azure-ai-ml's own loaders; the
deployment runs against recorded Azure responses at the HTTP transport (tests/azure_http.py).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from azure_http import FakeCredential, install
from deploy_packages import make_package, make_spec
from scorepack.generator.container import dockerfile
from scorepack.loading import _model_root
from scorepack.targets import DeployOptions
from scorepack.targets.azureml_v2 import AzureMLV2Target
from scorepack.targets.azureml_v2_sdk import load_deployment

pytestmark = [
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::PendingDeprecationWarning"),
    pytest.mark.filterwarnings("ignore::FutureWarning"),
    pytest.mark.filterwarnings("ignore:.*marshmallow 4.*"),
]

V2 = "deploy/azureml-v2"
V2_DEPLOY = ("arm", "v2_compute", "v2_endpoint", "v2_assets", "blob_storage", "v2_deployment")


@pytest.fixture
def v2(monkeypatch: pytest.MonkeyPatch) -> AzureMLV2Target:
    pytest.importorskip("azure.ai.ml")
    from azure.ai.ml.constants._common import LROConfigurations

    monkeypatch.setattr(LROConfigurations, "POLL_INTERVAL", 0)
    return AzureMLV2Target(credential=FakeCredential(), poll_interval_s=0)


@pytest.fixture
def package(tmp_path: Path) -> Path:
    root = make_package(tmp_path / "resnet50-demo", make_spec(load_seconds=30.0))
    return root


def test_the_package_carries_the_custom_container_deployment(package: Path) -> None:
    pytest.importorskip("azure.ai.ml")
    files = AzureMLV2Target().render(make_spec(load_seconds=30.0))
    document = yaml.safe_load(files[f"{V2}/deployment-scorepack.yml"])
    assert "code_configuration" not in document
    assert document["model_mount_path"] == "/mnt/models"
    assert document["environment"]["inference_config"] == {
        "liveness_route": {"port": 8080, "path": "/v2/health/live"},
        "readiness_route": {"port": 8080, "path": "/v2/health/ready"},
        "scoring_route": {"port": 8080, "path": "/score"},
    }
    # the liveness probe waits out the model's measured load (4 x 30 s + 60 s)
    assert document["liveness_probe"]["initial_delay"] == 180
    # its image is the package's container image without the model (Azure ML mounts it)
    image = files[f"{V2}/scorepack.Dockerfile"]
    assert "COPY model/" not in image
    assert image.replace("   # without the model: Azure ML mounts it", "") in dockerfile(
        make_spec(load_seconds=30.0)
    ).replace(
        "                   # with the model in it\n"
        "#   docker build --target server -t IMAGE .   # without: KServe and Azure ML mount it",
        "",
    )
    # azure-ai-ml's own loader takes it as written
    loaded = load_deployment(
        files[f"{V2}/deployment-scorepack.yml"], package / V2 / "deployment-scorepack.yml"
    )
    assert loaded.code_configuration is None
    assert loaded.environment.inference_config.scoring_route.path == "/score"
    assert loaded.model_mount_path == "/mnt/models"


def test_dry_run_with_the_scorepack_runtime(
    monkeypatch: pytest.MonkeyPatch, package: Path, tmp_path: Path, v2: AzureMLV2Target
) -> None:
    azure = install(monkeypatch)
    monkeypatch.chdir(tmp_path)
    result = v2.deploy(
        package,
        make_spec(),
        DeployOptions(dry_run=True, dry_run_dir=tmp_path / "dry", runtime="scorepack"),
        lambda _line: None,
    )
    assert azure.sent == []
    body = json.loads((tmp_path / "dry" / "04-deployment-create.json").read_text())["body"]
    properties = body["properties"]
    assert "codeConfiguration" not in properties
    assert properties["modelMountPath"] == "/mnt/models"
    assert result.dry_run


def test_deploy_with_the_scorepack_runtime_builds_the_server_image(
    monkeypatch: pytest.MonkeyPatch, package: Path, tmp_path: Path, v2: AzureMLV2Target
) -> None:
    config = tmp_path / "config.json"
    from azure_http import RESOURCE_GROUP, SUBSCRIPTION, WORKSPACE

    config.write_text(
        json.dumps(
            {
                "subscription_id": SUBSCRIPTION,
                "resource_group": RESOURCE_GROUP,
                "workspace_name": WORKSPACE,
            }
        )
    )
    azure = install(monkeypatch, *V2_DEPLOY)
    result = v2.deploy(
        package,
        make_spec(),
        DeployOptions(workspace_config=config, runtime="scorepack"),
        lambda _line: None,
    )
    assert azure.unmatched == []
    body = azure.one("PUT", r"/deployments/blue$").json()["properties"]
    assert "codeConfiguration" not in body
    assert body["modelMountPath"] == "/mnt/models"
    environment = azure.one("PUT", r"/environments/[^/]+/versions/[^/]+$").json()["properties"]
    assert environment["build"]["dockerfilePath"] == "deploy/azureml-v2/scorepack.Dockerfile"
    routes = environment["inferenceConfig"]
    assert routes["scoringRoute"] == {"port": 8080, "path": "/score"}
    assert routes["readinessRoute"] == {"port": 8080, "path": "/v2/health/ready"}
    assert result.scoring_uri


def test_runtime_goes_with_azure_ml_v2_only(tmp_path: Path) -> None:
    from scorepack.cli import build_cli

    package = make_package(tmp_path / "pkg")
    (package / "Dockerfile").write_text(dockerfile(make_spec()))
    result = CliRunner().invoke(
        build_cli(),
        ["deploy", str(package), "--target", "kubernetes", "--runtime", "scorepack", "--dry-run"],
    )
    assert result.exit_code == 2
    assert "--runtime scorepack goes with Azure ML SDK v2" in result.output


def test_a_mounted_model_folder_is_found_inside_the_mount(tmp_path: Path) -> None:
    spec: Any = make_spec()
    mount = tmp_path / "mnt" / "models"
    (mount / "model" / "variables").mkdir(parents=True)
    for name in spec.model_files:
        (mount / "model" / name).write_bytes(b"x")
    # Azure ML mounts the registered folder inside model_mount_path; KServe copies its files
    assert _model_root(spec, mount) == mount / "model"
    assert _model_root(spec, mount / "model") == mount / "model"
