"""What the Azure ML targets (SDK v1 and SDK v2) share: names, settings, server environment
variables, the workspace config file, the package on disk and ``--dry-run`` output.

Nothing here imports an Azure SDK; the targets import theirs inside the functions that talk
to Azure, so ``scorepack --help`` stays fast.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..azureml.settings import server_environment
from ..errors import DeployError, PackageError
from ..generator.spec import DeploymentSettings, PackageSpec
from .base import DeployOptions, DeployResult, Progress

__all__ = [
    "AZUREML_CORE_INSTALL",
    "AZURE_AI_ML_INSTALL",
    "CPU_BASE_IMAGE",
    "GPU_BASE_IMAGE",
    "DryRun",
    "PackageFiles",
    "WorkspaceConfig",
    "base_image",
    "cluster_purpose",
    "deploy_settings",
    "model_name",
    "server_environment",
    "service_name",
]

AZUREML_CORE_INSTALL = "pip install azureml-core==1.61.0.post4"
AZURE_AI_ML_INSTALL = "pip install azure-ai-ml==1.35.2 azure-identity"

#: used when a backend names no image of its own (a third-party backend): Azure ML's CUDA
#: image. scorepack's own backends name the image of their known-good environment
#: (scorepack.cuda), a plain Ubuntu image, since their wheels bring CUDA themselves
GPU_BASE_IMAGE = "mcr.microsoft.com/azureml/openmpi4.1.0-cuda11.8-cudnn8-ubuntu22.04"
CPU_BASE_IMAGE = "mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu22.04"

#: vCPUs of current Azure GPU VM sizes. AKS "FastProd" clusters need 12 vCPUs in total, so a
#: single 4-core T4 node must be "DevTest". Standard_NC6/NC12/NC24 (K80) are retired.
GPU_VM_VCPUS: Mapping[str, int] = {
    "Standard_NC4as_T4_v3": 4,
    "Standard_NC8as_T4_v3": 8,
    "Standard_NC16as_T4_v3": 16,
    "Standard_NC64as_T4_v3": 64,
    "Standard_NC6s_v3": 6,
    "Standard_NC12s_v3": 12,
    "Standard_NC24s_v3": 24,
    "Standard_NC24ads_A100_v4": 24,
    "Standard_NC48ads_A100_v4": 48,
    "Standard_NC96ads_A100_v4": 96,
    "Standard_NV6ads_A10_v5": 6,
    "Standard_NV12ads_A10_v5": 12,
    "Standard_NV18ads_A10_v5": 18,
    "Standard_NV36ads_A10_v5": 36,
    "Standard_NC40ads_H100_v5": 40,
    "Standard_NC80adis_H100_v5": 80,
}
RETIRED_VM_SIZES = frozenset(
    {
        "Standard_NC6",
        "Standard_NC12",
        "Standard_NC24",
        "Standard_NC24r",
        "Standard_NV6",
        "Standard_NV12",
        "Standard_NV24",
    }
)
FAST_PROD_MIN_VCPUS = 12

#: Azure ML service and online endpoint names: 3-32 characters, a letter first, then
#: lowercase letters, digits and dashes, ending in a letter or digit
_SERVICE_NAME = re.compile(r"^[a-z][a-z0-9-]{1,30}[a-z0-9]$")
_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$")


def service_name(spec: PackageSpec | None, options: DeployOptions) -> str:
    """The service (v1) or endpoint (v2) name: ``--name`` when given, else from the package."""
    if options.service_name:
        name = options.service_name
        if not _SERVICE_NAME.match(name):
            raise DeployError(
                f"{name!r} is not a valid Azure ML service name: use 3-32 lowercase letters, "
                "digits and dashes, starting with a letter and ending with a letter or digit."
            )
        return name
    if spec is None:
        raise DeployError("Name the service: give a package or --name SERVICE.")
    name = re.sub(r"[^a-z0-9-]+", "-", spec.name.lower())
    name = re.sub(r"-{2,}", "-", name).strip("-")
    if not name or not name[0].isalpha():
        name = "sp-" + name
    name = name[:32].rstrip("-")
    return name if len(name) >= 3 else (name + "-svc")[:32]


def model_name(spec: PackageSpec) -> str:
    """The name the model is registered under in the workspace."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", spec.name).strip("-._") or "model"
    if not _MODEL_NAME.match(name):  # pragma: no cover - the substitution above guarantees it
        raise DeployError(f"Cannot derive a model name from {spec.name!r}.")
    return name


