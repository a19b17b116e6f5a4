"""The Open Inference Protocol (KServe V2), protocol-neutral: request and response types,
the datatype table, inference over a scorer, model metadata, and Triton's model
configuration and statistics extensions. REST and gRPC are thin
adapters between their wire formats and these."""

from .config import model_config
from .datatypes import (
    DATATYPES,
    array_from_bytes,
    array_from_data,
    array_to_bytes,
    datatype_of,
    numpy_dtype,
)
from .infer import decode_request, infer, infer_blocking
from .metadata import (
    EXTENSIONS,
    model_metadata,
    not_ready,
    platform_of,
    server_metadata,
    tensor_metadata,
)
from .statistics import model_statistics
from .types import InferInput, InferOutput, InferRequest, InferResponse, RequestedOutput

__all__ = [
    "DATATYPES",
    "EXTENSIONS",
    "InferInput",
    "InferOutput",
    "InferRequest",
    "InferResponse",
    "RequestedOutput",
    "array_from_bytes",
    "array_from_data",
    "array_to_bytes",
    "datatype_of",
    "decode_request",
    "infer",
    "infer_blocking",
    "model_config",
    "model_metadata",
    "model_statistics",
    "not_ready",
    "numpy_dtype",
    "platform_of",
    "server_metadata",
    "tensor_metadata",
]
