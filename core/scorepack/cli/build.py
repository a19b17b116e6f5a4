"""``scorepack build MODEL -o PKG``: a self-contained scoring package for Azure ML.

Several models for one Azure ML deployment: ``scorepack build A=MODEL B=MODEL -o PKG`` or
``--repository DIR`` (laid out as for ``scorepack serve --repository``); see
:mod:`scorepack.generator.several`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ..errors import BackendOptionError
from ..generator.rendering import shell
from ..generator.spec import DeploymentSettings
from .options import backend_flag, backend_option, scoring_config, scoring_options
from .settings_options import settings_file_option


def _models(paths: tuple[str, ...], repository_dir: Path | None) -> tuple[str, list[Any] | None]:
    """One model's PATH (as always), or the entries of a package of several models."""
    from ..errors import PackageError
    from ..generator.several import ModelEntry, repository_entries

    if len(paths) == 1 and repository_dir is None and "=" not in paths[0]:
        if not Path(paths[0]).exists():
            raise click.BadParameter(f"Path {paths[0]!r} does not exist.", param_hint="PATH")
        return paths[0], None
    if not paths and repository_dir is None:
        raise click.UsageError("Give a model: scorepack build PATH -o PKG (or NAME=PATH ...).")
    entries: list[Any] = []
    for entry in paths:
        name, sep, where = entry.partition("=")
        if not sep or not name or not where:
            raise click.UsageError(
                f"{entry!r}: with several models, name each one: NAME=PATH (e.g. resnet=model/)."
            )
        if not Path(where).exists():
            raise click.UsageError(f"{entry!r}: {where} does not exist.")
        entries.append(ModelEntry(name, Path(where)))
    if repository_dir is not None:
        try:
            entries += repository_entries(repository_dir)
        except PackageError as exc:
            raise click.UsageError(exc.message) from exc
    if len(entries) < 2:
        raise click.UsageError(
            "A package of several models needs two or more; for one, give its PATH alone."
        )
    return "", entries


@click.command("build")
@click.argument("paths", metavar="PATH | NAME=PATH...", nargs=-1)
@click.option(
    "--repository",
    "repository_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Package every model of this folder (repo/NAME/ with an optional "
    "model-settings.yaml, as `scorepack serve --repository` reads it) for one deployment.",
)
@click.option(
    "-o",
    "--out",
    "output",
    required=True,
    type=click.Path(),
    help="The package directory to write (with --zip: the archive).",
)
@backend_flag
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
@click.option(
    "--name",
    help="The package's name (and the Azure ML model's); default: PATH's name, or "
    "'models' for several.",
)
@backend_option
@scoring_options
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=DeploymentSettings.threads,
    show_default=True,
    help="scoring requests in flight at once in the one azmlinfsrv worker (gunicorn gets "
    "one thread more, for the probes); Azure ML's concurrent requests per replica follow it.",
)
@click.option(
    "--tracing",
    is_flag=True,
    help="Pin OpenTelemetry's OTLP exporter in the package's environment (at the release "
    "azmlinfsrv pins, 1.33.0, on protobuf 5), so that SCOREPACK_OTLP_ENDPOINT exports its "
    "traces. PyTorch and ONNX Runtime packages; refused for TensorFlow (it needs protobuf 6).",
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
    paths: tuple[str, ...],
    repository_dir: Path | None,
    output: str,
    backend: str | None,
    device: str,
    cuda: int | None,
    name: str | None,
    backend_options: dict[str, Any],
    threads: int,
    tracing: bool,
    as_zip: bool,
    force: bool,
    no_check: bool,
    index_url: str | None,
    **kw: Any,
) -> None:
    """Build a scoring package for the model at PATH: entry script, manifest, model,
    pinned environments, wheels and deployment files.

    \b
    Several models in one package, for one Azure ML deployment (/score?model=NAME):
      scorepack build resnet=resnet50.onnx cnn=cnn/ -o PKG
      scorepack build --repository repo/ -o PKG
    """
    from ..generator import build_package

    path, several = _models(paths, repository_dir)
    config = scoring_config(kw)
    # Azure ML sends a replica no more than its threads take: the worker answers a scoring
    # request beyond them 503 at once, while Azure ML's front end would have queued it
    concurrency = max(2, threads)
    deployment = DeploymentSettings(threads=threads, max_concurrent_requests=concurrency)
    click.echo(
        f"scorepack: building a {device} package for {path or 'several models'} (loading "
        "each model once)…",
        err=True,
    )
    try:
        built = build_package(
            several if several is not None else path,
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
            tracing=tracing,
        )
    except BackendOptionError as exc:  # checked before the model loads: a usage error
        raise click.UsageError(exc.message) from exc
    spec = built.spec
    click.echo(f"scorepack: wrote {built.path} ({len(built.files)} files)", err=True)
    for model in spec.models or (spec,):
        framework = f"{model.framework} {model.framework_version}"
        click.echo(f"  model:    {model.name}, {model.backend} backend, {framework}")
        click.echo(
            f"  device:   {model.device}; signature inputs {', '.join(model.signature.input_names)}"
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
