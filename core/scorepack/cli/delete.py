"""``scorepack delete PKG|--name SERVICE``: remove a deployed service and, with
``--delete-compute``, its compute — the clean-up that stops the GPU bill."""

from __future__ import annotations

from pathlib import Path

import click

from ..targets.base import DeployOptions
from .deploy import progress_printer, resolve_target, target_options


@click.command("delete")
@click.argument(
    "package", required=False, type=click.Path(exists=True, file_okay=False, path_type=Path)
)
@target_options
@click.option(
    "--delete-compute",
    is_flag=True,
    help="Also delete the compute: v1 deletes the AKS cluster Azure ML created; v2 "
    "detaches the Kubernetes compute and prints how to delete the cluster.",
)
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option(
    "--wait-timeout",
    type=click.FloatRange(min=1),
    default=3600.0,
    show_default=True,
    help="Seconds to wait for the deletion to finish.",
)
def command(
    package: Path | None,
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
    delete_compute: bool,
    yes: bool,
    wait_timeout: float,
) -> None:
    """Delete the service deployed from PACKAGE (or named by --name)."""
    if package is None and not service_name:
        raise click.UsageError("Name what to delete: a package directory or --name SERVICE.")
    spec = None
    if package is not None:
        from ..manifest import load_manifest

        spec = load_manifest(package)
    target = resolve_target(sdk, target_name)
    options = DeployOptions(
        workspace_config=workspace_config,
        compute=compute,
        service_name=service_name,
        dry_run=dry_run,
        dry_run_dir=dry_run_dir,
        delete_compute=delete_compute,
        wait_timeout_s=wait_timeout,
        namespace=namespace,
        context=kube_context,
        kubeconfig=kubeconfig,
    )
    if not dry_run and not yes:
        name = service_name or (spec.name if spec is not None else "")
        extra = " and its compute" if delete_compute else ""
        click.confirm(f"Delete the service for {name}{extra} ({target.name})?", abort=True)
    target.delete(spec, options, progress_printer())
