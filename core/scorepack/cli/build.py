"""``scorepack build MODEL -o PKG``: a self-contained scoring package for Azure ML."""

from __future__ import annotations

from typing import Any

import click

from ..errors import BackendOptionError
from ..generator.rendering import shell
from ..generator.spec import DeploymentSettings
from .options import backend_option, scoring_config, scoring_options
from .settings_options import settings_file_option


@click.command("build")
@click.argument("path", type=click.Path(exists=True))
@click.option(
    "-o",
    "--out",
    "output",
    required=True,
    type=click.Path(),
    help="The package directory to write (with --zip: the archive).",
)
@click.option("--backend", help="Backend name; detected from PATH when left out.")
@click.option(
    "--device",
    type=click.Choice(["cpu", "cuda"]),
    default="cuda",
    show_default=True,
    help="What the package runs on: its pinned framework build and base image follow.",
)
@click.option(
    "--cuda",
    type=click.IntRange(min=11),
    help="CUDA major of a GPU package, where the framework offers more than one "
    "(torch and onnxruntime: 12 or 13) [default: the known-good default].",
)
@click.option("--name", help="The package's name (and the Azure ML model's); default: PATH's name.")
@backend_option
@scoring_options
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=DeploymentSettings.threads,
    show_default=True,
    help="gunicorn threads in the one azmlinfsrv worker.",
)
@click.option("--zip", "as_zip", is_flag=True, help="Write a .zip archive instead of a directory.")
@click.option("--force", is_flag=True, help="Replace OUTPUT if it exists.")
@click.option(
    "--no-check",
    is_flag=True,
    help="Do not resolve the package's environment with pip afterwards (scorepack check).",
)
@click.option("--index-url", help="The package index the check resolves against.")
@settings_file_option
def command(
    path: str,
    output: str,
    backend: str | None,
    device: str,
    cuda: int | None,
    name: str | None,
    backend_options: dict[str, Any],
    threads: int,
    as_zip: bool,
    force: bool,
    no_check: bool,
    index_url: str | None,
    **kw: Any,
) -> None:
    """Build a scoring package for the model at PATH: entry script, manifest, model,
    pinned environments, wheels and deployment files."""
    from ..generator import build_package

    config = scoring_config(kw)
    concurrency = max(DeploymentSettings.max_concurrent_requests, threads)
    deployment = DeploymentSettings(threads=threads, max_concurrent_requests=concurrency)
    click.echo(
        f"scorepack: building a {device} package for {path} (loading the model once)…", err=True
    )
    try:
        built = build_package(
            path,
            output,
            as_zip=as_zip,
            force=force,
            backend=backend,
            device=device,
            cuda=cuda,
            name=name,
            options=backend_options,
            config=config,
            deployment=deployment,
        )
    except BackendOptionError as exc:  # checked before the model loads: a usage error
        raise click.UsageError(exc.message) from exc
    spec = built.spec
    click.echo(f"scorepack: wrote {built.path} ({len(built.files)} files)", err=True)
    framework = f"{spec.framework} {spec.framework_version}"
    click.echo(f"  model:    {spec.name}, {spec.backend} backend, {framework}")
    click.echo(
        f"  device:   {spec.device}; signature inputs {', '.join(spec.signature.input_names)}"
    )
    click.echo(f"  wheels:   {', '.join(w.split('/')[-1] for w in spec.wheels)}")
    if spec.requirements.cuda is not None:
        env = spec.requirements.cuda
        click.echo(
            f"  cuda:     CUDA {env.cuda}, NVIDIA driver >= {env.driver_min}; {env.jit_archs()}"
        )
    if no_check:
        click.echo("  check:    skipped (--no-check)", err=True)
    elif as_zip:
        click.echo("  check:    run `scorepack check` on the unpacked archive", err=True)
    else:
        from .check import INCOMPLETE, report_check

        status = report_check(built.path, index_url)
        if status == 1:
            raise click.ClickException(
                f"The package was written to {built.path}, but its environment does not "
                "resolve (above): it would not install. Fix the pins, or choose another "
                "--cuda, and build again."
            )
        if status == INCOMPLETE:
            click.echo(
                "scorepack: warning: part of the environment could not be checked from here "
                "(above); check the package where that index is reachable.",
                err=True,
            )
    if not as_zip:
        click.echo("next:")
        cpu = [] if device == "cpu" else ["--device", "cpu"]
        click.echo("  " + shell("scorepack", "serve-azureml", str(built.path), *cpu))
        click.echo(
            "  "
            + shell(
                "scorepack",
                "deploy",
                str(built.path),
                "--workspace-config",
                "config.json",
                "--compute",
                spec.deployment.compute_name,
            )
        )
