"""One object for every scoring setting, shared by the server, score.py and manifests."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from .batching import BatchingConfig
from .codecs import DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_IMAGE_PIXELS
from .postprocess import PostprocessConfig
from .preprocess import PreprocessConfig

__all__ = ["ScoringConfig"]


@dataclass(frozen=True)
class ScoringConfig:
    """How a model is scored: preprocessing, postprocessing, batching and input limits."""

    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    postprocess: PostprocessConfig = field(default_factory=PostprocessConfig)
    batching: BatchingConfig = field(default_factory=BatchingConfig)
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
    #: run the model once at batch 1 and at the max batch size before reporting ready,
    #: and measure the preferred batch size then (batch_sizing.py); off: neither
    warmup: bool = True

    def __post_init__(self) -> None:
        if self.max_body_bytes < 1:
            raise ValueError("max_body_bytes must be positive")
        if self.max_image_pixels < 1:
            raise ValueError("max_image_pixels must be positive")

    def to_dict(self) -> dict[str, Any]:
        """Plain data (labels are left out: packages ship them as a file)."""
        return {
            "preprocess": self.preprocess.to_dict(),
            "postprocess": self.postprocess.to_dict(),
            "batching": asdict(self.batching),
            "max_body_bytes": self.max_body_bytes,
            "max_image_pixels": self.max_image_pixels,
            "warmup": self.warmup,
        }

    @classmethod
    def from_dict(
        cls, data: Mapping[str, Any], *, labels: tuple[str, ...] | None = None
    ) -> ScoringConfig:
        """The inverse of :meth:`to_dict`; ``labels`` are attached to the postprocessing."""
        post = dict(data.get("postprocess", {}))
        return cls(
            preprocess=PreprocessConfig.from_dict(data.get("preprocess", {})),
            postprocess=PostprocessConfig(labels=labels, **post),
            batching=BatchingConfig(**data.get("batching", {})),
            max_body_bytes=int(data.get("max_body_bytes", DEFAULT_MAX_BODY_BYTES)),
            max_image_pixels=int(data.get("max_image_pixels", DEFAULT_MAX_IMAGE_PIXELS)),
            warmup=bool(data.get("warmup", True)),
        )
