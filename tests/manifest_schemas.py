"""Validation of generated manifests against upstream schemas, offline.

* Built-in kinds (Deployment, Service, ...): ``kubernetes-validate``, which ships the
  upstream Kubernetes JSON schemas, in strict mode (an unknown field is an error: the API
  server would otherwise drop it silently) at :data:`KUBERNETES_VERSION`.
* KServe kinds: the CRDs in ``../shared/schemas/kserve/`` (from the project root). Their
  ``openAPIV3Schema`` is made a JSON schema as the README there says
  (``x-kubernetes-int-or-string`` → ``anyOf`` integer/string, other ``x-kubernetes-*`` keys
  dropped) and made strict the same way: an object with ``properties`` and no
  ``additionalProperties`` (or ``x-kubernetes-preserve-unknown-fields``) takes no others.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

#: the Kubernetes API the manifests are checked against (the client is 36.x)
KUBERNETES_VERSION = "1.36"
KSERVE_SCHEMAS = Path(__file__).resolve().parent.parent.parent / "shared" / "schemas" / "kserve"
_CRD_FILES = {
    "InferenceService": "serving.kserve.io_inferenceservices.yaml",
    "ServingRuntime": "serving.kserve.io_servingruntimes.yaml",
    "ClusterServingRuntime": "serving.kserve.io_clusterservingruntimes.yaml",
}


def validate_builtin(document: dict[str, Any]) -> None:
    """Raise when a built-in kind does not match the upstream schema (strict)."""
    import kubernetes_validate

    kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)


def kserve_schemas_or_skip() -> Path:
    if not KSERVE_SCHEMAS.is_dir():
        pytest.skip(f"KServe's CRD schemas are not at {KSERVE_SCHEMAS} (../shared/schemas/kserve)")
    return KSERVE_SCHEMAS


def _convert(node: Any, strict: bool) -> Any:
    if isinstance(node, list):
        return [_convert(item, strict) for item in node]
    if not isinstance(node, dict):
        return node
    preserve = bool(node.get("x-kubernetes-preserve-unknown-fields"))
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key.startswith("x-kubernetes-"):
            continue
        out[key] = _convert(value, strict)
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if strict and "properties" in out and "additionalProperties" not in out and not preserve:
        out["additionalProperties"] = False
    return out


@cache
def kserve_schema(kind: str, version: str) -> dict[str, Any]:
    """The JSON schema of a KServe kind at an API version (e.g. ``v1beta1``)."""
    crd = yaml.safe_load((kserve_schemas_or_skip() / _CRD_FILES[kind]).read_text())
    for entry in crd["spec"]["versions"]:
        if entry["name"] == version:
            return _convert(entry["schema"]["openAPIV3Schema"], strict=True)  # type: ignore[no-any-return]
    raise KeyError(f"{kind} has no version {version}")


def validate_kserve(document: dict[str, Any]) -> None:
    """Raise ``jsonschema.ValidationError`` when a KServe object does not match its CRD."""
    import jsonschema

    group, _, version = document["apiVersion"].partition("/")
    assert group == "serving.kserve.io", document["apiVersion"]
    schema = kserve_schema(document["kind"], version)
    jsonschema.validate(document, schema, cls=jsonschema.Draft7Validator)


def validate(document: dict[str, Any]) -> None:
    """Either validator, by the document's API group."""
    if document["apiVersion"].startswith("serving.kserve.io/"):
        validate_kserve(document)
    else:
        validate_builtin(document)
