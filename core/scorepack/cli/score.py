"""``scorepack score URL FILE...``: post images or JSON tensors, print the answers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
import httpx

from ..client import ScoringClient


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
@click.option("--top-k", type=int)
@click.option("--raw", is_flag=True, help="Ask for raw outputs too.")
@click.option("--json", "as_json", is_flag=True, help="Print the JSON answers.")
@click.option("--timeout", type=float, default=60.0, show_default=True, help="Seconds per request.")
def command(
    url: str,
    files: tuple[str, ...],
    key: str | None,
    top_k: int | None,
    raw: bool,
    as_json: bool,
    timeout: float,
) -> None:
    """Score image files (JPEG, PNG) or JSON tensor files against URL."""
    results = []
    with ScoringClient(url, key=key, timeout=timeout) as client:
        for name in files:
            try:
                response = client.score(Path(name), top_k=top_k, raw=raw)
            except httpx.TransportError as exc:
                raise click.ClickException(f"could not reach {client.url}: {exc}") from exc
            if as_json:
                results.append({"file": name, **response.body})
            else:
                click.echo(_summary(name, response))
    if as_json:
        click.echo(json.dumps(results[0] if len(results) == 1 else results, indent=2))
