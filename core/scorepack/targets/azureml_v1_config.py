"""The Azure ML SDK v1 (azureml-core 1.61) configuration of a package, as plain data.

Each function returns exactly the keyword arguments scorepack passes to the azureml-core
call it is named after; the package renders them as JSON for people to read and for the
generated ``deploy.py`` to load, and ``scorepack deploy --sdk v1`` builds its objects from
the same dictionaries. One source, so the files and the deployment cannot drift apart.
"""

from __future__ import annotations

from typing import Any

from ..cuda import service_variables
from ..generator.spec import DeploymentSettings, PackageSpec
from .azureml_common import (
    base_image,
    cluster_purpose,
    model_name,
    package_tags,
    server_environment,
)

__all__ = [
    "SOURCE_EXCLUDE",
    "deploy_configuration",
    "effective_gpu_cores",
    "environment_name",
    "inference_configuration",
    "provisioning_configuration",
    "registrations",
]

#: package entries left out of the source directory Azure ML uploads with the entry script:
#: the model is registered on its own, the wheels go in through the environment
SOURCE_EXCLUDE = ("model", "wheels", "deploy", ".amlignore")


def effective_gpu_cores(spec: PackageSpec, settings: DeploymentSettings) -> int:
    """GPUs per replica: none for a CPU package, which would only pay for an idle GPU."""
    return settings.gpu_cores if spec.device == "cuda" else 0


def deploy_configuration(spec: PackageSpec, settings: DeploymentSettings) -> dict[str, Any]:
    """Keyword arguments for ``AksWebservice.deploy_configuration``.

    ``replica_max_concurrent_requests`` is raised from Azure ML's default of 1, which would
    hand each replica one request at a time and leave the batcher nothing to batch.
    Autoscaling is off: a fixed number of GPU replicas, as in the article.
    """
    return {
        "autoscale_enabled": False,
        "num_replicas": settings.replicas,
        "cpu_cores": settings.cpu_cores,
        "memory_gb": settings.memory_gb,
        "gpu_cores": effective_gpu_cores(spec, settings),
        "auth_enabled": settings.auth_enabled,
        "scoring_timeout_ms": settings.scoring_timeout_ms,
        "replica_max_concurrent_requests": settings.max_concurrent_requests,
        "initial_delay_seconds": settings.initial_delay_s,
        "period_seconds": settings.period_s,
        "timeout_seconds": settings.probe_timeout_s,
        "failure_threshold": settings.failure_threshold,
        "success_threshold": 1,
        "description": f"scorepack: {spec.name} ({spec.backend}, {spec.device})",
        "tags": package_tags(spec),
    }


def provisioning_configuration(settings: DeploymentSettings) -> dict[str, Any]:
    """Keyword arguments for ``AksCompute.provisioning_configuration`` (a new GPU cluster)."""
    return {
        "agent_count": settings.agent_count,
        "vm_size": settings.vm_size,
        "cluster_purpose": cluster_purpose(settings),
    }


def environment_name(service: str) -> str:
    """The Azure ML environment a service's image is built from."""
    return f"scorepack-{service}"


def inference_configuration(
    spec: PackageSpec, settings: DeploymentSettings, service: str
) -> dict[str, Any]:
    """What the ``InferenceConfig`` and its ``Environment`` are built from.

    Paths are relative to the package root. The environment is the package's
    ``environment.yml`` on a CUDA base image (azureml-core 1.61 has no ``gpu_enabled``; an
    Environment on a CUDA image is the supported path); every ``.whl`` line of it is
    uploaded with ``Environment.add_private_pip_wheel`` and replaced by the returned URL.
    """
    return {
        "entry_script": "score.py",
        "source_directory": ".",
        "source_exclude": list(SOURCE_EXCLUDE),
        "environment": {
            "name": environment_name(service),
            "conda_file": "environment.yml",
            "base_image": base_image(spec),
            "environment_variables": (
                server_environment(settings) | service_variables(spec.requirements.cuda)
            ),
        },
        **(
            {
                "models": [
                    {"name": model_name(m), "path": f"model/{m.name}", "tags": package_tags(m)}
                    for m in spec.models
                ]
            }
            if spec.models
            else {"model": {"name": model_name(spec), "path": "model", "tags": package_tags(spec)}}
        ),
    }


def registrations(inference: dict[str, Any]) -> list[dict[str, Any]]:
    """The models an inference configuration registers: one, or each of several."""
    return list(inference.get("models") or [inference["model"]])
