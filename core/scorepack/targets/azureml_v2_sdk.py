"""The azure-ai-ml (Azure ML SDK v2) calls behind ``scorepack deploy --sdk v2``.

Every function imports azure-ai-ml inside itself; SDK errors become DeployErrors that say
which step failed.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from ..errors import DeployError, ScorepackError
from .azureml_common import AZURE_AI_ML_INSTALL, WorkspaceConfig

logger = logging.getLogger("scorepack.targets.azureml_v2")

__all__ = [
    "connect",
    "create_deployment",
    "create_endpoint",
    "delete_endpoint",
    "detach_compute",
    "endpoint_keys",
    "import_sdk",
    "kubernetes_compute",
    "load_deployment",
    "load_endpoint",
    "scoring_uri",
]


class _InfoToDebug(logging.Filter):
    """azure-ai-ml gives its loggers their own INFO handlers on stderr ("Check: endpoint x
    exists", "Done."); scorepack shows its own progress, so those lines go to the debug log."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            logger.debug("azure-ai-ml: %s", record.getMessage())
            return False
        return True


_FILTER = _InfoToDebug()


def import_sdk() -> None:
    """Fail with the pip command when azure-ai-ml is not installed."""
    try:
        import azure.ai.ml  # noqa: F401
    except ImportError as exc:
        raise DeployError(
            f"Deploying with Azure ML SDK v2 needs azure-ai-ml: {AZURE_AI_ML_INSTALL}"
        ) from exc
    # filter at azure-ai-ml's own loggers, never at handlers: a handler can be shared with
    # the root logger, and a filter there would swallow every other INFO line in the process
    for name, item in list(logging.Logger.manager.loggerDict.items()):
        if name.startswith("azure.ai.ml") and isinstance(item, logging.Logger):
            if _FILTER not in item.filters:
                item.addFilter(_FILTER)


@contextlib.contextmanager
def captured_output() -> Iterator[None]:
    """The SDK's prints (progress dots, colour resets) go to the debug log."""
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            yield
    finally:
        for line in (out.getvalue() + err.getvalue()).splitlines():
            if line.strip(" .\x1b[39m"):
                logger.debug("azure-ai-ml: %s", line)


@contextlib.contextmanager
def sdk_step(action: str) -> Iterator[None]:
    """Run azure-ai-ml code: its output goes to the debug log, its errors become DeployErrors."""
    try:
        with captured_output():
            yield
    except ScorepackError:
        raise
    except Exception as exc:  # the SDK raises HttpResponseError, MlException, marshmallow errors…
        message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
        raise DeployError(f"{action} failed: {message}") from exc


def default_credential() -> Any:
    """azure-identity's DefaultAzureCredential: environment, managed identity, Azure CLI, …"""
    try:
        from azure.identity import DefaultAzureCredential
    except ImportError as exc:
        raise DeployError(
            "Signing in to Azure needs azure-identity: pip install azure-identity"
        ) from exc
    return DefaultAzureCredential()


def connect(config: WorkspaceConfig, credential: Any = None, **client_kwargs: Any) -> Any:
    """An MLClient for the workspace (no request is sent until it is used)."""
    from azure.ai.ml import MLClient

    with sdk_step(f"Connecting to workspace {config.workspace_name}"):
        return MLClient(
            credential if credential is not None else default_credential(),
            subscription_id=config.subscription_id,
            resource_group_name=config.resource_group,
            workspace_name=config.workspace_name,
            show_progress=False,
            **client_kwargs,
        )


def kubernetes_compute(ml_client: Any, name: str) -> Any:
    """The attached Kubernetes compute called ``name``; anything else is a DeployError."""
    from azure.core.exceptions import ResourceNotFoundError

    try:
        with sdk_step(f"Looking up compute {name}"):
            compute = ml_client.compute.get(name)
    except DeployError as exc:
        if isinstance(exc.__cause__, ResourceNotFoundError):
            raise DeployError(
                f"No compute named {name} in the workspace. SDK v2 deploys to a Kubernetes cluster "
                "already attached to the workspace; scorepack does not create one. Create an AKS "
                "cluster with a GPU node pool, install the Azure ML extension and attach it "
                "(https://learn.microsoft.com/azure/machine-learning/"
                "how-to-attach-kubernetes-anywhere), "
                "or use --sdk v1 --provision to let Azure ML create an AKS cluster."
            ) from exc
        raise
    kind = _text(getattr(compute, "type", None))
    if kind.lower() != "kubernetes":
        # azure-ai-ml reports an SDK v1 AKS inference cluster as an unsupported type
        raise DeployError(
            f"Compute {name} is not an attached Kubernetes compute (azure-ai-ml reports {kind!r}). "
            "SDK v2 deploys only to Kubernetes computes. If it is an AKS inference cluster "
            "created with SDK v1 (scorepack deploy --provision), deploy to it with --sdk v1."
        )
    state = _text(getattr(compute, "provisioning_state", None))
    if state and state.lower() != "succeeded":
        raise DeployError(f"Compute {name} is {state}, not ready for deployments.")
    return compute


def _text(value: Any) -> str:
    # the SDK gives some states as enums, some as strings
    return str(getattr(value, "value", value) or "")


def load_endpoint(text: str, origin: Path) -> Any:
    """A KubernetesOnlineEndpoint from YAML, through azure-ai-ml's own loader."""
    from azure.ai.ml import load_online_endpoint

    with sdk_step("Loading endpoint.yml"):
        return load_online_endpoint(io.StringIO(text), relative_origin=str(origin))


def load_deployment(text: str, origin: Path) -> Any:
    """A KubernetesOnlineDeployment from YAML; relative paths resolve from ``origin``'s folder."""
    from azure.ai.ml import load_online_deployment

    with sdk_step("Loading deployment.yml"):
        return load_online_deployment(io.StringIO(text), relative_origin=str(origin))


def create_endpoint(ml_client: Any, endpoint: Any) -> Any:
    """Start creating (or updating) the endpoint; returns the poller."""
    with sdk_step(f"Creating endpoint {endpoint.name}"):
        return ml_client.online_endpoints.begin_create_or_update(endpoint)


def create_deployment(ml_client: Any, deployment: Any) -> Any:
    """Upload code, model and build context, then start creating the deployment."""
    with sdk_step(f"Creating deployment {deployment.name}"):
        return ml_client.online_deployments.begin_create_or_update(deployment)


def result(poller: Any, action: str) -> Any:
    """The poller's result, raising the SDK's error as a DeployError."""
    with sdk_step(action):
        return poller.result()


def scoring_uri(ml_client: Any, name: str) -> str | None:
    """The endpoint's scoring URI."""
    with sdk_step(f"Reading endpoint {name}"):
        return ml_client.online_endpoints.get(name).scoring_uri


def endpoint_keys(ml_client: Any, name: str) -> tuple[str, ...]:
    """The endpoint's primary and secondary keys."""
    with sdk_step(f"Reading the keys of {name}"):
        keys = ml_client.online_endpoints.get_keys(name)
    return tuple(
        k for k in (getattr(keys, "primary_key", None), getattr(keys, "secondary_key", None)) if k
    )


def delete_endpoint(ml_client: Any, name: str) -> Any | None:
    """Start deleting the endpoint and its deployments; None when there is none."""
    from azure.core.exceptions import ResourceNotFoundError

    try:
        with sdk_step(f"Looking up endpoint {name}"):
            ml_client.online_endpoints.get(name)
    except DeployError as exc:
        if isinstance(exc.__cause__, ResourceNotFoundError):
            return None
        raise
    with sdk_step(f"Deleting endpoint {name}"):
        return ml_client.online_endpoints.begin_delete(name=name)


def detach_compute(ml_client: Any, name: str) -> tuple[Any, str] | None:
    """Start detaching a Kubernetes compute; returns the poller and the cluster's resource id."""
    from azure.core.exceptions import ResourceNotFoundError

    try:
        with sdk_step(f"Looking up compute {name}"):
            compute = ml_client.compute.get(name)
    except DeployError as exc:
        if isinstance(exc.__cause__, ResourceNotFoundError):
            return None
        raise
    with sdk_step(f"Detaching compute {name}"):
        poller = ml_client.compute.begin_delete(name, action="Detach")
    return poller, str(getattr(compute, "resource_id", "") or "")


def traffic_update(endpoint: Any, traffic: Mapping[str, int]) -> Any:
    """The endpoint with all traffic sent to the given deployments."""
    endpoint.traffic = dict(traffic)
    return endpoint
