"""What a deploy target is. Built-in targets (Azure ML SDK v1 and v2, Kubernetes, KServe)
are default plugins registered through ``register_deploy_targets``, exactly as a
third-party target would be."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from ..generator.spec import PackageSpec

__all__ = ["DeployOptions", "DeployResult", "DeployTarget", "Progress"]

#: called with one line of progress at a time
Progress = Callable[[str], None]


@dataclass(frozen=True)
class DeployOptions:
    """What the user asked ``scorepack deploy``/``delete`` for, beyond the package itself."""

    workspace_config: Path | None = None
    compute: str | None = None
    provision: bool = False
    service_name: str | None = None
    dry_run: bool = False
    #: where --dry-run writes what it would send
    dry_run_dir: Path | None = None
    delete_compute: bool = False
    #: overrides of the package's DeploymentSettings (replicas, cpu_cores, vm_size, …)
    overrides: Mapping[str, Any] = field(default_factory=dict)
    #: print the service's keys after deploying (never done unless asked)
    show_keys: bool = False
    #: how long to wait for the compute and the service to become ready
    wait_timeout_s: float = 3600.0
    #: Kubernetes and KServe: the namespace (default: the context's, else "default")
    namespace: str | None = None
    #: Kubernetes and KServe: the kubeconfig context (default: the current one)
    context: str | None = None
    #: Kubernetes and KServe: the kubeconfig file (default: $KUBECONFIG, ~/.kube/config)
    kubeconfig: Path | None = None
    #: the package's image as pushed to a registry (Kubernetes, KServe, Azure ML's
    #: scorepack runtime)
    image: str | None = None
    #: KServe: where the package's model/ folder was put (s3://, gs://, pvc://, …)
    storage_uri: str | None = None
    #: Azure ML: the server in the container, azmlinfsrv (score.py) or scorepack's own
    runtime: str = "azmlinfsrv"


@dataclass(frozen=True)
class DeployResult:
    """What a deployment produced."""

    service_name: str
    scoring_uri: str | None
    keys_hint: str
    dry_run: bool = False
    written: tuple[Path, ...] = ()
    #: the service's keys, filled only when ``DeployOptions.show_keys`` asked for them
    keys: tuple[str, ...] = field(default=(), repr=False)
    #: requests need ``Authorization: Bearer KEY`` (Azure ML); a cluster's own service does not
    key_auth: bool = True


@runtime_checkable
class DeployTarget(Protocol):
    """A place scoring packages can be deployed to."""

    #: short name used on the command line, e.g. ``azureml-v2``
    name: str
    description: str

    def render(self, spec: PackageSpec) -> dict[str, str]:
        """This target's deployment files for a package: relative path → text. No side effects."""
        ...

    def deploy(
        self, package: Path, spec: PackageSpec, options: DeployOptions, progress: Progress
    ) -> DeployResult:
        """Deploy the package; ``options.dry_run`` writes what would be sent, touching nothing."""
        ...

    def delete(self, spec: PackageSpec | None, options: DeployOptions, progress: Progress) -> None:
        """Remove the service (and the compute when ``options.delete_compute``)."""
        ...
