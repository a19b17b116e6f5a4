"""``scorepack inspect PATH``: which backend, and the model's signature."""

from __future__ import annotations

import json
from typing import Any

import click

from ..loading import resolve_backend
from ..postprocess import plan_outputs
from ..preprocess import plan_image
from .options import create_backend, model_options, preprocess_config, preprocess_options
from .settings_options import settings_file_option
from .table import format_table


def inspect_model(
    path: str, backend: str | None, device: str, options: dict[str, Any], kw: dict[str, Any]
) -> dict[str, Any]:
    """Load the model (no warm-up) and describe it."""
    spec = resolve_backend(path, backend)
    instance = create_backend(spec, path, device, options)
    instance.load()
    try:
        signature = instance.signature
        try:
            plan = plan_image(signature, preprocess_config(kw))
        except ValueError as exc:
            plan = None
            click.echo(f"warning: images cannot be scored with these settings: {exc}", err=True)
        return {
            "path": path,
            "backend": spec.name,
            "framework": f"{spec.framework} {spec.framework_version() or ''}".strip(),
            **instance.describe(),
            "max_batch_size": instance.max_batch_size,
            "signature": signature.to_dict(),
            "classifier_output": plan_outputs(signature).classifier,
            "image_preprocessing": plan.describe() if plan else None,
        }
    finally:
        instance.unload()


@click.command("inspect")
@model_options
@preprocess_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@settings_file_option
def command(
    path: str,
    backend: str | None,
    device: str,
    backend_options: dict[str, Any],
    as_json: bool,
    **kw: Any,
) -> None:
    """Show the backend that recognises PATH and the model's inputs and outputs."""
    info = inspect_model(path, backend, device, backend_options, kw)
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    from ..signature import Signature

    signature = Signature.from_dict(info["signature"])
    lines = [f"path:       {info['path']}", f"backend:    {info['backend']} ({info['framework']})"]
    for key, value in info.items():
        if key not in {
            "path",
            "backend",
            "framework",
            "signature",
            "image_preprocessing",
            "classifier_output",
            "max_batch_size",
        }:
            lines.append(f"{key + ':':<11} {value}")
    limit = info["max_batch_size"]
    lines.append(f"max batch:  {limit if limit else 'any'}")
    lines.append(f"signature:  {signature.name}")
    click.echo("\n".join(lines))
    for title, specs in (("inputs", signature.inputs), ("outputs", signature.outputs)):
        click.echo(f"\n{title}:")
        rows = [[s.name, s.dtype, s.shape_text()] for s in specs]
        click.echo(format_table(["NAME", "DTYPE", "SHAPE"], rows))
    if info["classifier_output"]:
        click.echo(f"\nclassifier output: {info['classifier_output']} (responses carry top-k)")
    plan = info["image_preprocessing"]
    if plan:
        click.echo(
            "\nimages go to {input!r}: {h}x{w}, {channels} channel(s), {layout}, {dtype}, "
            "resize={resize}, color={color}, scale={scale:g}, mean={mean}, std={std}".format(
                h=plan["size"][0], w=plan["size"][1], **plan
            )
        )
    else:
        click.echo("\nno single image input: send JSON tensors")
