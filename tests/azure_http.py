"""Azure, played back: the Azure SDKs run for real down to requests' HTTP adapter, where
recorded responses (tests/recordings/*.json, written by hand from the REST API's shapes)
answer and every request is kept for the test to inspect.

Both azureml-core (requests, msrest) and azure-ai-ml (azure-core's RequestsTransport, and
azure-storage-blob for uploads) end in ``requests.adapters.HTTPAdapter.send``; that is the
one place this intercepts. A request with no recording gets a 400 (a status the SDKs do
not retry) and is listed in ``unmatched`` — nothing ever reaches the network.

A recording file is a JSON list of routes::

    {"method": "GET", "url": "regex searched in the URL without its query",
     "responses": [{"status": 200, "headers": {...}, "body": {...} | "text"}, ...]}

Routes are tried in the order the files are named (a test can put a variant first);
responses are used in order and the last one repeats. ``{{sub}}``, ``{{rg}}``, ``{{ws}}`` and
``{{tenant}}`` stand for the test workspace's names, ``{{NAME}}`` for a named group of the
URL regex. A few services answer with what was asked for (the artifact service lists the
paths it was sent, blob storage reports what was uploaded): such a response names a
``responder`` below, and the recording holds the shape of one entry.
"""

from __future__ import annotations

import io
import json
import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import urllib3
from requests.adapters import HTTPAdapter

RECORDINGS = Path(__file__).parent / "recordings"

SUBSCRIPTION = "00000000-1111-2222-3333-444444444444"
RESOURCE_GROUP = "scorepack-rg"
WORKSPACE = "scorepack-ws"
TENANT = "72f988bf-0000-0000-0000-000000000000"


@dataclass
class SentRequest:
    """One request an SDK sent."""

    method: str
    url: str
    headers: dict[str, str]
    body: bytes

    @property
    def path(self) -> str:
        return urlsplit(self.url).path

    @property
    def host(self) -> str:
        return urlsplit(self.url).netloc

    @property
    def query(self) -> dict[str, list[str]]:
        return parse_qs(urlsplit(self.url).query)

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Route:
    method: str
    pattern: re.Pattern[str]
    responses: list[dict[str, Any]]
    source: str
    used: int = 0

    def next_response(self) -> dict[str, Any]:
        response = self.responses[min(self.used, len(self.responses) - 1)]
        self.used += 1
        return response


def _fill(value: Any, names: dict[str, str]) -> Any:
    """Put the URL's named groups ({{name}}) into a recorded response."""
    if isinstance(value, str):
        for key, text in names.items():
            value = value.replace("{{" + key + "}}", text)
        return value
    if isinstance(value, list):
        return [_fill(v, names) for v in value]
    if isinstance(value, dict):
        return {_fill(k, names): _fill(v, names) for k, v in value.items()}
    return value


# --- responses that depend on the request ----------------------------------------------
# A few services answer with what was asked for (the artifact service returns one entry per
# requested path; blob storage reports the size of what was uploaded). A route names its
# responder; the recorded part is the shape of one entry.


def _artifact_batch(
    response: dict[str, Any], sent: SentRequest, names: dict[str, str], azure: RecordedAzure
) -> dict[str, Any]:
    paths = [item["path"] for item in sent.json()["paths"]]
    artifacts, contents = {}, {}
    for path in paths:
        entry = _fill(response["item"], {**names, "path": path})
        artifacts[path] = entry["artifact"]
        contents[path] = entry["content"]
    return {
        "status": response.get("status", 200),
        "body": {"artifacts": artifacts, "artifactContentInformation": contents, "errors": {}},
    }


def _blob_put(
    response: dict[str, Any], sent: SentRequest, names: dict[str, str], azure: RecordedAzure
) -> dict[str, Any]:
    url = sent.url.split("?", 1)[0]
    meta = {k: v for k, v in sent.headers.items() if k.lower().startswith("x-ms-meta-")}
    if sent.query.get("comp") == ["metadata"]:
        # Set Blob Metadata answers 200, Put Blob 201
        azure.blob_metadata[url] = meta
        return {**response, "status": 200, "reason": "OK"}
    azure.blobs[url] = sent.body
    azure.blob_metadata[url] = meta
    return response


