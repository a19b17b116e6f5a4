"""The statistics extension: per model version, what it served and where the time went.

One answer for both adapters: V2 REST returns :func:`model_statistics` as it is (the JSON
of Triton's ``ModelStatisticsResponse``); gRPC parses the same mapping into the message.
Durations are ``{"count", "ns"}``: a count and a sum of nanoseconds, since the version was
loaded (a reload starts again from zero, as Triton's do).

Where each number comes from (``Scorer.stats.inference``, :class:`~scorepack.telemetry.
stats.InferenceStats`, counts every scoring request a model version takes, over
``/score``, V2 REST and V2 gRPC alike, from the moment the request is admitted. As in
Triton, requests refused before the model takes them are not counted: those the protocol
layer refuses (unknown model, unauthorised, a body too large or of the wrong content
type), those admission refuses (queue full, as Triton's failed enqueue), and those
refused as bad input while decoded and checked (Triton checks a request's inputs in
``PrepareForInference``, before its statistics start). See ``Scorer._counted``):

=====================  ==================================================================
Triton field           scorepack
=====================  ==================================================================
``inference_count``    rows of the requests that got their outputs (a request of 64 rows
                       counts 64)
``execution_count``    model calls that succeeded (a batch of 8 requests is one; the
                       warm-up's calls are not counted)
``last_inference``     when the last request (answered or failed) finished, ms since
                       the epoch; 0 before any
``success``            requests that got their outputs; ns: admission to outputs in hand
``fail``               admitted requests that did not: timed out or cancelled while
                       they waited (Triton's REJECTED and CANCELED), or failed in the
                       model call (its own refusal of an input included, as Triton's
                       BACKEND); ns: admission to the failure
``queue``              the successful requests' waits: for admission, a decode slot and
                       a decode thread, then in the batcher's queue for a model call
``compute_input``      their decoding: body to checked, preprocessed, model-ready arrays
                       (JSON or binary tensors, image decoding and resizing), in the
                       decode pool
``compute_infer``      the model call each rode in (the whole call, for each of its
                       requests: Triton's rule too)
``compute_output``     from the end of that call to the outputs in the waiting thread's
                       hands (the batch split into answers, the hand-back)
``cache_hit``          always zero: scorepack has no response cache
``batch_stats``        per batch size (rows of a model call), the calls that succeeded:
                       ``compute_input`` gathering the requests' inputs into one batch,
                       ``compute_infer`` the call, ``compute_output`` splitting its
                       outputs into the requests' answers (each with the calls' count)
=====================  ==================================================================

The answer's encoding (JSON, protobuf) and, for ``/score``, its postprocessing happen
after ``success`` ends and are in none of these.
"""

from __future__ import annotations

from typing import Any

from ..errors import BadRequestError
from ..repository import READY, Repository
from ..scorer import Scorer
from .metadata import not_ready

__all__ = ["model_statistics", "scorer_statistics"]

_NS = 1e9


def _duration(count: int, seconds: float) -> dict[str, int]:
    return {"count": int(count), "ns": max(0, round(seconds * _NS))}


def scorer_statistics(scorer: Scorer) -> dict[str, Any]:
    """One model version's ``$model_stat`` object."""
    numbers = scorer.stats.inference.snapshot()
    executions = dict(scorer.batcher.stats.executions)  # one copy: the model thread writes
    success = int(numbers["success"])
    stat: dict[str, Any] = {"name": scorer.name}
    if scorer.version is not None:
        stat["version"] = scorer.version
    stat.update(
        last_inference=int(numbers["last_ms"]),
        inference_count=int(numbers["rows"]),
        execution_count=sum(e[0] for e in executions.values()),
        inference_stats={
            "success": _duration(success, numbers["success_seconds"]),
            "fail": _duration(int(numbers["fail"]), numbers["fail_seconds"]),
            "queue": _duration(success, numbers["queue_seconds"]),
            "compute_input": _duration(success, numbers["input_seconds"]),
            "compute_infer": _duration(success, numbers["infer_seconds"]),
            "compute_output": _duration(success, numbers["output_seconds"]),
            "cache_hit": _duration(0, 0.0),
        },
        batch_stats=[
            {
                "batch_size": rows,
                "compute_input": _duration(calls, gather),
                "compute_infer": _duration(calls, call),
                "compute_output": _duration(calls, split),
            }
            for rows, (calls, gather, call, split) in sorted(executions.items())
        ],
    )
    return stat


def model_statistics(
    repository: Repository, name: str | None = None, version: str | None = None
) -> dict[str, Any]:
    """``{"model_stats": [...]}``: every ready version of every model (no name), of model
    ``name`` (no version), or the one version asked for.

    Raises :class:`~scorepack.errors.ModelNotFoundError` for an unknown name or version,
    :class:`~scorepack.errors.BadRequestError` for a version without a name, and
    :class:`~scorepack.errors.NotReadyError` when the model (version) asked for has no
    version ready.
    """
    if not name:
        if version:
            raise BadRequestError("Statistics for a version need the model's name too.")
        names = repository.names
    else:
        names = [name]
    stats = []
    for model in names:
        versions = [version] if name and version else repository.versions(model)
        for each in versions:
            state = repository.state(model, each)
            scorer = repository.find(model, state.version)
            if scorer is not None and state.state == READY:
                stats.append(scorer_statistics(scorer))
    if name and not stats:
        raise not_ready(repository.state(name, version))
    return {"model_stats": stats}
