"""The Kubernetes API through the official ``kubernetes`` Python client: apply (create or
patch), read and delete the objects the Kubernetes and KServe targets make.

Imported only when a deployment talks to a cluster, so ``scorepack --help`` never loads
the client. Every answer is read as plain JSON (``_preload_content=False``): the targets
look at a few status fields, and custom objects (KServe) have no typed models anyway.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import DeployError

__all__ = ["KUBERNETES_INSTALL", "Cluster", "import_client"]

KUBERNETES_INSTALL = "pip install 'scorepack[kubernetes]'"


@dataclass(frozen=True)
class _Kind:
    """How the client reaches one kind: a typed API and its method suffix, or a custom
    resource's group, version and plural."""

    api: str
    suffix: str = ""
    group: str = ""
    version: str = ""
    plural: str = ""


KINDS: dict[str, _Kind] = {
    "Deployment": _Kind("AppsV1Api", "namespaced_deployment"),
    "Service": _Kind("CoreV1Api", "namespaced_service"),
    "PodDisruptionBudget": _Kind("PolicyV1Api", "namespaced_pod_disruption_budget"),
    "HorizontalPodAutoscaler": _Kind("AutoscalingV2Api", "namespaced_horizontal_pod_autoscaler"),
    "ServingRuntime": _Kind(
        "CustomObjectsApi", group="serving.kserve.io", version="v1alpha1", plural="servingruntimes"
    ),
    "InferenceService": _Kind(
        "CustomObjectsApi", group="serving.kserve.io", version="v1beta1", plural="inferenceservices"
    ),
}


def import_client() -> Any:
    """The ``kubernetes`` package, or an error that says how to install it."""
    try:
        import kubernetes
    except ImportError as exc:
        raise DeployError(
            f"Deploying to Kubernetes needs the kubernetes client: {KUBERNETES_INSTALL}"
        ) from exc
    return kubernetes


class Cluster:
    """One cluster, as a kubeconfig context names it, and one namespace in it."""

    def __init__(
        self,
        kubeconfig: Path | None = None,
        context: str | None = None,
        namespace: str | None = None,
    ) -> None:
        kubernetes = import_client()
        from kubernetes import client, config

        self._client = client
        configuration = client.Configuration()
        config_file = str(kubeconfig) if kubeconfig else None
        try:
            config.load_kube_config(
                config_file=config_file, context=context, client_configuration=configuration
            )
            _contexts, active = config.list_kube_config_contexts(config_file=config_file)
            if context:
                active = next(c for c in _contexts if c["name"] == context)
            self.context = str(active["name"])
            default_namespace = active.get("context", {}).get("namespace") or "default"
        except (config.ConfigException, FileNotFoundError, StopIteration) as exc:
            if kubeconfig is not None or context is not None:
                raise DeployError(f"Cannot use the kubeconfig{_which(context)}: {exc}") from exc
            try:  # a pod's service account, when there is no kubeconfig
                config.load_incluster_config(client_configuration=configuration)
            except config.ConfigException:
                raise DeployError(
                    "No Kubernetes configuration: no kubeconfig ($KUBECONFIG or ~/.kube/config) "
                    "and not inside a cluster. Pass --kubeconfig FILE and --context NAME."
                ) from exc
            self.context = "in-cluster"
            default_namespace = _incluster_namespace()
        self.server = configuration.host
        self.namespace = namespace or default_namespace
        self.api_client = client.ApiClient(configuration)
        self._version = kubernetes.__version__

    # --- calls -----------------------------------------------------------------------------

    def _call(self, verb: str, kind: str, name: str, body: Any = None) -> dict[str, Any] | None:
        """One API call; the answer as JSON, or None for 404 (a read or delete of nothing)."""
        from kubernetes.client.rest import ApiException

        spec = KINDS.get(kind)
        if spec is None:
            raise DeployError(f"scorepack does not deploy objects of kind {kind}.")
        api = getattr(self._client, spec.api)(self.api_client)
        args: list[Any]
        if spec.plural:
            method = f"{verb}_namespaced_custom_object"
            args = [spec.group, spec.version, self.namespace, spec.plural]
            if verb != "create":
                args.append(name)
        else:
            method = f"{verb}_{spec.suffix}"
            args = [self.namespace] if verb == "create" else [name, self.namespace]
        if verb == "get" and not spec.plural:
            method = f"read_{spec.suffix}"
        kwargs: dict[str, Any] = {"_preload_content": False, "_request_timeout": 60}
        if body is not None and verb == "delete":
            kwargs["body"] = body  # DeleteOptions: a keyword argument of every delete method
        elif body is not None:
            args.append(body)
        call: Callable[..., Any] = getattr(api, method)
        try:
            response = call(*args, **kwargs)
        except ApiException as exc:
            if exc.status == 404 and verb in ("get", "delete"):
                return None
            raise DeployError(
                f"Kubernetes refused to {verb} {kind} {self.namespace}/{name}: "
                f"{exc.status} {_message(exc)}"
            ) from exc
        except Exception as exc:  # urllib3's connection errors, mostly
            raise DeployError(
                f"Cannot reach the Kubernetes API at {self.server} (context {self.context}): {exc}"
            ) from exc
        data = response.data
        return json.loads(data) if data else {}

    def get(self, kind: str, name: str) -> dict[str, Any] | None:
        """The object as the cluster has it, or None."""
        return self._call("get", kind, name)

    def apply(self, document: dict[str, Any]) -> str:
        """Create the object, or patch it when it exists: "created" or "configured"."""
        kind, name = document["kind"], document["metadata"]["name"]
        if self.get(kind, name) is None:
            self._call("create", kind, name, document)
            return "created"
        self._call("patch", kind, name, document)
        return "configured"

    def pods(self, selector: dict[str, str]) -> list[dict[str, Any]]:
        """The pods matching the labels (to say why a rollout waits)."""
        from kubernetes.client.rest import ApiException

        api = self._client.CoreV1Api(self.api_client)
        labels = ",".join(f"{k}={v}" for k, v in selector.items())
        try:
            response = api.list_namespaced_pod(
                self.namespace, label_selector=labels, _preload_content=False, _request_timeout=60
            )
        except ApiException as exc:
            raise DeployError(
                f"Kubernetes refused to list the pods in {self.namespace}: "
                f"{exc.status} {_message(exc)}"
            ) from exc
        return list(json.loads(response.data).get("items") or [])

    def delete(self, kind: str, name: str) -> bool:
        """Delete the object (its pods and other dependents too); False when it was not there."""
        body = {"apiVersion": "v1", "kind": "DeleteOptions", "propagationPolicy": "Foreground"}
        return self._call("delete", kind, name, body) is not None


def _which(context: str | None) -> str:
    return f" (context {context})" if context else ""


def _incluster_namespace() -> str:
    path = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
    try:
        return path.read_text().strip() or "default"
    except OSError:
        return "default"


def _message(exc: Any) -> str:
    """The Status message the API server sent, else the HTTP reason."""
    try:
        body = json.loads(exc.body)
        return str(body.get("message") or exc.reason)
    except (TypeError, ValueError):
        return str(exc.reason)
