"""Property-based fuzzing of both hosts' request handling (hypothesis).

Methods, paths, query strings, headers and bodies — random bytes, JSON tensors with
wrong names, shapes and element types, images whole, cut short or lying about their
size — are thrown at the embedded server and at a package under the real azmlinfsrv.
Whatever comes in, the answer must be a 2xx, or a 4xx/503 with a JSON body, and the
server must keep answering. Bounded: a fixed number of examples per host, derandomized
(the same examples every run, so it cannot flake), no deadline per example.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

hypothesis = pytest.importorskip("hypothesis")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from fixture_backends import EchoBackend  # noqa: E402
from images import jpeg, png, truncated_jpeg, with_declared_size  # noqa: E402
from packages import AzmlinfsrvServer, backend_params, child_env, package_for  # noqa: E402
from scorepack.server.limits import HttpLimits  # noqa: E402
from serving_helpers import serving  # noqa: E402

EXAMPLES = 60
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

_TEXT = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40)
_ELEMENT = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False, width=32),
    st.integers(-(2**40), 2**40),
    st.booleans(),
    st.none(),
    _TEXT,
)
_TENSOR = st.recursive(st.lists(_ELEMENT, max_size=6), lambda inner: st.lists(inner, max_size=4))


@st.composite
def bodies(draw: Any) -> tuple[bytes, str | None]:
    kind = draw(st.sampled_from(["bytes", "json", "tensors", "image", "broken-image", "liar"]))
    if kind == "bytes":
        return draw(st.binary(max_size=3000)), draw(
            st.sampled_from([None, "application/octet-stream", "text/plain", "image/png"])
        )
    if kind == "json":
        value = draw(st.recursive(_ELEMENT, lambda c: st.lists(c) | st.dictionaries(_TEXT, c)))
        return json.dumps(value).encode(), "application/json"
    if kind == "tensors":
        names = draw(st.lists(st.sampled_from(["x", "image", "nope", ""]), max_size=3))
        inputs = {n: draw(_TENSOR) for n in names}
        doc: Any = {"inputs": inputs} if draw(st.booleans()) else {"inputs": draw(_TENSOR)}
        return json.dumps(doc).encode(), draw(st.sampled_from(["application/json", None]))
    size = (draw(st.integers(1, 64)), draw(st.integers(1, 64)))
    body = draw(st.sampled_from([jpeg, png]))(*size, seed=draw(st.integers(0, 3)))
    if kind == "broken-image":
        body = truncated_jpeg(body) if body[:2] == b"\xff\xd8" else body[: len(body) // 2]
    if kind == "liar" and body[:4] == b"\x89PNG":
        body = with_declared_size(body, 60_000, 60_000)
    return body, draw(st.sampled_from(["image/jpeg", "image/png", None]))


@st.composite
def requests(draw: Any) -> dict[str, Any]:
    method = draw(st.sampled_from(["POST", "POST", "POST", "GET", "PUT", "HEAD", "OPTIONS"]))
    path = draw(st.sampled_from(["/score", "/score", "/", "/health/ready", "/metrics", "/zz"]))
    params = draw(st.dictionaries(st.sampled_from(["top_k", "raw", "k"]), _TEXT, max_size=3))
    headers = draw(
        st.dictionaries(
            st.sampled_from(["x-request-id", "accept", "x-custom", "content-encoding"]),
            st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=120),
            max_size=3,
        )
    )
    body, ctype = draw(bodies()) if method in ("POST", "PUT") else (b"", None)
    if ctype:
        headers["content-type"] = ctype
    return {"method": method, "url": path, "params": params, "headers": headers, "content": body}


def check(client: httpx.Client, request: dict[str, Any]) -> None:
    got = client.request(**request)
    assert got.status_code < 500 or got.status_code == 503, (request, got.status_code, got.text)
    if got.status_code >= 400 and request["method"] != "HEAD":
        assert got.headers["content-type"].startswith("application/json"), (request, got.text)
        assert isinstance(got.json(), dict)


def still_serving(client: httpx.Client, score: dict[str, Any]) -> None:
    assert client.get("/").status_code == 200
    assert client.post("/score", **score).status_code == 200


@pytest.fixture(scope="module")
def embedded() -> Iterator[httpx.Client]:
    with serving(EchoBackend("m"), limits=HttpLimits(read_timeout_s=10)) as s:
        yield s.client


def test_fuzz_the_embedded_server(embedded: httpx.Client) -> None:
    @FUZZ
    @given(requests())
    def one(request: dict[str, Any]) -> None:
        check(embedded, request)

    one()
    still_serving(embedded, {"json": {"inputs": {"x": [[1.0, 2.0]]}}})


@pytest.fixture(scope="module")
def azml(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    backend = next(p.values[0] for p in backend_params() if not p.marks)
    package = package_for(backend, tmp_path_factory.getbasetemp() / "packages")
    log = tmp_path_factory.mktemp("fuzz-azml") / "azmlinfsrv.log"
    with AzmlinfsrvServer(package, log=log, env=child_env()) as server:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            yield client
        assert "Traceback" not in server.log, server.log[-3000:]


def test_fuzz_the_package_under_azmlinfsrv(azml: httpx.Client) -> None:
    @FUZZ
    @given(requests())
    def one(request: dict[str, Any]) -> None:
        check(azml, request)

    one()
    still_serving(azml, {"content": jpeg(40, 30), "headers": {"content-type": "image/jpeg"}})
