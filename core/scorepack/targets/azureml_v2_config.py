"""The Azure ML SDK v2 (azure-ai-ml) configuration of a package: a Kubernetes online
endpoint and deployment, as YAML documents.

The package carries them in ``deploy/azureml-v2/`` (``az ml online-endpoint create -f``
takes them as they are), and ``scorepack deploy --sdk v2`` loads the same text through
azure-ai-ml's own loaders, so what a user reads is what gets deployed. Paths in the
documents are relative to ``deploy/azureml-v2/``.

The image is built from the package itself (``environment.build``): the package root is
the build context, ``deploy/azureml-v2/Dockerfile`` creates the conda environment from
``environment.yml`` and the wheels the package carries, and the package's ``.amlignore``
keeps the model out of the code and build-context uploads (the model is its own asset).
"""

from __future__ import annotations

from typing import Any

import yaml

from ..cuda import service_variables
from ..generator import container
from ..generator.spec import DeploymentSettings, PackageSpec
from .azureml_common import model_name, package_tags, server_environment
from .azureml_v1_config import effective_gpu_cores

__all__ = [
    "DEPLOYMENT_NAME",
    "DEPLOY_DIR",
    "DOCKERFILE",
    "SCOREPACK_DEPLOYMENT",
    "SCOREPACK_DOCKERFILE",
    "deployment_document",
    "endpoint_document",
    "environment_name",
    "to_yaml",
]

DEPLOY_DIR = "deploy/azureml-v2"
DOCKERFILE = f"{DEPLOY_DIR}/Dockerfile"
#: ``--runtime scorepack``: scorepack's own server in the package's image, as a custom container
SCOREPACK_DEPLOYMENT = f"{DEPLOY_DIR}/deployment-scorepack.yml"
SCOREPACK_DOCKERFILE = f"{DEPLOY_DIR}/scorepack.Dockerfile"
#: the one deployment behind the endpoint; it takes all the traffic
DEPLOYMENT_NAME = "blue"
ENDPOINT_SCHEMA = "https://azuremlschemas.azureedge.net/latest/kubernetesOnlineEndpoint.schema.json"
DEPLOYMENT_SCHEMA = (
    "https://azuremlschemas.azureedge.net/latest/kubernetesOnlineDeployment.schema.json"
)


def environment_name(service: str) -> str:
    """The Azure ML environment a deployment's image is built from."""
    return f"scorepack-{service}"


def endpoint_document(
    spec: PackageSpec, settings: DeploymentSettings, service: str
) -> dict[str, Any]:
    """The Kubernetes online endpoint: a name, the attached Kubernetes compute, key auth."""
    return {
        "$schema": ENDPOINT_SCHEMA,
        "name": service,
        "compute": f"azureml:{settings.compute_name}",
        # Kubernetes endpoints always authenticate; keys are what Azure ML's clients send
        "auth_mode": "key",
        "description": f"scorepack: {spec.name} ({spec.backend}, {spec.device})",
        "tags": package_tags(spec),
    }


def _probe(settings: DeploymentSettings) -> dict[str, int]:
    return {
        "initial_delay": settings.initial_delay_s,
        "period": settings.period_s,
        "timeout": settings.probe_timeout_s,
        "failure_threshold": settings.failure_threshold,
        "success_threshold": 1,
    }


def _cpu(cores: float) -> str:
    return str(int(cores)) if float(cores).is_integer() else f"{round(cores * 1000)}m"


def _memory(gb: float) -> str:
    return f"{int(gb)}Gi" if float(gb).is_integer() else f"{round(gb * 1024)}Mi"


def resources(spec: PackageSpec, settings: DeploymentSettings) -> dict[str, dict[str, str]]:
    """Kubernetes requests and limits; equal, so a replica gets what it asked for."""
    amounts = {"cpu": _cpu(settings.cpu_cores), "memory": _memory(settings.memory_gb)}
    gpus = effective_gpu_cores(spec, settings)
    if gpus:
        amounts["nvidia.com/gpu"] = str(gpus)
    return {"requests": dict(amounts), "limits": dict(amounts)}


def deployment_document(
    spec: PackageSpec, settings: DeploymentSettings, service: str
) -> dict[str, Any]:
    """The Kubernetes online deployment with the package's scoring settings.

    ``max_concurrent_requests_per_instance`` is above 1 so the batcher gets concurrent
    requests; ``GUNICORN_CMD_ARGS`` gives the one azmlinfsrv worker threads to take them.
    """
    return {
        "$schema": DEPLOYMENT_SCHEMA,
        "name": DEPLOYMENT_NAME,
        "type": "kubernetes",
        "endpoint_name": service,
        "model": {
            "name": model_name(spec),
            "path": "../../model",
            "description": f"{spec.framework} {spec.framework_version} model packaged by scorepack",
            "tags": package_tags(spec),
        },
        "code_configuration": {"code": "../..", "scoring_script": "score.py"},
        "environment": {
            "name": environment_name(service),
            "build": {"path": "../..", "dockerfile_path": DOCKERFILE},
        },
        "environment_variables": (
            server_environment(settings) | service_variables(spec.requirements.cuda)
        ),
        "request_settings": {
            "request_timeout_ms": settings.scoring_timeout_ms,
            "max_concurrent_requests_per_instance": settings.max_concurrent_requests,
        },
        "liveness_probe": _probe(settings),
        "readiness_probe": _probe(settings),
        "instance_count": settings.replicas,
        "resources": resources(spec, settings),
        "tags": package_tags(spec),
    }


def scorepack_deployment_document(
    spec: PackageSpec, settings: DeploymentSettings, service: str
) -> dict[str, Any]:
    """The Kubernetes online deployment running scorepack's own server as a custom container.

    The image is the package's container image without the model (``SCOREPACK_DOCKERFILE``);
    Azure ML mounts the registered model at ``model_mount_path``, where the server reads it,
    and talks to the server through ``inference_config``'s routes: V2 liveness and readiness,
    ``/score`` for scoring. No entry script: the container's own entrypoint serves.
    """
    document = deployment_document(spec, settings, service)
    del document["code_configuration"]
    del document["environment_variables"]  # azmlinfsrv's; the image sets scorepack's own
    document["model_mount_path"] = container.MODEL_DIR
    document["environment"] = {
        "name": f"{environment_name(service)}-server",
        "build": {"path": "../..", "dockerfile_path": SCOREPACK_DOCKERFILE},
        "inference_config": {
            "liveness_route": {"port": container.HTTP_PORT, "path": container.LIVE_PATH},
            "readiness_route": {"port": container.HTTP_PORT, "path": container.READY_PATH},
            "scoring_route": {"port": container.HTTP_PORT, "path": "/score"},
        },
    }
    # the model loads before readiness: give it the time the build measured
    budget = container.startup_budget_s(spec)
    document["liveness_probe"] = {**document["liveness_probe"], "initial_delay": budget}
    document["readiness_probe"] = {**document["readiness_probe"], "initial_delay": 10}
    order = [
        "$schema",
        "name",
        "type",
        "endpoint_name",
        "model",
        "model_mount_path",
        "environment",
    ]
    return {
        **{k: document[k] for k in order},
        **{k: v for k, v in document.items() if k not in order},
    }


def to_yaml(document: dict[str, Any], title: str) -> str:
    """A YAML document with a comment saying what it is."""
    body = yaml.safe_dump(document, sort_keys=False, default_flow_style=False, width=100)
    return f"# {title}\n{body}"
