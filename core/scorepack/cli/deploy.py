"""``scorepack deploy PKG``: put a scoring package on a GPU cluster through a deploy target
(Azure ML SDK v2 by default, SDK v1 with ``--sdk v1``, or any plugin's ``--target``).

The options shared with ``scorepack delete`` live here too.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from ..generator.spec import PackageSpec
from ..targets.base import DeployOptions, DeployResult, Progress

__all__ = ["command", "load_package", "progress_printer", "resolve_target", "target_options"]

F = TypeVar("F", bound=Callable[..., Any])

SDK_TARGETS = {"v1": "azureml-v1", "v2": "azureml-v2"}


def target_options(func: F) -> F:
    """--sdk / --target / --workspace-config / --compute / --name / --dry-run[-dir]."""
    decorators = [
        click.option(
            "--sdk",
            type=click.Choice(sorted(SDK_TARGETS)),
            default="v2",
            show_default=True,
            help="Azure ML SDK: v2 (azure-ai-ml, Kubernetes online endpoint) or v1 "
            "(azureml-core, AKS web service; past its end of support).",
        ),
        click.option(
            "--target",
            "target_name",
            metavar="NAME",
            help="A deploy target by name (azureml-v1, azureml-v2, kubernetes, kserve or a "
            "plugin's); overrides --sdk.",
        ),
        click.option(
            "--workspace-config",
            type=click.Path(dir_okay=False, path_type=Path),
            help="The workspace's config.json (default: ./config.json or "
            ".azureml/config.json here or above).",
        ),
        click.option(
            "--compute",
            help="The AKS (v1) or attached Kubernetes (v2) compute name "
            "[default: the package's, gpu-aks].",
        ),
        click.option(
            "--name",
            "service_name",
            metavar="SERVICE",
            help="Service (v1) or endpoint (v2) name [default: from the package].",
        ),
        click.option(
            "--namespace",
            help="Kubernetes/KServe: the namespace [default: the context's, else default].",
        ),
        click.option(
            "--context",
            "kube_context",
            metavar="NAME",
            help="Kubernetes/KServe: the kubeconfig context [default: the current one].",
        ),
        click.option(
            "--kubeconfig",
            type=click.Path(dir_okay=False, path_type=Path),
            help="Kubernetes/KServe: the kubeconfig file [default: $KUBECONFIG, ~/.kube/config].",
        ),
        click.option(
            "--dry-run",
            is_flag=True,
            help="Write every object and request that would be sent, as JSON files; "
            "touch nothing in Azure.",
        ),
        click.option(
            "--dry-run-dir",
            type=click.Path(file_okay=False, path_type=Path),
            help="Where --dry-run writes [default: ./scorepack-dry-run-TARGET-SERVICE].",
        ),
    ]
    for decorator in reversed(decorators):
        func = decorator(func)
    return func


def resolve_target(sdk: str, target_name: str | None) -> Any:
    """The deploy target named by --target, or the Azure ML one for --sdk."""
    from ..plugins import get_plugins

    targets = get_plugins().deploy_targets
    name = target_name or SDK_TARGETS[sdk]
    if name not in targets:
        raise click.UsageError(
            f"No deploy target named {name!r}. "
            f"Installed targets: {', '.join(sorted(targets)) or 'none'}."
        )
    return targets[name]


def load_package(path: Path) -> PackageSpec:
    """The package's manifest, after checking its model files and wheels against it:
    a damaged package is refused before anything is uploaded."""
    from ..manifest import MODEL_DIR, load_manifest, verify_model, verify_wheels

    spec = load_manifest(path)
    verify_model(spec, path / MODEL_DIR)
    verify_wheels(spec, path)
    return spec


def progress_printer() -> Progress:
    """Progress lines on stderr, each with the seconds since the command started."""
    start = time.monotonic()

    def show(line: str) -> None:
        click.echo(f"[{time.monotonic() - start:5.0f} s] {line}", err=True)

    return show


def _report(result: DeployResult) -> None:
    if result.dry_run:
        click.echo(
            "Dry run: nothing was sent. What would be sent, in order "
            f"({len(result.written)} files):"
        )
        for path in result.written:
            click.echo(f"  {path}")
        return
    click.echo(f"Service: {result.service_name}")
    click.echo(f"Scoring URI: {result.scoring_uri}")
    if not result.key_auth:
        click.echo(result.keys_hint)
        return
    if result.keys:
        for label, key in zip(("Primary key", "Secondary key"), result.keys, strict=False):
            click.echo(f"{label}: {key}")
    else:
        click.echo(result.keys_hint)
    click.echo(
        "Send requests with the header 'Authorization: Bearer KEY', e.g. "
        f"scorepack score {result.scoring_uri} IMAGE --key KEY"
    )


@click.command("deploy")
@click.argument("package", type=click.Path(exists=True, file_okay=False, path_type=Path))
@target_options
@click.option(
    "--provision", is_flag=True, help="Create the AKS compute when it does not exist (SDK v1 only)."
)
@click.option("--vm-size", help="GPU VM size for --provision [default: Standard_NC4as_T4_v3].")
@click.option(
    "--agent-count", type=click.IntRange(min=1), help="Nodes for --provision [default: 1]."
)
@click.option(
    "--cluster-purpose",
    type=click.Choice(["DevTest", "FastProd"]),
    help="AKS cluster purpose for --provision [default: FastProd from 12 vCPUs, else DevTest].",
)
@click.option("--replicas", type=click.IntRange(min=1), help="Replicas / instances [default: 1].")
@click.option("--cpu-cores", type=float, help="CPU cores per replica [default: 2].")
@click.option("--memory-gb", type=float, help="Memory per replica in GB [default: 8].")
@click.option(
    "--gpu-cores",
    type=click.IntRange(min=0),
    help="GPUs per replica [default: 1 for a CUDA package].",
)
@click.option(
    "--max-concurrent-requests",
    type=click.IntRange(min=2),
    help="Requests in flight per replica; above 1 so batching works [default: 32].",
)
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    help="gunicorn threads in the one azmlinfsrv worker [default: 32].",
)
@click.option("--scoring-timeout-ms", type=click.IntRange(min=1), help="[default: 60000]")
@click.option(
    "--max-replicas",
    type=click.IntRange(min=1),
    help="Kubernetes/KServe: most replicas the autoscaler may run [default: 4 x replicas].",
)
@click.option(
    "--image",
    metavar="REF",
    help="Kubernetes/KServe (and --runtime scorepack): the package's image as pushed "
    "(docker build -t REF PKG && docker push REF).",
)
@click.option(
    "--storage-uri",
    metavar="URI",
    help="KServe: where the package's model/ folder is (s3://, gs://, pvc://CLAIM/PATH).",
)
@click.option(
    "--runtime",
    type=click.Choice(["azmlinfsrv", "scorepack"]),
    default="azmlinfsrv",
    show_default=True,
    help="Azure ML SDK v2: the server in the container: azmlinfsrv running score.py, or "
    "scorepack's own (the package's image as a custom container).",
)
@click.option("--show-keys", is_flag=True, help="Print the service's keys when it is up.")
@click.option(
    "--wait-timeout",
    type=click.FloatRange(min=1),
    default=3600.0,
    show_default=True,
    help="Seconds to wait for the compute and the service.",
)
def command(
    package: Path,
    sdk: str,
    target_name: str | None,
    workspace_config: Path | None,
    compute: str | None,
    service_name: str | None,
    dry_run: bool,
    dry_run_dir: Path | None,
    namespace: str | None,
    kube_context: str | None,
    kubeconfig: Path | None,
    provision: bool,
    image: str | None,
    storage_uri: str | None,
    runtime: str,
    show_keys: bool,
    wait_timeout: float,
    **settings: Any,
) -> None:
    """Deploy the scoring package PACKAGE (from `scorepack build`) through Azure ML, or to
    Kubernetes or KServe (--target kubernetes|kserve).

    Azure ML: registers the model, creates or reuses the GPU compute, deploys, waits, and
    prints the scoring URI and how to read the keys (the keys only with --show-keys).
    Kubernetes/KServe: applies the manifests (create or patch), waits for the rollout and
    prints how to reach the service.
    """
    spec = load_package(package)
    target = resolve_target(sdk, target_name)
    if spec.models and not getattr(target, "several_models", False):
        raise click.UsageError(
            f"{package} is a package of several models; the {target.name} target serves one "
            "model a package. Deploy it with Azure ML (--sdk v1 or v2), or serve the models "
            "with `scorepack serve --repository` in an image of your own."
        )
    if runtime != "azmlinfsrv" and target.name != "azureml-v2":
        raise click.UsageError(
            f"--runtime {runtime} goes with Azure ML SDK v2 (--sdk v2); {target.name} always "
            "runs scorepack's own server."
        )
    options = DeployOptions(
        workspace_config=workspace_config,
        compute=compute,
        provision=provision,
        service_name=service_name,
        dry_run=dry_run,
        dry_run_dir=dry_run_dir,
        overrides={k: v for k, v in settings.items() if v is not None},
        show_keys=show_keys,
        wait_timeout_s=wait_timeout,
        namespace=namespace,
        context=kube_context,
        kubeconfig=kubeconfig,
        image=image,
        storage_uri=storage_uri,
        runtime=runtime,
    )
    progress = progress_printer()
    progress(f"Deploying {spec.name} ({spec.backend}, {spec.device}) with {target.name}")
    env = spec.requirements.cuda
    if env is not None:
        # the one fact the cluster must match and Azure ML never checks: the node's driver
        progress(
            f"GPU: CUDA {env.cuda} from pip wheels; the nodes need an NVIDIA driver "
            f">= {env.driver_min}; {env.jit_archs()}"
        )
    result = target.deploy(package.resolve(), spec, options, progress)
    _report(result)
