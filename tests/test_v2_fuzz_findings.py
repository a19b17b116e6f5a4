"""What the V2 fuzzing (tests/test_fuzz_v2.py) found, each as a plain deterministic test:
the request it found, its old answer (in the test's comment), the answer now, and a good
request after it. The server serves the fuzzing's models (tests/v2_fuzz.py).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from grpc_helpers import TIMEOUT, GrpcServed, grpc_serving_repository, raw_stub
from scorepack.proto.messages import messages
from v2_fuzz import fuzz_repository


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GrpcServed]:
    with grpc_serving_repository(fuzz_repository(tmp_path_factory.mktemp("findings"))) as s:
        yield s


@pytest.fixture(scope="module")
def client(served: GrpcServed) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=served.url, timeout=TIMEOUT) as c:
        yield c


def tensor(name: str, datatype: str, shape: list[int], data: Any) -> dict[str, Any]:
    return {"name": name, "datatype": datatype, "shape": shape, "data": data}


TYPES = [
    tensor("f", "FP32", [1, 2], [1.5, 2]),
    tensor("i", "INT64", [1, 3], [1, 2, 3]),
    tensor("b", "BOOL", [1, 1], [True]),
]


def infer(client: httpx.Client, model: str, document: Any) -> httpx.Response:
    return client.post(f"/v2/models/{model}/infer", content=json.dumps(document).encode())


def still_serves(client: httpx.Client) -> None:
    got = infer(client, "types", {"inputs": TYPES})
    assert got.status_code == 200, got.text
    assert got.json()["outputs"][0]["data"] == [3.0, 4.0]


def test_an_empty_outputs_list_asks_for_every_output(
    served: GrpcServed, client: httpx.Client
) -> None:
    # was: 200 with "outputs": [] (nothing asked, nothing sent), where gRPC, which cannot
    # tell an empty list from none, answered every output; Triton answers both with all
    got = infer(client, "types", {"inputs": TYPES, "outputs": []})
    assert got.status_code == 200, got.text
    outputs = got.json()["outputs"]
    assert [o["name"] for o in outputs] == ["twice", "total", "negated", "word"]
    assert outputs[1]["data"] == [6]
    request = messages.ModelInferRequest(model_name="types")
    for item in TYPES:
        entry = request.inputs.add(name=item["name"], datatype=item["datatype"])
        entry.shape.extend(item["shape"])
        field = {"FP32": "fp32_contents", "INT64": "int64_contents", "BOOL": "bool_contents"}
        getattr(entry.contents, field[item["datatype"]]).extend(item["data"])
    with raw_stub(served, "ModelInfer") as call:
        response = call(request, timeout=TIMEOUT)
    assert [o.name for o in response.outputs] == ["twice", "total", "negated", "word"]
    still_serves(client)


WIDE = [
    tensor("h", "FP16", [2, 2], [[1, 2], [3, 4]]),
    tensor("u", "UINT8", [2, 3], [[1, 2, 3], [4, 5, 6]]),
    tensor("q", "UINT64", [2, 1], [[2**63], [2**64 - 1]]),
    # a string anywhere in the body sends the numbers through the per-element check
    tensor("s", "BYTES", [2], ["a", "b"]),
]


def test_uint64_values_past_int64_in_json_beside_strings(client: httpx.Client) -> None:
    # was: 400 "Input 'q' has values outside the range of UINT64." for 2^63 and 2^64 - 1,
    # both UINT64 values (a body without strings took them: NumPy's own parse)
    got = infer(client, "wide", {"inputs": WIDE})
    assert got.status_code == 200, got.text
    q = next(o for o in got.json()["outputs"] if o["name"] == "q")
    assert q["datatype"] == "UINT64" and q["data"] == [2**63, 2**64 - 1]
    # /score shares the check (its JSON tensors): the same values, the same answer
    inputs = {t["name"]: t["data"] for t in WIDE}
    got = client.post("/score", params={"model": "wide", "raw": "true"}, json={"inputs": inputs})
    assert got.status_code == 200, got.text
    assert got.json()["outputs"]["q"] == [[2**63], [2**64 - 1]]
    still_serves(client)


@pytest.mark.parametrize("value", [-1, -(2**63)])
def test_uint64_values_outside_its_range_are_still_refused(
    client: httpx.Client, value: int
) -> None:
    document = {"inputs": [*WIDE[:2], tensor("q", "UINT64", [2, 1], [[1], [value]]), WIDE[3]]}
    got = infer(client, "wide", document)
    assert got.status_code == 400, got.text
    assert got.json() == {"error": "Input 'q' has values outside the range of UINT64."}
    still_serves(client)
