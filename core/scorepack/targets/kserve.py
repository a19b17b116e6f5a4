"""Deploy target ``kserve``: the package's image as a KServe ServingRuntime, and an
InferenceService that loads the package's model into it from ``storageUri``.

KServe's storage initializer copies the model to ``/mnt/models``, where the image's server
reads it (``SCOREPACK_MODEL_DIR``); the pods speak the Open Inference Protocol (V2).
The default (Serverless, Knative) mode scales on requests in flight per pod — the
``concurrency`` metric — with a target of one full batch. Knative routes one port per
container, so the runtime declares the HTTP port; see the package README for gRPC.
Registered as a default plugin through ``register_deploy_targets``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import DeployError
from ..generator.container import HTTP_PORT, LIVE_PATH, MODEL_DIR, READY_PATH, startup_budget_s
from ..generator.spec import PackageSpec
from ..hookspecs import hookimpl
from . import kubernetes_manifests as km
from .azureml_common import PackageFiles, wait_for
from .base import DeployOptions, DeployResult, Progress
from .kubernetes import apply_all, check_image, delete_all, dry_run, kustomization

__all__ = [
    "KServeTarget",
    "inference_service",
    "register_deploy_targets",
    "runtime_name",
    "serving_runtime",
]

DEPLOY_DIR = "deploy/kserve"
#: KServe runs the model server in the container of this name
KSERVE_CONTAINER = "kserve-container"


def runtime_name(settings: km.KubeSettings) -> str:
    """The ServingRuntime's name: one runtime per package (its image holds the package)."""
    return f"scorepack-{settings.name}"[:63].rstrip("-")


def _format_version(spec: PackageSpec) -> str:
    return spec.framework_version.split(".")[0] if spec.framework_version else "1"


def serving_runtime(spec: PackageSpec, settings: km.KubeSettings) -> dict[str, Any]:
    """The ServingRuntime: the image, V2, port 8080, the model at /mnt/models, GPUs.

    ``autoSelect: false``: the runtime is this package's, named by its InferenceService;
    it must not be picked for other models of the same framework.
    """
    budget = startup_budget_s(spec)
    container: dict[str, Any] = {
        "name": KSERVE_CONTAINER,
        "image": settings.image,
        "env": [
            {"name": "SCOREPACK_MODEL_DIR", "value": MODEL_DIR},
            {"name": "SCOREPACK_PORT", "value": str(HTTP_PORT)},
            *km.drain_env(),
        ],
        "ports": [{"name": "http1", "containerPort": HTTP_PORT, "protocol": "TCP"}],
        "resources": km.resources(settings),
        # Knative probes the container port itself; liveness waits out the model's load;
        # readiness fails well inside the drain that follows SIGTERM
        "readinessProbe": {
            "httpGet": {"path": READY_PATH, "port": HTTP_PORT},
            "periodSeconds": km.READY_PERIOD_S,
            "timeoutSeconds": 2,
            "failureThreshold": km.READY_FAILURES,
        },
        "livenessProbe": {
            "httpGet": {"path": LIVE_PATH, "port": HTTP_PORT},
            "initialDelaySeconds": budget,
            "periodSeconds": km.PROBE_PERIOD_S,
            "timeoutSeconds": 5,
            "failureThreshold": 6,
        },
        "securityContext": {
            **km.container_security(),
            "runAsNonRoot": True,
            "runAsUser": km.USER_ID,
        },
    }
    spec_: dict[str, Any] = {
        "annotations": km.prometheus_annotations(),
        "supportedModelFormats": [
            {"name": spec.backend, "version": _format_version(spec), "autoSelect": False}
        ],
        "protocolVersions": ["v2"],
        "multiModel": False,
        **km.gpu_scheduling(spec, settings),
        "containers": [container],
    }
    metadata: dict[str, Any] = {"name": runtime_name(settings)}
    if settings.namespace:
        metadata["namespace"] = settings.namespace
    metadata["labels"] = km.labels(spec, settings)
    return {
        "apiVersion": "serving.kserve.io/v1alpha1",
        "kind": "ServingRuntime",
        "metadata": metadata,
        "spec": spec_,
    }


def inference_service(spec: PackageSpec, settings: km.KubeSettings) -> dict[str, Any]:
    """The InferenceService: V2, the model from ``storageUri``, scaling on concurrency.

    The concurrency target is one full batch per pod: below it batches run part-empty,
    above it requests queue behind a running batch.
    """
    metadata: dict[str, Any] = {"name": settings.name}
    if settings.namespace:
        metadata["namespace"] = settings.namespace
    metadata["labels"] = km.labels(spec, settings)
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": metadata,
        "spec": {
            "predictor": {
                "minReplicas": settings.replicas,
                "maxReplicas": settings.max_replicas,
                "scaleMetric": "concurrency",
                "scaleTarget": spec.config.batching.max_batch_size,
                # Knative's revision timeout, which it also makes the pods'
                # terminationGracePeriodSeconds (its webhook refuses that field itself)
                "timeout": km.termination_grace_s(spec),
                "model": {
                    "modelFormat": {"name": spec.backend, "version": _format_version(spec)},
                    "protocolVersion": "v2",
                    "runtime": runtime_name(settings),
                    "storageUri": settings.storage_uri,
                    "resources": km.resources(settings),
                },
            }
        },
    }