def _blob_head(
    response: dict[str, Any], sent: SentRequest, names: dict[str, str], azure: RecordedAzure
) -> dict[str, Any]:
    url = sent.url.split("?", 1)[0]
    if url not in azure.blobs:
        return {"status": 404, "headers": {"x-ms-error-code": "BlobNotFound"}}
    headers = dict(response.get("headers", {}))
    headers.update(azure.blob_metadata.get(url, {}))
    headers["Content-Length"] = str(len(azure.blobs[url]))
    return {**response, "headers": headers, "body": b"", "head": True}


def _arm_echo(
    response: dict[str, Any], sent: SentRequest, names: dict[str, str], azure: RecordedAzure
) -> dict[str, Any]:
    """ARM's answer to a PUT: the resource as sent, plus the fields the service adds."""
    body = sent.json()
    resource_id = sent.path
    added = response.get("add", {})
    properties = {**body.get("properties", {}), **added.get("properties", {})}
    echoed = {
        "id": resource_id,
        "name": resource_id.rsplit("/", 1)[-1],
        **{k: v for k, v in body.items() if k != "properties"},
        **{k: v for k, v in added.items() if k != "properties"},
        "properties": properties,
    }
    return {
        "status": response.get("status", 200),
        "headers": response.get("headers", {}),
        "body": echoed,
    }


def _model_echo(
    response: dict[str, Any], sent: SentRequest, names: dict[str, str], azure: RecordedAzure
) -> dict[str, Any]:
    """The v1 model service's answer to a registration: the recorded model under the name
    and tags sent, version 1 (a package of several models registers each by its name)."""
    sent_body = sent.json()
    name = sent_body["name"]
    body = {
        **response["body"],
        "id": f"{name}:1",
        "name": name,
        "version": 1,
        "kvTags": sent_body.get("kvTags", {}),
    }
    return {"status": response.get("status", 200), "body": body}


RESPONDERS = {
    "model_echo": _model_echo,
    "artifact_batch": _artifact_batch,
    "blob_put": _blob_put,
    "blob_head": _blob_head,
    "arm_echo": _arm_echo,
}


def _substitute(value: Any) -> Any:
    if isinstance(value, str):
        return (
            value.replace("{{sub}}", SUBSCRIPTION)
            .replace("{{rg}}", RESOURCE_GROUP)
            .replace("{{ws}}", WORKSPACE)
            .replace("{{tenant}}", TENANT)
        )
    if isinstance(value, list):
        return [_substitute(v) for v in value]
    if isinstance(value, dict):
        return {k: _substitute(v) for k, v in value.items()}
    return value


def load_routes(*names: str) -> list[Route]:
    """Routes from tests/recordings/NAME.json, in order (earlier files win)."""
    routes = []
    for name in names:
        path = RECORDINGS / f"{name}.json"
        for item in json.loads(path.read_text(encoding="utf-8")):
            routes.append(
                Route(
                    method=item["method"],
                    pattern=re.compile(_substitute(item["url"])),
                    responses=_substitute(item["responses"]),
                    source=f"{name}.json",
                )
            )
    return routes


