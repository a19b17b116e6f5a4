"""From raw model outputs to the JSON a client reads: top-k (with labels) and raw outputs.

The response body, for every request::

    {
      "predictions": [                      # one entry per input row (classifiers only)
        {"top_k": [{"index": 281, "score": 0.53, "label": "tabby"}, ...]}
      ],
      "outputs": {"probs": [[...]]}         # raw outputs: on request (?raw=true), and
    }                                       # always for models with no classifier output
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import BadRequestError
from .signature import Signature

__all__ = [
    "OutputPlan",
    "PostprocessConfig",
    "ScoreParams",
    "plan_outputs",
    "query_values",
    "read_labels",
]

_FLOATS = ("float16", "float32", "float64", "bfloat16")


@dataclass(frozen=True)
class PostprocessConfig:
    """How outputs become a response: which output holds class scores, k, labels."""

    top_k: int = 5
    output: str | None = None
    labels: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.top_k < 1:
            raise ValueError("top_k must be at least 1")

    def to_dict(self) -> dict[str, Any]:
        return {"top_k": self.top_k, "output": self.output}


def query_values(pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    """``/score``'s query string as one value per name, on both hosts; a name given twice
    is a 400. Starlette's and Werkzeug's parsers would keep the last and the first of
    ``?model=a&model=b``: the same request would score a different model on each host."""
    values: dict[str, str] = {}
    for name, value in pairs:
        if name in values:
            raise BadRequestError(
                f"The query parameter {name[:100]!r} is given twice; give each once."
            )
        values[name] = value
    return values


@dataclass(frozen=True)
class ScoreParams:
    """Per-request choices, from the query string (``?top_k=3&raw=true``)."""

    top_k: int | None = None
    raw: bool = False

    @classmethod
    def parse(cls, query: Mapping[str, str] | None) -> ScoreParams:
        """Validate query parameters; a bad value is a 400 that says what was expected."""
        if not query:
            return cls()
        unknown = sorted(set(query) - {"top_k", "raw"})
        if unknown:
            raise BadRequestError(
                f"Unknown query parameter(s): {', '.join(unknown)}. Supported: top_k, raw."
            )
        top_k = None
        if "top_k" in query:
            try:
                top_k = int(query["top_k"])
            except ValueError:
                raise BadRequestError(
                    f"top_k must be a positive integer, not {query['top_k']!r}."
                ) from None
            if top_k < 1:
                raise BadRequestError(f"top_k must be a positive integer, not {top_k}.")
        raw = str(query.get("raw", "false")).lower()
        if raw not in ("1", "0", "true", "false", "yes", "no"):
            raise BadRequestError(f"raw must be true or false, not {query['raw']!r}.")
        return cls(top_k=top_k, raw=raw in ("1", "true", "yes"))


@dataclass(frozen=True)
class OutputPlan:
    """Resolved once per model: which output is a classifier's, and its labels."""

    classifier: str | None
    top_k: int
    labels: tuple[str, ...] | None

    def build(self, outputs: Mapping[str, np.ndarray], params: ScoreParams) -> dict[str, Any]:
        """The response body for one request's outputs."""
        body: dict[str, Any] = {}
        if self.classifier is not None:
            body["predictions"] = self._top_k(outputs[self.classifier], params.top_k or self.top_k)
        if params.raw or self.classifier is None:
            body["outputs"] = {name: _jsonable(value) for name, value in outputs.items()}
        return body

    def _top_k(self, scores: np.ndarray, k: int) -> list[dict[str, Any]]:
        scores = np.asarray(scores, dtype=np.float32)
        k = min(k, scores.shape[1])
        if k < scores.shape[1]:
            part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        else:
            part = np.broadcast_to(np.arange(k), (scores.shape[0], k))
        rows = []
        for row, idx in zip(scores, part, strict=True):
            order = idx[np.argsort(-row[idx], kind="stable")]
            entries = []
            for i in order.tolist():
                entry: dict[str, Any] = {"index": i, "score": float(row[i])}
                if self.labels is not None and i < len(self.labels):
                    entry["label"] = self.labels[i]
                entries.append(entry)
            rows.append({"top_k": entries})
        return rows


def _jsonable(value: np.ndarray) -> Any:
    # orjson serialises contiguous numeric arrays natively; strings and odd dtypes go as lists
    if value.dtype.kind in "biuf" and value.dtype.name != "bfloat16":
        return np.ascontiguousarray(value)
    if value.dtype.kind in "SO":
        return [_text(v) for v in value.ravel().tolist()]
    return value.astype(np.float32).tolist()


def _text(v: Any) -> Any:
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else v


def plan_outputs(signature: Signature, config: PostprocessConfig | None = None) -> OutputPlan:
    """Pick the classifier output: the one named, or the only ``[batch, classes]`` float."""
    config = config or PostprocessConfig()
    if config.output is not None:
        names = signature.output_names
        if config.output not in names:
            raise ValueError(f"no output {config.output!r}; outputs are {names}")
        classifier: str | None = config.output
    else:
        candidates = [
            o.name
            for o in signature.outputs
            if o.dtype in _FLOATS and len(o.shape) == 2 and (o.shape[1] is None or o.shape[1] > 1)
        ]
        classifier = candidates[0] if len(candidates) == 1 else None
    return OutputPlan(classifier=classifier, top_k=config.top_k, labels=config.labels)


def read_labels(path: str | Path) -> tuple[str, ...]:
    """One label per line; blank lines at the end are ignored."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    return tuple(line.strip() for line in lines)
