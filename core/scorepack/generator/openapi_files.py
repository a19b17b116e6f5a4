"""The package's API documents, where azmlinfsrv picks them up.

azmlinfsrv serves ``/swagger.json`` (``?version=2``, ``3``, ``3.1``) from files in the app
root when they exist (``swagger.json`` or ``swagger2.json``, ``swagger3.json``,
``swagger3.1.json``; its ``server/swagger.py``), and otherwise a generic document that
says nothing about the model. A package carries all three, made from the same signature
and settings the embedded server describes itself with (:mod:`scorepack.openapi`); a
package of several models carries one document for them all, as ``scorepack serve
--repository`` serves it.
"""

from __future__ import annotations

import json

from ..openapi import SWAGGER_FILES, api_document, package_facts
from .spec import PackageSpec

__all__ = ["SWAGGER_DESCRIPTIONS", "SWAGGER_DESCRIPTIONS_SEVERAL", "swagger_files"]

#: file → what the package README says of it
SWAGGER_DESCRIPTIONS = {
    "swagger.json": "the scoring API from the model's signature, Swagger 2.0: azmlinfsrv "
    "serves it at `/swagger.json`",
    "swagger3.json": "the same as OpenAPI 3.0 (`/swagger.json?version=3`)",
    "swagger3.1.json": "the same as OpenAPI 3.1 (`/swagger.json?version=3.1`)",
}
#: the same, for a package of several models
SWAGGER_DESCRIPTIONS_SEVERAL = {
    **SWAGGER_DESCRIPTIONS,
    "swagger.json": "the scoring API of every model (`/score?model=NAME`), from their "
    "signatures, Swagger 2.0: azmlinfsrv serves it at `/swagger.json`",
}


def swagger_files(spec: PackageSpec) -> dict[str, str]:
    """``{file name: JSON text}`` for every document kind azmlinfsrv serves."""
    facts = package_facts(spec)
    return {
        name: json.dumps(api_document(facts, kind, title=spec.name), indent=2, ensure_ascii=False)
        + "\n"
        for kind, name in SWAGGER_FILES.items()
    }
