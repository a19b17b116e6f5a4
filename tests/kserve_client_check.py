"""KServe's InferenceRESTClient against a V2 server:
``python kserve_client_check.py URL JPEG``.

Runs in a process of its own (tests/test_v2_clients.py starts it): importing kserve
registers the V2 protos' ``inference.*`` names in protobuf's default pool, as
tritonclient.grpc does, and one process cannot hold both. Prints one JSON line of what it
saw; the test asserts on it. JPEG is an image file, sent to the ``cnn`` model as a BYTES
input in the binary extension (the test compares the answer with ``/score``'s).
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import httpx
import numpy as np
from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig
from kserve.protocol.infer_type import RequestedOutput


def _types_request(binary: bool) -> InferRequest:
    inputs = []
    for name, datatype, value in (
        ("f", "FP32", np.array([[1.5, 2.0]], dtype=np.float32)),
        ("i", "INT64", np.array([[1, 2, 3]], dtype=np.int64)),
        ("b", "BOOL", np.array([[True]])),
    ):
        item = InferInput(name, list(value.shape), datatype)
        item.set_data_from_numpy(value, binary_data=binary)
        inputs.append(item)
    outputs = [RequestedOutput("twice", {"binary_data": binary}), RequestedOutput("total")]
    return InferRequest("types", inputs, request_id=f"k-{binary}", request_outputs=outputs)


def _jpeg_request(picture: bytes) -> InferRequest:
    image = InferInput("image", [1], "BYTES")
    # JPEG bytes are not UTF-8: JSON cannot carry them, the binary extension can
    image.set_data_from_numpy(np.array([picture], dtype=np.object_), binary_data=True)
    probs = RequestedOutput("probs", {"binary_data": False})
    return InferRequest("cnn", [image], request_id="k-jpeg", request_outputs=[probs])


async def _check(url: str, jpeg_path: str) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    client = InferenceRESTClient(RESTConfig(protocol="v2", timeout=60))
    try:
        seen["live"] = await client.is_server_live(url)
        seen["ready"] = await client.is_server_ready(url)
        seen["model_ready"] = await client.is_model_ready(url, "types")
        for binary in (False, True):
            response = await client.infer(url, _types_request(binary), model_name="types")
            seen[f"infer_binary_{binary}"] = {
                "id": response.id,
                **{o.name: o.as_numpy().tolist() for o in response.outputs},
            }
        with open(jpeg_path, "rb") as file:
            picture = file.read()
        response = await client.infer(url, _jpeg_request(picture), model_name="cnn")
        seen["jpeg"] = {o.name: o.as_numpy().tolist() for o in response.outputs}
        bad = InferInput("x", [1, 3], "FP32")
        bad.set_data_from_numpy(np.zeros((1, 3), dtype=np.float32), binary_data=False)
        for model in ("echo", "nope"):
            try:
                await client.infer(url, InferRequest(model, [bad]), model_name=model)
                seen[f"error_{model}"] = None
            except httpx.HTTPStatusError as exc:
                seen[f"error_{model}"] = [exc.response.status_code, str(exc)]
    finally:
        await client.close()
    return seen


if __name__ == "__main__":
    print(json.dumps(asyncio.run(_check(sys.argv[1], sys.argv[2]))))
