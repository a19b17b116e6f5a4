"""KServe's InferenceGRPCClient against scorepack's V2 gRPC server:
``python kserve_grpc_check.py HOST:PORT``.

Runs in a process of its own (tests/test_grpc_clients.py starts it): importing kserve
registers its V2 proto's ``inference.*`` names in protobuf's default pool, where
tritonclient.grpc registers the same names, and one process cannot hold both. Prints one
JSON line of what it saw; the test asserts on it.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import grpc
import numpy as np
from kserve import InferenceGRPCClient, InferInput, InferRequest


def _request(model: str, inputs: dict[str, tuple[np.ndarray, str]], rid: str) -> InferRequest:
    items = []
    for name, (value, datatype) in inputs.items():
        item = InferInput(name, list(value.shape), datatype)
        item.set_data_from_numpy(value)
        items.append(item)
    return InferRequest(model, items, request_id=rid)


async def _check(address: str) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    client = InferenceGRPCClient(address, timeout=60)
    try:
        seen["live"] = await client.is_server_live()
        seen["ready"] = await client.is_server_ready()
        seen["model_ready"] = await client.is_model_ready("typed32")
        request = _request(
            "typed32",
            {
                "flags": (np.array([[True, False, True]]), "BOOL"),
                "counts": (np.array([[3, -4]], dtype=np.int64), "INT64"),
                "texts": (np.array([b"ab"], dtype=object), "BYTES"),
            },
            "k-1",
        )
        response = await client.infer(request)
        seen["infer"] = {
            "id": response.id,
            **{
                o.name: [v.decode() if isinstance(v, bytes) else v for v in o.as_numpy().tolist()]
                if o.datatype == "BYTES"
                else o.as_numpy().tolist()
                for o in response.outputs
            },
        }
        echo = _request("echo", {"x": (np.array([[1.5, 2.5]], dtype=np.float32), "FP32")}, "k-2")
        seen["echo"] = (await client.infer(echo)).outputs[0].as_numpy().tolist()
        for model in ("echo", "nope"):
            bad = _request(model, {"x": (np.zeros((1, 3), dtype=np.float32), "FP32")}, "k-3")
            try:
                await client.infer(bad)
                seen[f"error_{model}"] = None
            except grpc.RpcError as exc:
                seen[f"error_{model}"] = [exc.code().name, exc.details()]
    finally:
        await client.close()
    return seen


if __name__ == "__main__":
    print(json.dumps(asyncio.run(_check(sys.argv[1]))))