@dataclass
class RecordedAzure:
    """The fake Azure: routes in, requests out."""

    routes: list[Route]
    sent: list[SentRequest] = field(default_factory=list)
    unmatched: list[SentRequest] = field(default_factory=list)
    #: blob storage contents uploaded so far: URL without query → bytes
    blobs: dict[str, bytes] = field(default_factory=dict)
    blob_metadata: dict[str, dict[str, str]] = field(default_factory=dict)
    #: a directory of this test's own for azureml-core's caches (removed with this object)
    scratch: tempfile.TemporaryDirectory[str] | None = None

    def send(
        self, adapter: HTTPAdapter, request: requests.PreparedRequest, **_: Any
    ) -> requests.Response:
        body = request.body
        if hasattr(body, "read"):
            body = body.read()
        if isinstance(body, str):
            body = body.encode("utf-8")
        sent = SentRequest(
            request.method or "", request.url or "", dict(request.headers), body or b""
        )
        self.sent.append(sent)
        url = sent.url.split("?", 1)[0]
        for route in self.routes:
            match = route.pattern.search(url) if route.method == sent.method else None
            if match is None:
                continue
            names = {k: v for k, v in match.groupdict().items() if v is not None}
            response = _fill(route.next_response(), names)
            responder = response.get("responder")
            if responder:
                response = RESPONDERS[responder](response, sent, names, self)
            return self._response(adapter, request, response)
        self.unmatched.append(sent)
        return self._response(
            adapter,
            request,
            {
                "status": 400,
                "body": {"error": {"code": "NoRecording", "message": f"{sent.method} {url}"}},
            },
        )

    @staticmethod
    def _response(
        adapter: HTTPAdapter, request: requests.PreparedRequest, spec: dict[str, Any]
    ) -> requests.Response:
        body = spec.get("body", b"")
        headers = dict(spec.get("headers", {}))
        if isinstance(body, (dict, list)):
            data = json.dumps(body).encode("utf-8")
            headers.setdefault("Content-Type", "application/json; charset=utf-8")
        elif isinstance(body, str):
            data = body.encode("utf-8")
        else:
            data = body
        if not spec.get("head"):
            headers.setdefault("Content-Length", str(len(data)))
        headers.setdefault("x-ms-request-id", "00000000-0000-0000-0000-000000000000")
        raw = urllib3.HTTPResponse(
            body=io.BytesIO(data),
            headers=headers,
            status=int(spec.get("status", 200)),
            reason=spec.get("reason", "OK"),
            preload_content=False,
            decode_content=False,
            request_method=request.method,
            request_url=request.url,
        )
        # the adapter's own code turns it into a Response, exactly as for a real socket
        return adapter.build_response(request, raw)

    # --- what the tests ask --------------------------------------------------------------

    def find(self, method: str, path_regex: str) -> list[SentRequest]:
        """The requests with this method whose path matches."""
        pattern = re.compile(path_regex)
        return [r for r in self.sent if r.method == method and pattern.search(r.path)]

    def one(self, method: str, path_regex: str) -> SentRequest:
        found = self.find(method, path_regex)
        assert len(found) == 1, f"expected one {method} {path_regex}, got {[r.url for r in found]}"
        return found[0]

    def hosts(self) -> set[str]:
        return {r.host for r in self.sent}


def install(monkeypatch: pytest.MonkeyPatch, *names: str) -> RecordedAzure:
    """Answer every HTTP request in this test from the named recordings."""
    azure = RecordedAzure(load_routes(*names))
    _fresh_discovery_cache(monkeypatch, azure)

    def send(
        adapter: HTTPAdapter, request: requests.PreparedRequest, **kw: Any
    ) -> requests.Response:
        return azure.send(adapter, request, **kw)

    monkeypatch.setattr(HTTPAdapter, "send", send)
    return azure


def _fresh_discovery_cache(monkeypatch: pytest.MonkeyPatch, azure: RecordedAzure) -> None:
    """Give azureml-core an empty service-discovery cache of this test's own.

    azureml-core caches the workspace's discovery document in ``~/.azureml/.discovery``
    (the path is fixed when the module is imported) and fetches it, without credentials,
    only on a miss. Left alone, whether a test sees that request depended on what earlier
    tests or runs had left in the home directory, and tests wrote to it: each test now
    starts from an empty cache, so the discovery request is always sent exactly once.
    """
    try:
        from azureml._base_sdk_common.service_discovery import CachedServiceDiscovery
    except ImportError:
        return
    azure.scratch = tempfile.TemporaryDirectory(prefix="scorepack-azure-")
    cache = str(Path(azure.scratch.name) / ".discovery")
    monkeypatch.setattr(CachedServiceDiscovery.__init__, "__defaults__", (cache,))


# --- credentials that never touch the network --------------------------------------------


def fake_jwt(**claims: Any) -> str:
    """An unsigned JWT with the claims azureml-core reads (tenant, expiry)."""
    import base64

    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    body = {
        "aud": "https://management.core.windows.net/",
        "iss": f"https://sts.windows.net/{TENANT}/",
        "tid": TENANT,
        "oid": "11111111-0000-0000-0000-000000000000",
        "upn": "tester@example.com",
        "exp": int(time.time()) + 3600,
        **claims,
    }
    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(body)}.c2lnbmF0dXJl"


def v1_auth() -> Any:
    """azureml-core's ArmTokenAuthentication holding a fixed token: no login, no network."""
    from azureml.core.authentication import ArmTokenAuthentication

    return ArmTokenAuthentication(fake_jwt())


class FakeCredential:
    """An azure-core TokenCredential that hands out a fixed token."""

    def __init__(self) -> None:
        self.scopes: list[tuple[str, ...]] = []

    def get_token(self, *scopes: str, **_: Any) -> Any:
        from azure.core.credentials import AccessToken

        self.scopes.append(scopes)
        return AccessToken(fake_jwt(), int(time.time()) + 3600)
