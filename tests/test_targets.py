"""The Azure ML deploy targets' files: what ``render`` writes into a package, and that the
real azureml-core and azure-ai-ml objects accept it. No request leaves the process here;
tests/test_deploy.py runs the deployments themselves against recorded responses."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from deploy_packages import GPU_IMAGE, make_package, make_spec
from scorepack.errors import DeployError, PackageError
from scorepack.generator.spec import DeploymentSettings
from scorepack.plugins import get_plugins, make_plugin_manager, set_plugin_manager
from scorepack.targets import DeployOptions, DeployTarget
from scorepack.targets.azureml_common import (
    LocalWheel,
    PackageFiles,
    WorkspaceConfig,
    cluster_purpose,
    deploy_settings,
    service_name,
    wait_for,
)
from scorepack.targets.azureml_v1 import AzureMLV1Target
from scorepack.targets.azureml_v2 import AzureMLV2Target

pytestmark = [
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::PendingDeprecationWarning"),
    pytest.mark.filterwarnings("ignore:.*marshmallow 4.*"),
]

V1 = "deploy/azureml-v1"
V2 = "deploy/azureml-v2"


def _cpu_spec():
    return make_spec(device="cpu", requirements=replace(make_spec().requirements, base_image=None))


# --- registration --------------------------------------------------------------------------


def test_targets_are_default_plugins_registered_through_the_hook() -> None:
    plugins = set_plugin_manager(make_plugin_manager(entry_points=False))
    targets = plugins.deploy_targets
    assert set(targets) >= {"azureml-v1", "azureml-v2"}
    for target in targets.values():
        assert isinstance(target, DeployTarget)
    # nothing registers them when the default plugins are left out
    bare = set_plugin_manager(make_plugin_manager(entry_points=False, defaults=False))
    assert "azureml-v1" not in bare.deploy_targets


def test_importing_the_cli_and_targets_imports_no_azure_sdk() -> None:
    code = (
        "import sys, scorepack.cli\n"
        "from scorepack.plugins import get_plugins\n"
        "scorepack.cli.build_cli()\n"
        "assert {'azureml-v1', 'azureml-v2'} <= set(get_plugins().deploy_targets)\n"
        "heavy = ('azure', 'azureml', 'tensorflow', 'torch')\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in heavy)\n"
        "print(bad)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


# --- settings and names ------------------------------------------------------------------


def test_service_names_follow_azure_rules() -> None:
    assert service_name(make_spec(name="ResNet50 Demo_v2"), DeployOptions()) == "resnet50-demo-v2"
    assert service_name(make_spec(name="123"), DeployOptions()) == "sp-123"
    assert len(service_name(make_spec(name="x" * 80), DeployOptions())) == 32
    assert service_name(None, DeployOptions(service_name="my-svc")) == "my-svc"
    with pytest.raises(DeployError, match="not a valid Azure ML service name"):
        service_name(None, DeployOptions(service_name="Bad_Name"))
    with pytest.raises(DeployError, match="--name"):
        service_name(None, DeployOptions())


def test_overrides_apply_and_are_checked() -> None:
    spec = make_spec()
    settings = deploy_settings(
        spec,
        DeployOptions(compute="gpu2", overrides={"replicas": 3, "vm_size": "Standard_NC8as_T4_v3"}),
    )
    assert (settings.compute_name, settings.replicas, settings.vm_size) == (
        "gpu2",
        3,
        "Standard_NC8as_T4_v3",
    )
    with pytest.raises(DeployError, match="Unknown deployment setting"):
        deploy_settings(spec, DeployOptions(overrides={"replica": 2}))
    with pytest.raises(DeployError, match="retired"):
        deploy_settings(spec, DeployOptions(overrides={"vm_size": "Standard_NC6"}))
    with pytest.raises(DeployError, match="at least 2"):
        deploy_settings(spec, DeployOptions(overrides={"max_concurrent_requests": 1}))


def test_cluster_purpose_follows_the_12_vcpu_rule() -> None:
    assert cluster_purpose(DeploymentSettings()) == "DevTest"  # 1 x 4 vCPUs
    assert cluster_purpose(DeploymentSettings(agent_count=3)) == "FastProd"  # 12 vCPUs
    assert cluster_purpose(DeploymentSettings(vm_size="Standard_NC16as_T4_v3")) == "FastProd"
    assert (
        cluster_purpose(DeploymentSettings(cluster_purpose="DevTest", agent_count=4)) == "DevTest"
    )


def test_workspace_config_errors_name_the_problem(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    with pytest.raises(DeployError, match="not found"):
        WorkspaceConfig.read(path)
    path.write_text(json.dumps({"subscription_id": "s", "resource_group": "rg"}))
    with pytest.raises(DeployError, match="lacks workspace_name"):
        WorkspaceConfig.read(path)
    path.write_text(
        json.dumps({"subscription_id": "s", "resource_group": "rg", "workspace_name": "w"})
    )
    assert WorkspaceConfig.read(path).workspace_id.endswith(
        "/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/w"
    )


def test_package_files_find_the_wheels_environment_yml_names(tmp_path: Path) -> None:
    package = PackageFiles(make_package(tmp_path / "pkg", targets=False)).check()
    wheels = package.local_wheels()
    assert [w.entry for w in wheels] == [
        "./wheels/scorepack-0.1.0-py3-none-any.whl",
        "./wheels/scorepack_tensorflow-0.1.0-py3-none-any.whl",
    ]
    (tmp_path / "pkg" / "score.py").unlink()
    with pytest.raises(PackageError, match=r"score\.py missing"):
        PackageFiles(tmp_path / "pkg").check()


def test_uploaded_wheel_names_change_with_the_content(tmp_path: Path) -> None:
    wheel = tmp_path / "scorepack-0.1.0-py3-none-any.whl"
    wheel.write_bytes(b"one")
    first = LocalWheel("./x", wheel).content_tagged_name()
    wheel.write_bytes(b"two")
    second = LocalWheel("./x", wheel).content_tagged_name()
    assert first != second
    # a build tag starts with a digit and keeps the name a valid wheel name
    name, version, build, *rest = first[: -len(".whl")].split("-")
    assert (name, version, rest) == ("scorepack", "0.1.0", ["py3", "none", "any"])
    assert build[0].isdigit()


# --- SDK v1 files --------------------------------------------------------------------------


def _v1_files(spec=None):
    return AzureMLV1Target().render(spec or make_spec())


def test_v1_render_writes_the_configs_with_batching_friendly_settings() -> None:
    files = _v1_files()
    assert set(files) == {
        f"{V1}/{n}"
        for n in (
            "inference_config.json",
            "deploy_config.json",
            "provisioning_config.json",
            "deploy.py",
            "README.md",
        )
    }
    deploy = json.loads(files[f"{V1}/deploy_config.json"])
    assert deploy["replica_max_concurrent_requests"] == 32 > 1
    assert (deploy["num_replicas"], deploy["autoscale_enabled"], deploy["auth_enabled"]) == (
        1,
        False,
        True,
    )
    assert (deploy["cpu_cores"], deploy["memory_gb"], deploy["gpu_cores"]) == (2.0, 8.0, 1)
    assert deploy["scoring_timeout_ms"] == 60000
    assert (
        deploy["initial_delay_seconds"],
        deploy["period_seconds"],
        deploy["timeout_seconds"],
        deploy["failure_threshold"],
    ) == (120, 10, 5, 6)
    provisioning = json.loads(files[f"{V1}/provisioning_config.json"])
    assert provisioning == {
        "agent_count": 1,
        "vm_size": "Standard_NC4as_T4_v3",
        "cluster_purpose": "DevTest",
    }
    inference = json.loads(files[f"{V1}/inference_config.json"])
    env = inference["environment"]
    assert env["base_image"] == GPU_IMAGE
    assert env["conda_file"] == "environment.yml"
    assert (
        env["environment_variables"]["GUNICORN_CMD_ARGS"]
        == "--threads 33 --worker-class scorepack.azureml.worker.BufferingThreadWorker"
    )
    assert env["environment_variables"]["WORKER_COUNT"] == "1"
    assert inference["model"]["path"] == "model"
    assert "model" in inference["source_exclude"]


def test_v1_render_follows_the_package_settings() -> None:
    spec = make_spec(
        deployment=DeploymentSettings(
            replicas=3, threads=8, max_concurrent_requests=16, vm_size="Standard_NC24ads_A100_v4"
        )
    )
    files = _v1_files(spec)
    deploy = json.loads(files[f"{V1}/deploy_config.json"])
    assert (deploy["num_replicas"], deploy["replica_max_concurrent_requests"]) == (3, 16)
    env = json.loads(files[f"{V1}/inference_config.json"])["environment"]["environment_variables"]
    assert (
        env["GUNICORN_CMD_ARGS"]
        == "--threads 9 --worker-class scorepack.azureml.worker.BufferingThreadWorker"
    )
    provisioning = json.loads(files[f"{V1}/provisioning_config.json"])
    assert (provisioning["vm_size"], provisioning["cluster_purpose"]) == (
        "Standard_NC24ads_A100_v4",
        "FastProd",
    )


def test_v1_cpu_package_asks_for_no_gpu_and_a_cpu_image() -> None:
    files = _v1_files(_cpu_spec())
    assert json.loads(files[f"{V1}/deploy_config.json"])["gpu_cores"] == 0
    assert (
        "cuda" not in json.loads(files[f"{V1}/inference_config.json"])["environment"]["base_image"]
    )


def test_v1_configs_build_the_real_azureml_core_objects(tmp_path: Path) -> None:
    pytest.importorskip("azureml.core")
    from azureml.core import Environment
    from azureml.core.compute import AksCompute
    from azureml.core.model import InferenceConfig
    from azureml.core.webservice import AksWebservice

    files = _v1_files()
    deploy = AksWebservice.deploy_configuration(**json.loads(files[f"{V1}/deploy_config.json"]))
    deploy.validate_configuration()
    payload = deploy._build_create_payload("resnet50-demo", {"environment": {}})
    assert payload["maxConcurrentRequestsPerContainer"] == 32
    assert payload["containerResourceRequirements"]["gpu"] == 1
    assert payload["autoScaler"]["autoscaleEnabled"] is False
    assert payload["authEnabled"] is True
    assert payload["livenessProbeRequirements"]["initialDelaySeconds"] == 120

    provisioning = AksCompute.provisioning_configuration(
        **json.loads(files[f"{V1}/provisioning_config.json"])
    )
    provisioning.validate_configuration()
    body = AksCompute._build_create_payload(provisioning, "westeurope", "sub")
    assert body["properties"]["properties"] == {
        "agentCount": 1,
        "agentVmSize": "Standard_NC4as_T4_v3",
        "clusterPurpose": "DevTest",
    }

    package = make_package(tmp_path / "pkg", targets=False)
    inference = json.loads(files[f"{V1}/inference_config.json"])
    env = Environment.from_conda_specification(
        inference["environment"]["name"], str(package / "environment.yml")
    )
    env.docker.base_image = inference["environment"]["base_image"]
    config = InferenceConfig(
        entry_script="score.py", source_directory=str(package), environment=env
    )
    config.validate_configuration()
    assert env.docker.base_image == GPU_IMAGE


def test_v1_deploy_script_is_valid_python_that_reads_the_configs() -> None:
    script = _v1_files()[f"{V1}/deploy.py"]
    compile(script, "deploy.py", "exec")
    assert 'default="resnet50-demo"' in script and 'default="gpu-aks"' in script
    assert "add_private_pip_wheel" in script and "replica_max_concurrent_requests" not in script


# --- SDK v2 files --------------------------------------------------------------------------


def test_v2_render_writes_endpoint_deployment_dockerfile_and_readme() -> None:
    files = AzureMLV2Target().render(make_spec())
    assert set(files) == {
        f"{V2}/{n}"
        for n in (
            "endpoint.yml",
            "deployment.yml",
            "Dockerfile",
            "README.md",
            # --runtime scorepack (tests/test_azureml_scorepack_runtime.py)
            "deployment-scorepack.yml",
            "scorepack.Dockerfile",
        )
    }
    deployment = yaml.safe_load(files[f"{V2}/deployment.yml"])
    assert deployment["request_settings"] == {
        "request_timeout_ms": 60000,
        "max_concurrent_requests_per_instance": 32,
    }
    assert deployment["resources"]["requests"] == {
        "cpu": "2",
        "memory": "8Gi",
        "nvidia.com/gpu": "1",
    }
    assert deployment["resources"]["limits"] == deployment["resources"]["requests"]
    assert (
        deployment["environment_variables"]["GUNICORN_CMD_ARGS"]
        == "--threads 33 --worker-class scorepack.azureml.worker.BufferingThreadWorker"
    )
    assert deployment["code_configuration"] == {"code": "../..", "scoring_script": "score.py"}
    dockerfile = files[f"{V2}/Dockerfile"]
    assert dockerfile.splitlines()[3] == f"FROM {GPU_IMAGE}"
    assert "conda env create -p $CONDA_PREFIX -f environment.yml" in dockerfile


def test_v2_yaml_loads_through_azure_ai_mls_own_loaders(tmp_path: Path) -> None:
    pytest.importorskip("azure.ai.ml")
    from azure.ai.ml import load_online_deployment, load_online_endpoint
    from azure.ai.ml.entities import KubernetesOnlineDeployment, KubernetesOnlineEndpoint

    package = make_package(tmp_path / "pkg")
    endpoint = load_online_endpoint(package / V2 / "endpoint.yml")
    assert isinstance(endpoint, KubernetesOnlineEndpoint)
    assert (endpoint.name, endpoint.compute, endpoint.auth_mode) == (
        "resnet50-demo",
        "gpu-aks",
        "key",
    )

    deployment = load_online_deployment(package / V2 / "deployment.yml")
    assert isinstance(deployment, KubernetesOnlineDeployment)
    assert deployment.request_settings.max_concurrent_requests_per_instance == 32
    assert deployment.request_settings.request_timeout_ms == 60000
    assert deployment.instance_count == 1
    assert deployment.resources.requests.gpu == "1" and deployment.resources.limits.gpu == "1"
    assert deployment.resources.requests.memory == "8Gi"
    assert (
        deployment.liveness_probe.initial_delay == 120 and deployment.readiness_probe.period == 10
    )
    assert (
        deployment.environment_variables["GUNICORN_CMD_ARGS"]
        == "--threads 33 --worker-class scorepack.azureml.worker.BufferingThreadWorker"
    )
    assert deployment.environment_variables["WORKER_COUNT"] == "1"
    # every path in the YAML points at the package
    base = Path(deployment.base_path)
    assert (base / deployment.code_configuration.code).resolve() == package.resolve()
    assert Path(deployment.model.path).resolve() == (package / "model").resolve()
    context = (base / deployment.environment.build.path).resolve()
    assert context == package.resolve()
    assert (context / deployment.environment.build.dockerfile_path).is_file()
    # and the REST body azure-ai-ml builds from it carries the settings
    deployment.model, deployment.environment = "azureml:m:1", "azureml:e:1"
    deployment.code_configuration.code = "azureml:c:1"
    body = deployment._to_rest_object(location="westeurope").as_dict()
    props = body["properties"]
    assert props["requestSettings"]["maxConcurrentRequestsPerInstance"] == 32
    assert props["containerResourceRequirements"]["containerResourceRequests"]["gpu"] == "1"
    assert props["endpointComputeType"] == "Kubernetes"


def test_v2_cpu_package_requests_no_gpu() -> None:
    files = AzureMLV2Target().render(_cpu_spec())
    deployment = yaml.safe_load(files[f"{V2}/deployment.yml"])
    assert "nvidia.com/gpu" not in deployment["resources"]["requests"]
    assert "cuda" not in files[f"{V2}/Dockerfile"]


def test_fractional_resources_use_kubernetes_units() -> None:
    spec = make_spec(deployment=DeploymentSettings(cpu_cores=0.5, memory_gb=1.5))
    deployment = yaml.safe_load(AzureMLV2Target().render(spec)[f"{V2}/deployment.yml"])
    assert deployment["resources"]["requests"]["cpu"] == "500m"
    assert deployment["resources"]["requests"]["memory"] == "1536Mi"


# --- with the package writer ---------------------------------------------------------------


def test_rendering_is_pure_and_fits_the_package_writers_files() -> None:
    from scorepack.generator.rendering import render

    spec = make_spec()
    targets = dict(get_plugins().deploy_targets)
    files = render(spec, targets)
    assert render(spec, targets) == files
    for path in (
        f"{V1}/deploy_config.json",
        f"{V2}/deployment.yml",
        f"{V2}/Dockerfile",
        ".amlignore",
    ):
        assert path in files
    # the v2 build context and code upload leave the model out through the package's .amlignore
    assert "model/" in files[".amlignore"].splitlines()


def test_waiting_reports_each_state_and_gives_up_at_the_timeout() -> None:
    clock = iter(range(0, 1000, 30))
    states = iter(["Creating", "Creating", "Updating", "Updating", "Updating", "Updating"])
    said: list[str] = []
    with pytest.raises(DeployError, match="Gave up waiting for Compute x after 100 s"):
        wait_for(
            lambda: (False, next(states)),
            what="Compute x",
            progress=said.append,
            interval_s=0,
            timeout_s=100,
            clock=lambda: next(clock),
            sleep=lambda _: None,
        )
    assert said == ["Compute x: Creating (30 s)", "Compute x: Updating (90 s)"]
    done = wait_for(
        lambda: (True, "Succeeded"), what="y", progress=said.append, interval_s=0, timeout_s=1
    )
    assert done == "Succeeded" and said[-1].startswith("y: Succeeded")
