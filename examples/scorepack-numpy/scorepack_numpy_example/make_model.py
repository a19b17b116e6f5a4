"""Write a small random MLP classifier in this backend's format, to try it out::

python -m scorepack_numpy_example.make_model model.npz
scorepack inspect model.npz
scorepack serve model.npz
"""

from __future__ import annotations

import argparse
import itertools
import math
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main", "make_model"]


def make_model(
    path: str | Path,
    *,
    input_shape: Sequence[int] = (8, 8, 3),
    hidden: Sequence[int] = (16,),
    classes: int = 10,
    seed: int = 0,
) -> Path:
    """Write an ``.npz`` MLP: ``input_shape`` -> ``hidden`` (ReLU) ... -> ``classes``.

    The default ``[8, 8, 3]`` input takes images: ``scorepack serve`` resizes a JPEG to
    8x8 RGB and sends its pixels (0..255, float32).
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    sizes = [math.prod(input_shape), *hidden, classes]
    arrays: dict[str, np.ndarray] = {"input_shape": np.asarray(input_shape, dtype=np.int64)}
    for index, (fan_in, fan_out) in enumerate(itertools.pairwise(sizes)):
        # the first layer sees raw pixels up to 255: scale it so the logits stay moderate
        # and the top-k scores are not all 1.0 and 0.0
        gain = 1 / 128 if index == 0 else 1.0
        scale = gain * math.sqrt(2 / fan_in)
        arrays[f"W{index}"] = (rng.standard_normal((fan_in, fan_out)) * scale).astype(np.float32)
        arrays[f"b{index}"] = (rng.standard_normal(fan_out) * 0.1).astype(np.float32)
    path = Path(path)
    # np.savez would append ".npz" to a name without it; write through a file object
    with path.open("wb") as out:
        np.savez(out, **arrays)  # type: ignore[arg-type]
    return path


def _ints(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.replace("x", ",").split(",") if part]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: use comma-separated integers") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: use positive integers")
    return values


def main(argv: Sequence[str] | None = None) -> None:
    """Command line: ``python -m scorepack_numpy_example.make_model OUT.npz``."""
    parser = argparse.ArgumentParser(
        prog="python -m scorepack_numpy_example.make_model", description=__doc__.split("\n")[0]
    )
    parser.add_argument("output", type=Path, help="the .npz file to write")
    parser.add_argument("--input-shape", type=_ints, default=[8, 8, 3], help="default: 8,8,3")
    parser.add_argument("--hidden", type=_ints, default=[16], help="hidden layer sizes (16)")
    parser.add_argument("--classes", type=int, default=10, help="default: 10")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.classes < 2:
        parser.error("--classes must be at least 2")
    path = make_model(
        args.output,
        input_shape=args.input_shape,
        hidden=args.hidden,
        classes=args.classes,
        seed=args.seed,
    )
    print(f"wrote {path}: input {args.input_shape} -> {args.hidden} -> {args.classes} classes")


if __name__ == "__main__":
    main()
