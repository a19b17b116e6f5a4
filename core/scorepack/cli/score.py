"""``scorepack score URL FILE...``: post images or JSON tensors, print the answers.

``--protocol score`` (the default) posts to Azure ML's ``/score``; ``v2`` and ``grpc`` speak
the Open Inference Protocol over REST or gRPC: an image goes as a BYTES input (the server
decodes and preprocesses it as ``/score`` does), JSON tensors as typed inputs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
import httpx
import numpy as np

from ..client import ScoringClient
from ..client_v2 import PROTOCOLS, V2Result, default_model, file_inputs, v2_client
from ..errors import RemoteError


def _summary(name: str, response: Any) -> str:
    body = response.body
    batch = f", batch {response.batch_size}" if response.batch_size else ""
    lines = [f"{name}  ({response.elapsed_ms:.1f} ms{batch})"]
    for row_index, row in enumerate(body.get("predictions", [])):
        if len(body["predictions"]) > 1:
            lines.append(f"  row {row_index}:")
        for rank, entry in enumerate(row["top_k"], 1):
            label = f"  {entry['label']}" if "label" in entry else ""
            lines.append(f"  {rank:>2}. class {entry['index']:<6} {entry['score']:.6f}{label}")
    for output, value in body.get("outputs", {}).items():
        text = json.dumps(value)
        lines.append(f"  {output}: {text if len(text) <= 200 else text[:197] + '...'}")
    return "\n".join(lines)


@click.command("score")
@click.argument("url")
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--key", envvar="SCOREPACK_KEY", help="Sent as 'Authorization: Bearer KEY'.")
@click.option("--top-k", type=int, help="Classes to ask for per row (default: the server's).")
@click.option("--raw", is_flag=True, help="Ask for raw outputs too.")
@click.option("--json", "as_json", is_flag=True, help="Print the JSON answers.")
@click.option("--timeout", type=float, default=60.0, show_default=True, help="Seconds per request.")
@click.option(
    "--protocol",
    type=click.Choice(PROTOCOLS),
    help="score: Azure ML's POST /score; v2: Open Inference Protocol REST; grpc: its gRPC "
    "service (URL host:port). Default: grpc for a grpc:// URL, else score.",
)
@click.option(
    "--model",
    help="The model (default: the one the server serves); /score sends it as ?model=NAME.",
)
@click.option(
    "--model-version", help="The model version (default: the server's); /score: ?version=V."
)
def command(
    url: str,
    files: tuple[str, ...],
    key: str | None,
    top_k: int | None,
    raw: bool,
    as_json: bool,
    timeout: float,
    protocol: str | None,
    model: str | None,
    model_version: str | None,
) -> None:
    """Score image files (JPEG, PNG) or JSON tensor files against URL."""
    protocol = protocol or ("grpc" if url.startswith("grpc://") else "score")
    if protocol != "score":
        _score_v2(url, files, protocol, key, timeout, model, model_version, top_k, as_json)
        return
    results = []
    # /score on a server of several models: /score?model=NAME[&version=V]
    with ScoringClient(url, key=key, timeout=timeout, model=model, version=model_version) as client:
        for name in files:
            try:
                response = client.score(Path(name), top_k=top_k, raw=raw)
            except httpx.TransportError as exc:
                raise click.ClickException(f"could not reach {client.url}: {exc}") from exc
            except RemoteError as exc:
                if model is None and "?model=NAME" in exc.message:
                    # the server names its query parameter; this command's is --model
                    raise click.ClickException(f"{exc.message} Here: --model NAME.") from exc
                raise
            if as_json:
                results.append({"file": name, **response.body})
            else:
                click.echo(_summary(name, response))
    if as_json:
        click.echo(json.dumps(results[0] if len(results) == 1 else results, indent=2))


def _score_v2(
    url: str,
    files: tuple[str, ...],
    protocol: str,
    key: str | None,
    timeout: float,
    model: str | None,
    version: str | None,
    top_k: int | None,
    as_json: bool,
) -> None:
    results = []
    try:
        with v2_client(url, protocol, key=key, timeout=timeout) as client:
            name = model or default_model(client)
            metadata = client.model_metadata(name, version)
            for path in files:
                inputs = file_inputs(Path(path).read_bytes(), metadata)
                result = client.infer(name, inputs, version=version)
                if as_json:
                    results.append({"file": path, **_result_json(result)})
                else:
                    click.echo(_v2_summary(path, result, top_k or 5))
    except httpx.TransportError as exc:
        raise click.ClickException(f"could not reach {url}: {exc}") from exc
    if as_json:
        click.echo(json.dumps(results[0] if len(results) == 1 else results, indent=2))


def _result_json(result: V2Result) -> dict[str, Any]:
    outputs = {}
    for name, array in result.outputs.items():
        data = array.tolist()
        if array.dtype == object:
            data = [v.decode("utf-8", "replace") for v in array.reshape(-1).tolist()]
        outputs[name] = {"shape": list(array.shape), "dtype": str(array.dtype), "data": data}
    return {
        "model_name": result.model_name,
        "model_version": result.model_version,
        "outputs": outputs,
    }


def _v2_summary(name: str, result: V2Result, top_k: int) -> str:
    batch = f", batch {result.batch_size}" if result.batch_size else ""
    model = result.model_name
    if result.model_version:
        model += f" version {result.model_version}"
    lines = [f"{name}  ({result.elapsed_ms:.1f} ms{batch}, model {model})"]
    for output, array in result.outputs.items():
        lines.append(f"  {output}: {array.dtype} {list(array.shape)}")
        if array.ndim == 2 and array.shape[1] > 1 and array.dtype.kind == "f":
            # a classifier-shaped output: its top k per row, as /score's summary shows
            for row_index, row in enumerate(array):
                if array.shape[0] > 1:
                    lines.append(f"  row {row_index}:")
                # ties in index order, as /score's top_k ranks them (a reversed argsort
                # listed tied classes backwards: the same answer read differently)
                best = np.argsort(-row, kind="stable")[:top_k]
                for rank, index in enumerate(best, 1):
                    lines.append(f"  {rank:>2}. class {int(index):<6} {float(row[index]):.6f}")
            continue
        text = json.dumps(_result_json(result)["outputs"][output]["data"])
        lines.append(f"    {text if len(text) <= 200 else text[:197] + '...'}")
    return "\n".join(lines)
