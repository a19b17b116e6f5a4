"""PackageSpec: everything a scoring package is rendered from, in one object.

``scorepack build`` resolves a model into a PackageSpec once; ``render(spec)`` turns it into
files with no side effects; deploy targets render their own files from the same spec.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..backend import Requirements
from ..config import ScoringConfig
from ..signature import Signature

__all__ = ["DeploymentSettings", "PackageSpec"]


@dataclass(frozen=True)
class DeploymentSettings:
    """How the service runs on the cluster. Defaults suit one GPU per replica.

    ``max_concurrent_requests`` must stay above 1: Azure ML's default of 1 hands a replica one
    request at a time, which leaves the batcher nothing to batch.
    """

    replicas: int = 1
    cpu_cores: float = 2.0
    memory_gb: float = 8.0
    gpu_cores: int = 1
    max_concurrent_requests: int = 32
    #: scoring requests in flight at once in the one azmlinfsrv worker (gunicorn runs one
    #: thread more, kept for the probes); at least ``max_concurrent_requests``, or Azure ML
    #: sends a replica requests no thread may take (answered 503 ``threads_busy``)
    threads: int = 32
    scoring_timeout_ms: int = 60_000
    auth_enabled: bool = True
    #: probes: seconds
    initial_delay_s: int = 120
    period_s: int = 10
    probe_timeout_s: int = 5
    failure_threshold: int = 6
    #: AKS cluster, when scorepack provisions one
    compute_name: str = "gpu-aks"
    vm_size: str = "Standard_NC4as_T4_v3"
    agent_count: int = 1
    #: AKS "FastProd" needs at least 12 vCPUs in the cluster; None picks DevTest below that
    cluster_purpose: str | None = None

    def __post_init__(self) -> None:
        if self.max_concurrent_requests < 2:
            raise ValueError(
                "max_concurrent_requests must be at least 2, or Azure ML sends one request at "
                "a time and dynamic batching cannot work"
            )
        if self.replicas < 1 or self.threads < 1:
            raise ValueError("replicas and threads must be at least 1")


@dataclass(frozen=True)
class PackageSpec:
    """A resolved scoring package: model, backend, environment, scoring and deployment.

    A package of several models (:attr:`models`) keeps each model's backend, signature
    and scoring settings in that model's own spec.
    """

    name: str
    backend: str
    backend_distribution: str
    #: file names inside the package's model/ directory, relative, POSIX separators
    model_files: tuple[str, ...]
    #: what scorepack.load() is given inside model/ ("." for a directory model)
    model_entry: str
    signature: Signature
    config: ScoringConfig
    device: str  # "cpu" or "cuda"
    requirements: Requirements
    framework: str
    framework_version: str
    backend_options: dict[str, Any] = field(default_factory=dict)
    scorepack_version: str = ""
    backend_version: str = ""
    python_version: str = "3.11"
    wheels: tuple[str, ...] = ()
    deployment: DeploymentSettings = field(default_factory=DeploymentSettings)
    #: package-relative path (``model/...``, ``wheels/...``) → sha256, recorded in the manifest
    file_hashes: Mapping[str, str] = field(default_factory=dict)
    #: the backend plugin's import name; the generated score.py imports it to fail early
    backend_module: str = ""
    #: pinned pip requirements besides the framework's: azmlinfsrv, gunicorn, and the
    #: dependencies of scorepack and of the backend plugin, at the versions that built it
    runtime_requirements: tuple[str, ...] = ()
    #: built with ``--tracing``: the runtime pins carry the OTLP exporter of azmlinfsrv's
    #: OpenTelemetry release, on protobuf 5 (see :mod:`scorepack.generator.tracing`)
    tracing: bool = False
    #: seconds the build took to load the model (on its CPU); sizes the startup probes
    load_seconds: float | None = None
    #: a package of several models (one Azure ML deployment): each model's own spec, its
    #: files under ``model/NAME/``; empty for a package of one model. This spec then holds
    #: what they share: name, device, environment, wheels and deployment settings.
    models: tuple[PackageSpec, ...] = ()

    @property
    def several(self) -> bool:
        """True for a package of several models."""
        return bool(self.models)
