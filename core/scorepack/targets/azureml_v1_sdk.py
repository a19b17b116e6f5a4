"""The azureml-core (Azure ML SDK v1) calls behind ``scorepack deploy --sdk v1``.

Every function imports azureml-core inside itself; errors from the SDK become DeployErrors
that say which step failed. azureml-core prints as it works; that output goes to the debug
log so the progress display stays readable.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from ..errors import DeployError, ScorepackError
from .azureml_common import (
    AZUREML_CORE_INSTALL,
    PackageFiles,
    WorkspaceConfig,
    rewrite_pip_entries,
)

logger = logging.getLogger("scorepack.targets.azureml_v1")

__all__ = [
    "build_environment",
    "build_inference_config",
    "compute_state",
    "connect",
    "create_compute",
    "delete_compute",
    "delete_service",
    "deploy_service",
    "find_compute",
    "import_sdk",
    "register_model",
    "service_keys",
    "service_state",
    "stage_source",
    "upload_wheels",
]

#: terminal states of an AKS compute and of a v1 web service
COMPUTE_DONE = frozenset({"Succeeded", "Failed", "Canceled"})
SERVICE_DONE = frozenset({"Healthy", "Failed", "Unhealthy", "Unschedulable"})


class _MisleadingWarnings(logging.Filter):
    """azureml-core warnings that are wrong for what scorepack does; they go to the debug log.

    ``environment_variables`` is deprecated for training runs only: for a web service it is
    how variables reach the container (the SDK itself sets AZUREML_ENTRY_SCRIPT there). And
    azureml-defaults is not needed: the environment installs azureml-inference-server-http,
    the inference stack azureml-defaults would bring.
    """

    PREFIXES = (
        "Property environment_variables is deprecated",
        "Warning, azureml-defaults not detected",
    )

    def filter(self, record: logging.LogRecord) -> bool:
        if str(record.msg).startswith(self.PREFIXES):
            logger.debug("azureml-core: %s", record.getMessage())
            return False
        return True


_FILTER = _MisleadingWarnings()


def import_sdk() -> None:
    """Fail with the pip command when azureml-core is not installed."""
    try:
        import azureml.core  # noqa: F401
    except ImportError as exc:
        raise DeployError(
            f"Deploying with Azure ML SDK v1 needs azureml-core: {AZUREML_CORE_INSTALL}"
        ) from exc
    for name in ("azureml.core.model", "azureml.core.environment"):
        if _FILTER not in logging.getLogger(name).filters:
            logging.getLogger(name).addFilter(_FILTER)


@contextlib.contextmanager
def sdk_step(action: str) -> Iterator[None]:
    """Run azureml-core code: its prints and warnings go to the debug log, its errors become
    DeployErrors that name the step."""
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out), warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield
    except ScorepackError:
        raise
    except Exception as exc:  # azureml-core raises many unrelated exception types
        message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
        raise DeployError(f"{action} failed: {message}") from exc
    finally:
        for line in out.getvalue().splitlines():
            if line.strip():
                logger.debug("azureml-core: %s", line)
    for warning in caught:
        logger.debug("azureml-core warning: %s", warning.message)


@contextlib.contextmanager
def _cwd(path: Path) -> Iterator[None]:
    # Model.register refuses paths outside the current directory
    before = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)


def connect(config: WorkspaceConfig, auth: Any = None) -> Any:
    """The workspace; ``auth`` None is azureml-core's default (Azure CLI, then interactive)."""
    from azureml.core import Workspace

    with sdk_step(f"Opening workspace {config.workspace_name}"):
        return Workspace(
            subscription_id=config.subscription_id,
            resource_group=config.resource_group,
            workspace_name=config.workspace_name,
            auth=auth,
        )


def find_compute(workspace: Any, name: str) -> Any | None:
    """The AKS compute called ``name``, None when there is none; other kinds are an error."""
    from azureml.core.compute import AksCompute, ComputeTarget
    from azureml.exceptions import ComputeTargetException

    try:
        with contextlib.redirect_stdout(io.StringIO()):
            compute = ComputeTarget(workspace=workspace, name=name)
    except ComputeTargetException as exc:
        if "ComputeTargetNotFound" in str(exc):
            return None
        raise DeployError(f"Looking up compute {name} failed: {exc}") from exc
    if not isinstance(compute, AksCompute):
        raise DeployError(
            f"Compute {name} is a {getattr(compute, 'type', type(compute).__name__)} compute; "
            "SDK v1 deploys to an AKS inference cluster. Name one with --compute, or create one "
            "with --provision."
        )
    return compute


def create_compute(workspace: Any, name: str, provisioning: Mapping[str, Any]) -> Any:
    """Start creating an AKS cluster (returns at once; poll with :func:`compute_state`)."""
    from azureml.core.compute import AksCompute, ComputeTarget

    with sdk_step(f"Creating AKS compute {name}"):
        config = AksCompute.provisioning_configuration(**provisioning)
        return ComputeTarget.create(workspace, name, config)


