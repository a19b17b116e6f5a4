"""Read a /metrics page with prometheus-client's own parser, as Prometheus would."""

from __future__ import annotations

from collections.abc import Mapping

import httpx
from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    """Every sample of an exposition: (name, labels) → value."""
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def scrape(client: httpx.Client, url: str = "/metrics") -> Samples:
    response = client.get(url)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain"), response.headers
    return parse(response.text)


def value(samples: Samples, name: str, **labels: str) -> float:
    """The one sample called ``name`` whose labels include ``labels``; 0 when none has them
    (a counter that never moved has no sample), an error when several match."""
    found = [
        v for (n, have), v in samples.items() if n == name and set(labels.items()) <= set(have)
    ]
    assert len(found) <= 1, f"{name}{labels} matches {len(found)} samples"
    return found[0] if found else 0.0


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of every sample called ``name`` whose labels include ``labels``."""
    return sum(
        v for (n, have), v in samples.items() if n == name and set(labels.items()) <= set(have)
    )


def labelled(samples: Samples, name: str) -> list[Mapping[str, str]]:
    """The label sets ``name`` has samples for."""
    return [dict(have) for (n, have), _ in samples.items() if n == name]
