"""schemathesis against a running server, from the document it serves (tests/test_openapi*.py)."""

from __future__ import annotations

from typing import Any

import httpx
import schemathesis
from hypothesis import HealthCheck, given, settings

from metrics_helpers import labelled, scrape, total

MODES = ("positive", "negative")


def fuzz_from_document(url: str, mode: str, max_examples: int) -> tuple[set[str], dict[str, Any]]:
    """Requests generated from ``url``'s OpenAPI 3 document: valid ones (``positive``:
    statuses, content types, headers and bodies must be what it promises) or ones that
    break it (``negative``: sent only to operations that take input); never a 5xx.

    Bounded: ``max_examples`` per operation (and, positive, each example the document
    gives once), derandomized, no deadline (a loaded machine
    must not turn slow answers into failures). Returns the operations ("POST /score"...)
    and the server's metrics afterwards, its answers counted by route and status, which
    it checks hold no 5xx.
    """
    from schemathesis import GenerationMode
    from schemathesis.checks import (
        content_type_conformance,
        not_a_server_error,
        response_headers_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    document = httpx.get(url + "/swagger.json", params={"version": "3"}, timeout=30).json()
    schema = schemathesis.openapi.from_dict(document)
    checks = [not_a_server_error]
    if mode == "positive":
        checks += [
            status_code_conformance,
            content_type_conformance,
            response_headers_conformance,
            response_schema_conformance,
        ]
    generation = GenerationMode.POSITIVE if mode == "positive" else GenerationMode.NEGATIVE
    operations = [result.ok() for result in schema.get_all_operations()]
    names = {f"{o.method.upper()} {o.path}" for o in operations}
    if mode == "negative":
        # only what takes input can be sent input that breaks the document
        operations = [o for o in operations if o.definition.raw.get("parameters") or o.body]
    for operation in operations:
        strategies = [(operation.as_strategy(generation_mode=generation), max_examples)]
        if mode == "positive":
            # the document's own examples too, each sent (a V2 infer body of one row per
            # model, with the path naming that model): random bodies rarely match a
            # tensor's shape to its data
            strategies += [(e, 1) for e in operation.get_strategies_from_examples()]
        for strategy, examples in strategies:

            @given(case=strategy)
            @settings(
                max_examples=examples,
                deadline=None,
                derandomize=True,  # the same examples every run
                suppress_health_check=list(HealthCheck),
                database=None,
            )
            def call(case: Any) -> None:
                case.call_and_validate(base_url=url, timeout=30, checks=checks)

            call()
    with httpx.Client(base_url=url, timeout=30) as client:
        answered = scrape(client)
    statuses = {
        labels["status"]: total(answered, "scorepack_requests_total", **labels)
        for labels in labelled(answered, "scorepack_requests_total")
    }
    assert not [s for s in statuses if s.startswith("5")], statuses
    return names, answered