def compute_state(compute: Any) -> tuple[bool, str]:
    """``(done, state)`` of a compute being created."""
    with sdk_step(f"Checking compute {compute.name}"):
        compute.refresh_state()
    state = str(compute.provisioning_state)
    if state in ("Failed", "Canceled"):
        errors = compute.provisioning_errors or "no details given"
        raise DeployError(f"Creating compute {compute.name} ended {state}: {errors}")
    return state in COMPUTE_DONE, state


def register_model(workspace: Any, package: PackageFiles, model: Mapping[str, Any]) -> Any:
    """Upload and register the package's model/ directory."""
    from azureml.core import Model

    with sdk_step(f"Registering model {model['name']}"), _cwd(package.root):
        return Model.register(
            workspace=workspace,
            model_path=str(model["path"]),
            model_name=str(model["name"]),
            tags=dict(model.get("tags") or {}),
            description="Registered by scorepack",
        )


def upload_wheels(workspace: Any, package: PackageFiles, staging: Path) -> dict[str, str]:
    """Upload the package's wheels as private pip wheels: environment.yml line → URL."""
    from azureml.core import Environment

    urls = {}
    for wheel in package.local_wheels():
        # upload under a name that changes with the content (see content_tagged_name)
        tagged = staging / "wheels" / wheel.content_tagged_name()
        tagged.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(wheel.path, tagged)
        with sdk_step(f"Uploading {wheel.path.name}"):
            urls[wheel.entry] = Environment.add_private_pip_wheel(
                workspace, str(tagged), exist_ok=True
            )
    return urls


def build_environment(
    package: PackageFiles, settings: Mapping[str, Any], wheel_urls: Mapping[str, str], staging: Path
) -> Any:
    """The Environment: the package's conda file with wheel URLs, on the base image."""
    from azureml.core import Environment

    conda = rewrite_pip_entries(package.environment(), wheel_urls)
    conda_file = staging / "environment.yml"
    conda_file.write_text(yaml.safe_dump(conda, sort_keys=False), encoding="utf-8")
    with sdk_step("Building the environment"):
        env = Environment.from_conda_specification(str(settings["name"]), str(conda_file))
        env.docker.base_image = str(settings["base_image"])
        env.python.user_managed_dependencies = False
        env.environment_variables = dict(settings["environment_variables"])
    return env


def stage_source(package: PackageFiles, exclude: tuple[str, ...], staging: Path) -> Path:
    """A copy of the package without the model and wheels: the source directory Azure ML
    uploads with the entry script (the model is registered and uploaded on its own)."""
    target = staging / "source" / package.root.name
    shutil.copytree(
        package.root,
        target,
        ignore=lambda folder, names: [
            n for n in names if Path(folder) == package.root and n in exclude
        ],
    )
    return target


def build_inference_config(source: Path, entry_script: str, environment: Any) -> Any:
    """``InferenceConfig(entry_script, source_directory, environment)``."""
    from azureml.core.model import InferenceConfig

    with sdk_step("Building the inference configuration"):
        return InferenceConfig(
            entry_script=entry_script, source_directory=str(source), environment=environment
        )


def deploy_service(
    workspace: Any,
    name: str,
    models: Any,
    inference_config: Any,
    deploy_kwargs: Mapping[str, Any],
    compute: Any,
) -> Any:
    """Start the deployment (image build, then the service); poll with :func:`service_state`."""
    from azureml.core import Model
    from azureml.core.webservice import AksWebservice

    with sdk_step(f"Deploying service {name}"):
        deployment_config = AksWebservice.deploy_configuration(**deploy_kwargs)
        return Model.deploy(
            workspace=workspace,
            name=name,
            models=list(models) if isinstance(models, list | tuple) else [models],
            inference_config=inference_config,
            deployment_config=deployment_config,
            deployment_target=compute,
            overwrite=True,
        )


def service_state(service: Any) -> tuple[bool, str]:
    """``(done, state)`` of a service being deployed; a failed one raises with its error."""
    with sdk_step(f"Checking service {service.name}"):
        service.update_deployment_state()
    state = str(service.state)
    if state in SERVICE_DONE and state != "Healthy":
        detail = service.error or "no details given"
        raise DeployError(
            f"Service {service.name} ended {state}: {detail}\n"
            f"Its logs: Webservice(workspace, {service.name!r}).get_logs()"
        )
    return state in SERVICE_DONE, state


def service_keys(service: Any) -> tuple[str, ...]:
    """The service's primary and secondary keys."""
    with sdk_step(f"Reading the keys of {service.name}"):
        return tuple(k for k in service.get_keys() if k)


def delete_service(workspace: Any, name: str) -> bool:
    """Delete a web service; False when there was none."""
    from azureml.core.webservice import Webservice
    from azureml.exceptions import WebserviceException

    try:
        with contextlib.redirect_stdout(io.StringIO()):
            service = Webservice(workspace, name=name)
    except WebserviceException as exc:
        if "WebserviceNotFound" in str(exc):
            return False
        raise DeployError(f"Looking up service {name} failed: {exc}") from exc
    with sdk_step(f"Deleting service {name}"):
        service.delete()
    return True


def delete_compute(workspace: Any, name: str) -> bool:
    """Delete an AKS compute scorepack (or Azure ML) created; False when there was none."""
    compute = find_compute(workspace, name)
    if compute is None:
        return False
    with sdk_step(f"Deleting compute {name}"):
        compute.delete()
    return True