def deploy_settings(spec: PackageSpec | None, options: DeployOptions) -> DeploymentSettings:
    """The package's deployment settings with the command line's overrides applied."""
    base = spec.deployment if spec is not None else DeploymentSettings()
    overrides = {k: v for k, v in options.overrides.items() if v is not None}
    if options.compute:
        overrides["compute_name"] = options.compute
    known = {f.name for f in dataclasses.fields(DeploymentSettings)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise DeployError(
            f"Unknown deployment setting(s) {', '.join(unknown)}; "
            f"known: {', '.join(sorted(known))}."
        )
    try:
        settings = dataclasses.replace(base, **overrides)
    except (TypeError, ValueError) as exc:
        raise DeployError(f"Invalid deployment settings: {exc}") from exc
    _check_settings(settings)
    return settings


def _check_settings(settings: DeploymentSettings) -> None:
    problems = []
    if settings.cpu_cores <= 0 or settings.memory_gb <= 0:
        problems.append("cpu_cores and memory_gb must be positive")
    if settings.gpu_cores < 0:
        problems.append("gpu_cores cannot be negative")
    if settings.agent_count < 1:
        problems.append("agent_count must be at least 1")
    if settings.scoring_timeout_ms < 1:
        problems.append("scoring_timeout_ms must be positive")
    if settings.vm_size in RETIRED_VM_SIZES:
        problems.append(
            f"{settings.vm_size} is retired; use a current GPU size such as Standard_NC4as_T4_v3"
        )
    if settings.cluster_purpose not in (None, "DevTest", "FastProd"):
        problems.append("cluster_purpose must be DevTest or FastProd")
    if problems:
        raise DeployError("Invalid deployment settings: " + "; ".join(problems) + ".")


def cluster_purpose(settings: DeploymentSettings) -> str:
    """``FastProd`` when the cluster has the 12 vCPUs Azure requires for it, else ``DevTest``."""
    if settings.cluster_purpose:
        return settings.cluster_purpose
    vcpus = GPU_VM_VCPUS.get(settings.vm_size)
    if vcpus is None:
        # an unknown size: Azure's own default, which fails loudly if the cluster is too small
        return "FastProd"
    return "FastProd" if vcpus * settings.agent_count >= FAST_PROD_MIN_VCPUS else "DevTest"


def base_image(spec: PackageSpec) -> str:
    """The container image the environment builds on: the backend's choice, else Azure ML's."""
    if spec.requirements.base_image:
        return spec.requirements.base_image
    return GPU_BASE_IMAGE if spec.device == "cuda" else CPU_BASE_IMAGE


def package_tags(spec: PackageSpec) -> dict[str, str]:
    """Tags on everything scorepack creates, so a workspace shows where things came from."""
    return {
        "scorepack": spec.scorepack_version or "unknown",
        "backend": spec.backend,
        "framework": f"{spec.framework} {spec.framework_version}".strip(),
        "device": spec.device,
    }


# --- the workspace ---------------------------------------------------------------------


@dataclass(frozen=True)
class WorkspaceConfig:
    """The three names in Azure ML's ``config.json`` (Workspace.write_config / the portal)."""

    subscription_id: str
    resource_group: str
    workspace_name: str
    path: Path | None = None

    @classmethod
    def read(cls, path: Path) -> WorkspaceConfig:
        """Read ``config.json``; the error says which key is missing."""
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise DeployError(
                f"Workspace config {path} not found. Download config.json from the workspace's "
                "page in the Azure portal and pass it with --workspace-config."
            ) from None
        except (OSError, ValueError) as exc:
            raise DeployError(f"Cannot read workspace config {path}: {exc}") from exc
        if not isinstance(data, dict):
            raise DeployError(f"Workspace config {path} is not a JSON object.")
        # the portal writes workspace_name; older files say "workspace"
        values = {
            "subscription_id": data.get("subscription_id"),
            "resource_group": data.get("resource_group"),
            "workspace_name": data.get("workspace_name") or data.get("workspace"),
        }
        missing = [k for k, v in values.items() if not v]
        if missing:
            raise DeployError(f"Workspace config {path} lacks {', '.join(missing)}.")
        return cls(path=path, **{k: str(v) for k, v in values.items()})

    @classmethod
    def find(cls, path: Path | None) -> WorkspaceConfig:
        """``path``, or ``config.json`` / ``.azureml/config.json`` here or in a parent directory."""
        if path is not None:
            return cls.read(path)
        here = Path.cwd()
        for folder in (here, *here.parents):
            for candidate in (folder / "config.json", folder / ".azureml" / "config.json"):
                if candidate.is_file():
                    return cls.read(candidate)
        raise DeployError(
            "No workspace config: pass --workspace-config config.json (download it from the "
            "workspace's page in the Azure portal)."
        )

    @classmethod
    def find_or_placeholder(cls, path: Path | None) -> WorkspaceConfig:
        """For dry runs, which work without a workspace config: the URLs then carry
        placeholders. A config file that was named must still be readable."""
        try:
            return cls.find(path)
        except DeployError:
            if path is not None:
                raise
            return cls("<subscription id>", "<resource group>", "<workspace>")

    @property
    def workspace_id(self) -> str:
        """The workspace's ARM resource id."""
        return (
            f"/subscriptions/{self.subscription_id}/resourceGroups/{self.resource_group}"
            f"/providers/Microsoft.MachineLearningServices/workspaces/{self.workspace_name}"
        )


# --- the package on disk ---------------------------------------------------------------


@dataclass(frozen=True)
class LocalWheel:
    """A wheel the package carries, as ``environment.yml`` names it."""

    entry: str  # the pip line in environment.yml, e.g. ./wheels/scorepack-0.1.0-py3-none-any.whl
    path: Path

    def content_tagged_name(self) -> str:
        """The wheel's file name with a build tag made from its sha256.

        A workspace keeps private wheels by file name; a rebuilt wheel with an unchanged
        version would otherwise silently reuse the stale upload. A build tag (which must
        start with a digit) keeps the name a valid wheel name for pip.
        """
        digest = hashlib.sha256(self.path.read_bytes()).hexdigest()[:12]
        parts = self.path.name[: -len(".whl")].split("-")
        if len(parts) == 5:
            parts.insert(2, f"0{digest}")
        elif len(parts) == 6:
            parts[2] = f"0{digest}"
        else:
            raise PackageError(f"{self.path.name} is not a valid wheel file name.")
        return "-".join(parts) + ".whl"


class PackageFiles:
    """A scoring package directory as the deploy targets need it."""

    ENTRY_SCRIPT = "score.py"
    MANIFEST = "scorepack.yaml"
    ENVIRONMENT = "environment.yml"
    MODEL_DIR = "model"

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def check(self, *extra: str) -> PackageFiles:
        """Fail with a PackageError naming every missing file."""
        if not self.root.is_dir():
            raise PackageError(f"{self.root} is not a scoring package directory.")
        wanted = (self.ENTRY_SCRIPT, self.MANIFEST, self.ENVIRONMENT, self.MODEL_DIR, *extra)
        missing = [name for name in wanted if not (self.root / name).exists()]
        if missing:
            raise PackageError(
                f"{self.root} is not a complete scoring package: {', '.join(missing)} missing. "
                "Rebuild it with `scorepack build MODEL -o PKG`."
            )
        return self

    @property
    def model_dir(self) -> Path:
        return self.root / self.MODEL_DIR

    @property
    def environment_file(self) -> Path:
        return self.root / self.ENVIRONMENT

    def environment(self) -> dict[str, Any]:
        """``environment.yml`` as data."""
        try:
            data = yaml.safe_load(self.environment_file.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise PackageError(f"Cannot read {self.environment_file}: {exc}") from exc
        if not isinstance(data, dict):
            raise PackageError(f"{self.environment_file} is not a conda environment file.")
        return data

    def local_wheels(self) -> list[LocalWheel]:
        """The wheels ``environment.yml`` installs from the package itself."""
        wheels = []
        for entry in _pip_entries(self.environment()):
            if not entry.endswith(".whl") or "://" in entry:
                continue
            path = (self.root / entry).resolve()
            if not path.is_file():
                raise PackageError(
                    f"{self.environment_file} names {entry}, which is not in the package."
                )
            wheels.append(LocalWheel(entry=entry, path=path))
        return wheels

    def model_files(self) -> list[Path]:
        """Every file under model/, sorted."""
        return sorted(p for p in self.model_dir.rglob("*") if p.is_file())


def _pip_entries(environment: Mapping[str, Any]) -> Iterator[str]:
    for dep in environment.get("dependencies") or ():
        if isinstance(dep, dict):
            for entry in dep.get("pip") or ():
                yield str(entry).strip()


def rewrite_pip_entries(
    environment: Mapping[str, Any], replace: Mapping[str, str]
) -> dict[str, Any]:
    """A copy of a conda environment with some pip lines replaced (wheel path → URL)."""
    out = dict(environment)
    deps: list[Any] = []
    for dep in environment.get("dependencies") or ():
        if isinstance(dep, dict) and "pip" in dep:
            dep = {**dep, "pip": [replace.get(str(e).strip(), e) for e in dep.get("pip") or ()]}
        deps.append(dep)
    out["dependencies"] = deps
    return out


def file_record(path: Path, root: Path) -> dict[str, Any]:
    """Name, size and sha256 of a file that would be uploaded."""
    data = path.read_bytes()
    return {
        "path": path.relative_to(root).as_posix(),
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }


# --- --dry-run -------------------------------------------------------------------------


class DryRun:
    """Writes what a deployment would send, one JSON file per step, numbered in order."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.written: list[Path] = []

    def write(self, name: str, data: Any) -> Path:
        """Write ``data`` as ``NN-name.json`` and return its path."""
        if not self.written:
            fresh_dry_run_dir(self.directory)
        path = self.directory / f"{len(self.written) + 1:02d}-{name}.json"
        path.write_text(
            json.dumps(data, indent=2, sort_keys=False, default=str) + "\n", encoding="utf-8"
        )
        self.written.append(path)
        return path

    def result(self, service_name: str, keys_hint: str, progress: Progress) -> DeployResult:
        """Say where the files went and describe the deployment that was not made."""
        progress(f"Dry run: wrote {len(self.written)} files to {self.directory}")
        return DeployResult(
            service_name=service_name,
            scoring_uri=None,
            keys_hint=keys_hint,
            dry_run=True,
            written=tuple(self.written),
        )

    def request(self, name: str, method: str, url: str, body: Any = None, note: str = "") -> Path:
        """Write one HTTP request that would be sent."""
        record: dict[str, Any] = {"method": method, "url": url}
        if body is not None:
            record["body"] = body
        if note:
            record["note"] = note
        return self.write(name, record)


#: the files a dry run writes (NN-step.json, NN-kind-name.yaml)
_DRY_RUN_FILE = re.compile(r"\d{2}-[^/]+\.(json|yaml)")


def fresh_dry_run_dir(directory: Path) -> None:
    """Make ``directory`` and take out the numbered files an earlier dry run left there
    (and only those), so that it holds what this one would send, in order: another
    run's steps (a deploy's beside a delete's, or a --provision run's compute-create)
    read as if they were this run's."""
    directory.mkdir(parents=True, exist_ok=True)
    for old in directory.iterdir():
        if old.is_file() and _DRY_RUN_FILE.fullmatch(old.name):
            old.unlink()


def default_dry_run_dir(target: str, name: str) -> Path:
    """Where ``--dry-run`` writes when no directory is given."""
    return Path.cwd() / f"scorepack-dry-run-{target}-{name}"


# --- waiting with a progress display ---------------------------------------------------


def wait_for(
    poll: Callable[[], tuple[bool, str]],
    *,
    what: str,
    progress: Callable[[str], None],
    interval_s: float,
    timeout_s: float,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> str:
    """Call ``poll`` until it reports done; say each new state, and every minute that it waits.

    ``poll`` returns ``(done, state)``. Returns the last state; a timeout is a DeployError
    that says the operation may still be running in Azure.
    """
    start = clock()
    last_state = None
    last_said = start
    while True:
        done, state = poll()
        now = clock()
        if state != last_state or now - last_said >= 60:
            progress(f"{what}: {state} ({now - start:.0f} s)")
            last_state, last_said = state, now
        if done:
            return state
        if now - start >= timeout_s:
            raise DeployError(
                f"Gave up waiting for {what} after {timeout_s:.0f} s (state {state}). It may "
                "still finish in Azure; check the workspace before deploying again."
            )
        sleep(interval_s)