def documents(spec: PackageSpec, settings: km.KubeSettings) -> list[dict[str, Any]]:
    """The runtime first: the InferenceService names it."""
    return [serving_runtime(spec, settings), inference_service(spec, settings)]


class KServeTarget:
    """KServe: a ServingRuntime with the package's image and an InferenceService."""

    name = "kserve"
    description = "KServe: a ServingRuntime (the package's image, V2) and an InferenceService"

    def __init__(self, poll_interval_s: float = 5.0, sleep: Callable[[float], None] = time.sleep):
        self.poll_interval_s = poll_interval_s
        self.sleep = sleep

    def render(self, spec: PackageSpec) -> dict[str, str]:
        """``deploy/kserve/``: servingruntime.yaml, inferenceservice.yaml, kustomization.yaml."""
        settings = km.kube_settings(spec, DeployOptions())
        runtime, service = documents(spec, settings)
        image, _, tag = settings.image.rpartition(":")
        return {
            f"{DEPLOY_DIR}/servingruntime.yaml": km.to_yaml(
                runtime, f"KServe ServingRuntime of the scorepack package {spec.name}"
            ),
            f"{DEPLOY_DIR}/inferenceservice.yaml": km.to_yaml(
                service,
                f"KServe InferenceService of {spec.name}: copy the package's model/ folder to "
                "storageUri first",
            ),
            f"{DEPLOY_DIR}/kustomization.yaml": kustomization(
                ["servingruntime.yaml", "inferenceservice.yaml"], image, tag
            ),
        }

    def deploy(
        self, package: Path, spec: PackageSpec, options: DeployOptions, progress: Progress
    ) -> DeployResult:
        """Apply the runtime and the InferenceService, wait until it is Ready."""
        PackageFiles(package).check("Dockerfile")
        check_image(options)
        settings = km.kube_settings(spec, options)
        if not options.storage_uri and not options.dry_run:
            raise DeployError(
                "Say where the model is: copy the package's model/ folder to storage the "
                "cluster can read and pass --storage-uri (s3://…, gs://…, pvc://CLAIM/PATH)."
            )
        if options.dry_run:
            return dry_run(self.name, settings.name, documents(spec, settings), options, progress)
        from .kube_client import Cluster

        cluster = Cluster(options.kubeconfig, options.context, options.namespace)
        progress(
            f"Applying to namespace {cluster.namespace} "
            f"(context {cluster.context}, {cluster.server})"
        )
        docs = documents(spec, settings)
        for document in docs:
            document["metadata"].setdefault("namespace", cluster.namespace)
        apply_all(cluster, docs, progress)

        def poll() -> tuple[bool, str]:
            current = cluster.get("InferenceService", settings.name)
            if current is None:
                raise DeployError(f"InferenceService {settings.name} disappeared.")
            return isvc_state(current)

        wait_for(
            poll,
            what=f"InferenceService {settings.name}",
            progress=progress,
            interval_s=self.poll_interval_s,
            timeout_s=options.wait_timeout_s,
            sleep=self.sleep,
        )
        current = cluster.get("InferenceService", settings.name) or {}
        url = str((current.get("status") or {}).get("url") or "")
        return DeployResult(
            service_name=settings.name,
            scoring_uri=f"{url}/v2/models/{spec.name}/infer" if url else None,
            keys_hint=(
                f"V2 protocol: {url}{READY_PATH} and {url}/v2/models/{spec.name}; through the "
                "cluster's ingress gateway, with the Host header of that URL."
            ),
            key_auth=False,
        )

    def delete(self, spec: PackageSpec | None, options: DeployOptions, progress: Progress) -> None:
        """Delete the InferenceService, then its ServingRuntime."""
        name = km.kube_name(spec, options.service_name)
        settings_name = f"scorepack-{name}"[:63].rstrip("-")
        delete_all(
            self.name,
            [("InferenceService", name), ("ServingRuntime", settings_name)],
            options,
            progress,
        )


def isvc_state(isvc: dict[str, Any]) -> tuple[bool, str]:
    """(done, state) of an InferenceService from its Ready condition."""
    conditions = (isvc.get("status") or {}).get("conditions") or []
    ready = next((c for c in conditions if c.get("type") == "Ready"), None)
    if ready is None:
        return False, "waiting for KServe to report"
    if ready.get("status") == "True":
        return True, "Ready"
    reason = ready.get("reason") or ready.get("message") or "not ready"
    if ready.get("reason") in ("RevisionFailed", "ServingRuntimeNotFound", "InvalidSpec"):
        raise DeployError(
            f"KServe could not start {isvc['metadata']['name']}: {ready.get('message') or reason}"
        )
    return False, f"not ready ({reason})"


@hookimpl
def register_deploy_targets(register: Callable[[Any], None]) -> None:
    register(KServeTarget())
