"""Plain Kubernetes manifests for a package's image: Deployment, Service,
PodDisruptionBudget and HorizontalPodAutoscaler, as data.

Pure functions of a :class:`PackageSpec` and :class:`KubeSettings`; the ``kubernetes``
target writes them into the package (``deploy/kubernetes/``, usable with ``kubectl apply``)
and sends the same documents when it deploys. The KServe target shares the pieces that
describe the container (resources, probes, GPU scheduling).
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from typing import Any

import yaml

from ..errors import DeployError
from ..generator.container import (
    GRPC_PORT,
    HTTP_PORT,
    LIVE_PATH,
    READY_PATH,
    USER_ID,
    startup_budget_s,
)
from ..generator.spec import DeploymentSettings, PackageSpec
from .base import DeployOptions

__all__ = [
    "INFLIGHT_METRIC",
    "KubeSettings",
    "deployment",
    "drain_env",
    "gpu_scheduling",
    "horizontal_pod_autoscaler",
    "kube_name",
    "kube_settings",
    "labels",
    "manifests",
    "pod_disruption_budget",
    "resources",
    "service",
    "termination_grace_s",
    "to_yaml",
]

#: the server's gauge of requests in flight (queued or being scored) per pod; a Prometheus
#: adapter or KEDA serves it to the HPA as a Pods metric under the same name
INFLIGHT_METRIC = "scorepack_inflight_requests"
#: NVIDIA GPU Feature Discovery (part of the GPU Operator) labels every GPU node with it
GPU_NODE_LABEL = "nvidia.com/gpu.present"
GPU_RESOURCE = "nvidia.com/gpu"
CONTAINER_NAME = "scorepack"
PROBE_PERIOD_S = 10
#: seconds a stopping pod keeps its endpoints' traffic draining before the server stops
PRE_STOP_SLEEP_S = 5
#: seconds the server answers readiness 503 after SIGTERM before its listener closes, while
#: still serving (``SCOREPACK_DRAIN_SECONDS``): whatever routes by readiness (ingress
#: controllers, cloud load balancers' health checks) stops sending first
DRAIN_S = 10
#: readiness is probed often enough to fail well inside the drain: 2 misses 2 s apart
READY_PERIOD_S = 2
READY_FAILURES = 2
#: ``serve --graceful-timeout``'s default: in-flight requests finish within it once the
#: listener has closed
GRACEFUL_TIMEOUT_S = 30
#: on top of everything the pod waits for when it stops, for the unload and the exit
TERMINATION_MARGIN_S = 15

_DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")


@dataclass(frozen=True)
class KubeSettings:
    """What the Kubernetes and KServe objects are made from, beyond the package."""

    name: str
    image: str
    replicas: int
    max_replicas: int
    cpu_cores: float
    memory_gb: float
    gpus: int
    #: KServe: where the storage initializer fetches the package's model/ folder from
    storage_uri: str
    namespace: str | None = None


def kube_name(spec: PackageSpec | None, explicit: str | None) -> str:
    """An object name (a DNS-1035 label): ``--name`` when given, else from the package."""
    if explicit:
        if not _DNS_LABEL.match(explicit):
            raise DeployError(
                f"{explicit!r} is not a valid Kubernetes name: use at most 63 lowercase "
                "letters, digits and dashes, starting with a letter and ending with a letter "
                "or digit."
            )
        return explicit
    if spec is None:
        raise DeployError("Name what to delete: give a package or --name NAME.")
    name = re.sub(r"[^a-z0-9-]+", "-", spec.name.lower())
    name = re.sub(r"-{2,}", "-", name).strip("-")
    if not name or not name[0].isalpha():
        name = "sp-" + name
    return name[:63].rstrip("-")


def image_name(name: str) -> str:
    """The image the manifests name until ``--image`` (or kustomize's ``images``) says where
    it was pushed."""
    return f"scorepack-{name}"


def kube_settings(spec: PackageSpec, options: DeployOptions) -> KubeSettings:
    """The package's deployment settings with the command line's overrides applied."""
    base: DeploymentSettings = spec.deployment
    overrides = {k: v for k, v in options.overrides.items() if v is not None}
    known = {"replicas", "cpu_cores", "memory_gb", "gpu_cores", "max_replicas"}
    unknown = sorted(set(overrides) - known - {f.name for f in dataclasses.fields(base)})
    if unknown:
        raise DeployError(f"Unknown deployment setting(s) {', '.join(unknown)}.")
    replicas = int(overrides.get("replicas", base.replicas))
    max_replicas = int(overrides.get("max_replicas", replicas * 4))
    gpus = int(overrides.get("gpu_cores", base.gpu_cores)) if spec.device == "cuda" else 0
    cpu = float(overrides.get("cpu_cores", base.cpu_cores))
    memory = float(overrides.get("memory_gb", base.memory_gb))
    problems = []
    if replicas < 1 or max_replicas < replicas:
        problems.append("replicas must be at least 1 and max_replicas at least replicas")
    if cpu <= 0 or memory <= 0:
        problems.append("cpu_cores and memory_gb must be positive")
    if spec.device == "cuda" and gpus < 1:
        problems.append("a CUDA package needs --gpu-cores 1 or more")
    if problems:
        raise DeployError("Invalid deployment settings: " + "; ".join(problems) + ".")
    name = kube_name(spec, options.service_name)
    version = spec.scorepack_version or "latest"
    return KubeSettings(
        name=name,
        image=options.image or f"{image_name(name)}:{version}",
        replicas=replicas,
        max_replicas=max_replicas,
        cpu_cores=cpu,
        memory_gb=memory,
        gpus=gpus,
        storage_uri=options.storage_uri or f"pvc://scorepack-models/{name}",
        namespace=options.namespace,
    )


def labels(spec: PackageSpec, settings: KubeSettings) -> dict[str, str]:
    """The recommended ``app.kubernetes.io`` labels; the first two select the pods."""
    return {
        "app.kubernetes.io/name": settings.name,
        "app.kubernetes.io/instance": settings.name,
        "app.kubernetes.io/component": "predictor",
        "app.kubernetes.io/managed-by": "scorepack",
        "app.kubernetes.io/version": _label_value(spec.scorepack_version or "unknown"),
    }


def _label_value(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "-", text)[:63].strip("-._") or "unknown"


def pod_selector(name: str) -> dict[str, str]:
    """The labels that select a deployment's pods."""
    return {"app.kubernetes.io/name": name, "app.kubernetes.io/instance": name}


def _selector(settings: KubeSettings) -> dict[str, str]:
    return pod_selector(settings.name)


def _metadata(spec: PackageSpec, settings: KubeSettings, **extra: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": settings.name}
    if settings.namespace:
        meta["namespace"] = settings.namespace
    meta["labels"] = labels(spec, settings)
    meta.update(extra)
    return meta


def _cpu(cores: float) -> str:
    return str(int(cores)) if float(cores).is_integer() else f"{round(cores * 1000)}m"


def _memory(gb: float) -> str:
    return f"{int(gb)}Gi" if float(gb).is_integer() else f"{round(gb * 1024)}Mi"


def resources(settings: KubeSettings) -> dict[str, dict[str, str]]:
    """Requests equal to limits (a Guaranteed pod: the model's memory is never squeezed);
    GPUs go in limits, which is where Kubernetes takes extended resources from."""
    amounts = {"cpu": _cpu(settings.cpu_cores), "memory": _memory(settings.memory_gb)}
    limits = dict(amounts)
    if settings.gpus:
        limits[GPU_RESOURCE] = str(settings.gpus)
    return {"requests": amounts, "limits": limits}


def gpu_scheduling(spec: PackageSpec, settings: KubeSettings) -> dict[str, Any]:
    """Node selector and toleration that put a GPU pod on a GPU node (nothing for CPU).

    GPU node pools are usually tainted so that other pods stay off them; the toleration
    covers the ``nvidia.com/gpu`` taint (GKE, the GPU Operator's docs) and AKS's ``sku=gpu``.
    """
    if not settings.gpus:
        return {}
    return {
        "nodeSelector": {GPU_NODE_LABEL: "true"},
        "tolerations": [
            {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"},
            {"key": "sku", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"},
        ],
    }


def _http_get(path: str, port: str | int) -> dict[str, Any]:
    return {"path": path, "port": port}


def probes(spec: PackageSpec, port: str | int = "http") -> dict[str, Any]:
    """Startup (sized from the model's measured load time), readiness and liveness probes."""
    budget = startup_budget_s(spec)
    return {
        # until the model is loaded and warm, no liveness check can restart the pod
        "startupProbe": {
            "httpGet": _http_get(READY_PATH, port),
            "periodSeconds": PROBE_PERIOD_S,
            "timeoutSeconds": 5,
            "failureThreshold": math.ceil(budget / PROBE_PERIOD_S),
        },
        # fails within READY_PERIOD_S x READY_FAILURES of the drain beginning
        "readinessProbe": {
            "httpGet": _http_get(READY_PATH, port),
            "periodSeconds": READY_PERIOD_S,
            "timeoutSeconds": 2,
            "failureThreshold": READY_FAILURES,
        },
        "livenessProbe": {
            "httpGet": _http_get(LIVE_PATH, port),
            "periodSeconds": PROBE_PERIOD_S,
            "timeoutSeconds": 5,
            "failureThreshold": 6,
        },
    }


def drain_env() -> list[dict[str, str]]:
    """The container's ``SCOREPACK_DRAIN_SECONDS``: on SIGTERM readiness turns 503 first."""
    return [{"name": "SCOREPACK_DRAIN_SECONDS", "value": str(DRAIN_S)}]


def termination_grace_s(spec: PackageSpec) -> int:
    """Seconds Kubernetes gives a stopping pod before SIGKILL: the preStop pause, the
    drain, then the longer of the request timeout and serve's graceful timeout for the
    requests in flight to finish, and a margin."""
    request_s = math.ceil(spec.config.batching.timeout_ms / 1000)
    in_flight_s = max(request_s, GRACEFUL_TIMEOUT_S)
    return PRE_STOP_SLEEP_S + DRAIN_S + in_flight_s + TERMINATION_MARGIN_S


def prometheus_annotations() -> dict[str, str]:
    """The annotations Prometheus' kubernetes-pods scrape config looks for."""
    return {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(HTTP_PORT),
        "prometheus.io/path": "/metrics",
    }


def pod_security() -> dict[str, Any]:
    """The image's user, checked by the kubelet; no privilege escalation."""
    return {
        "runAsNonRoot": True,
        "runAsUser": USER_ID,
        "runAsGroup": USER_ID,
        "fsGroup": USER_ID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security() -> dict[str, Any]:
    return {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}


def deployment(spec: PackageSpec, settings: KubeSettings) -> dict[str, Any]:
    """The Deployment: the image with the model inside, GPUs, probes, graceful stops."""
    container: dict[str, Any] = {
        "name": CONTAINER_NAME,
        "image": settings.image,
        "imagePullPolicy": "IfNotPresent",
        "ports": [
            {"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"},
            {"name": "grpc", "containerPort": GRPC_PORT, "protocol": "TCP"},
        ],
        "env": drain_env(),
        "resources": resources(settings),
        **probes(spec),
        # endpoints are removed asynchronously: keep serving a moment before SIGTERM
        "lifecycle": {"preStop": {"sleep": {"seconds": PRE_STOP_SLEEP_S}}},
        "securityContext": container_security(),
    }
    pod_spec: dict[str, Any] = {
        "securityContext": pod_security(),
        "terminationGracePeriodSeconds": termination_grace_s(spec),
        **gpu_scheduling(spec, settings),
        "containers": [container],
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(spec, settings),
        "spec": {
            "replicas": settings.replicas,
            "selector": {"matchLabels": _selector(settings)},
            # a new pod must be ready before an old one goes: no capacity dip during a rollout
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
            },
            "template": {
                "metadata": {
                    "labels": labels(spec, settings),
                    "annotations": prometheus_annotations(),
                },
                "spec": pod_spec,
            },
        },
    }


def service(spec: PackageSpec, settings: KubeSettings) -> dict[str, Any]:
    """A ClusterIP Service with the HTTP and gRPC ports (h2c: gRPC without TLS)."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(spec, settings),
        "spec": {
            "type": "ClusterIP",
            "selector": _selector(settings),
            "ports": [
                {
                    "name": "http",
                    "port": HTTP_PORT,
                    "targetPort": "http",
                    "protocol": "TCP",
                    "appProtocol": "http",
                },
                {
                    "name": "grpc",
                    "port": GRPC_PORT,
                    "targetPort": "grpc",
                    "protocol": "TCP",
                    "appProtocol": "kubernetes.io/h2c",
                },
            ],
        },
    }


def pod_disruption_budget(spec: PackageSpec, settings: KubeSettings) -> dict[str, Any]:
    """At most one pod evicted at a time by drains and upgrades (never blocks a drain, even
    with one replica, as ``minAvailable: 1`` would)."""
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _metadata(spec, settings),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": _selector(settings)}},
    }


def horizontal_pod_autoscaler(spec: PackageSpec, settings: KubeSettings) -> dict[str, Any]:
    """Scale on requests in flight per pod, with a target of one full batch.

    CPU load says little about a GPU server (the CPU idles while the GPU works); requests
    in flight say how much work is waiting. Above one full batch per pod, requests start to
    queue behind a running batch, so that is the target. Scaling down waits five minutes:
    a GPU pod is slow to start.
    """
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": _metadata(spec, settings),
        "spec": {
            "scaleTargetRef": {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": settings.name,
            },
            "minReplicas": settings.replicas,
            "maxReplicas": settings.max_replicas,
            "metrics": [
                {
                    "type": "Pods",
                    "pods": {
                        "metric": {"name": INFLIGHT_METRIC},
                        "target": {
                            "type": "AverageValue",
                            "averageValue": str(spec.config.batching.max_batch_size),
                        },
                    },
                }
            ],
            "behavior": {
                "scaleUp": {
                    "stabilizationWindowSeconds": 30,
                    "policies": [{"type": "Pods", "value": 2, "periodSeconds": 60}],
                },
                "scaleDown": {
                    "stabilizationWindowSeconds": 300,
                    "policies": [{"type": "Pods", "value": 1, "periodSeconds": 120}],
                },
            },
        },
    }


def manifests(spec: PackageSpec, settings: KubeSettings) -> list[dict[str, Any]]:
    """Every object, in the order they are applied."""
    return [
        deployment(spec, settings),
        service(spec, settings),
        pod_disruption_budget(spec, settings),
        horizontal_pod_autoscaler(spec, settings),
    ]


def to_yaml(document: dict[str, Any], title: str = "") -> str:
    """One YAML document, with a comment saying what it is."""
    body = yaml.safe_dump(document, sort_keys=False, default_flow_style=False, width=100)
    return (f"# {title}\n" if title else "") + body
