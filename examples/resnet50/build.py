"""Build ResNet50 locally, with random weights, in every format scorepack serves.

    python examples/resnet50/build.py                     # all, into examples/resnet50/models
    python examples/resnet50/build.py --formats onnx,pt2  # only some

Nothing is downloaded. The files it writes:

    models/savedmodel/     tf.keras.applications.ResNet50(weights=None), NHWC, "caffe" pixels
    models/resnet50.onnx   the PyTorch ResNet50 through torch.onnx.export, NCHW, dynamic batch
    models/resnet50.ts     the PyTorch ResNet50 as TorchScript, its signature stored inside
    models/resnet50.pt2    the PyTorch ResNet50 through torch.export, dynamic batch

The Keras and the PyTorch networks have different random weights: this example shows that
each format serves, not that they agree (tests/test_parity.py checks that, on a small CNN
whose weights are copied across).
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "models"

#: format → the file or directory it writes under the output directory
FILES = {
    "tensorflow": "savedmodel",
    "onnx": "resnet50.onnx",
    "torchscript": "resnet50.ts",
    "pt2": "resnet50.pt2",
}


def build_tensorflow(path: Path, size: int, classes: int, width: int) -> None:
    """Keras' own ResNet50 (its width is fixed; ``width`` must be 64)."""
    import tensorflow as tf

    if width != 64:
        raise SystemExit("tf.keras.applications.ResNet50 has a fixed width; use --width 64")
    tf.keras.utils.set_random_seed(0)
    image = tf.keras.Input((size, size, 3), name="image")
    net = tf.keras.applications.ResNet50(weights=None, input_tensor=image, classes=classes)
    tf.keras.Model(image, {"probs": net.output}).export(str(path), verbose=False)


def _torch_model(classes: int, width: int) -> torch.nn.Module:
    import torch

    sys.path.insert(0, str(HERE))
    from resnet import ResNet50

    torch.manual_seed(0)
    return ResNet50(classes=classes, width=width).eval()


def build_onnx(path: Path, size: int, classes: int, width: int) -> None:
    """torch.onnx.export (torch's default exporter) with a dynamic batch, in one file."""
    import torch

    model = _torch_model(classes, width)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.onnx.export(
            model,
            (torch.zeros(2, 3, size, size),),
            str(path),
            input_names=["image"],
            output_names=["probs"],
            dynamic_shapes=({0: torch.export.Dim("batch")},),
            external_data=False,  # one self-contained file, easy to copy and package
            verbose=False,
        )


def build_torchscript(path: Path, size: int, classes: int, width: int) -> None:
    """torch.jit.script, with scorepack's signature stored in the archive."""
    import torch

    from scorepack import TensorSpec
    from scorepack_pytorch import signature_files

    model = _torch_model(classes, width)
    extra = signature_files([TensorSpec("image", "float32", (None, 3, size, size))])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript is, since torch 2.10
        torch.jit.save(torch.jit.script(model), str(path), _extra_files=extra)


def build_pt2(path: Path, size: int, classes: int, width: int) -> None:
    """torch.export with a dynamic batch dimension."""
    import torch

    model = _torch_model(classes, width)
    program = torch.export.export(
        model, (torch.zeros(2, 3, size, size),), dynamic_shapes=({0: torch.export.Dim("batch")},)
    )
    torch.export.save(program, str(path))


BUILDERS: dict[str, Callable[[Path, int, int, int], None]] = {
    "tensorflow": build_tensorflow,
    "onnx": build_onnx,
    "torchscript": build_torchscript,
    "pt2": build_pt2,
}


def build(
    formats: list[str],
    out: Path = DEFAULT_OUT,
    *,
    size: int = 224,
    classes: int = 1000,
    width: int = 64,
    force: bool = False,
) -> dict[str, Path]:
    """Build the formats asked for (skipping those already there); returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for fmt in formats:
        path = out / FILES[fmt]
        paths[fmt] = path
        if path.exists() and not force:
            print(f"{fmt}: {path} exists (--force rebuilds it)")
            continue
        started = time.perf_counter()
        BUILDERS[fmt](path, size, classes, width)
        print(f"{fmt}: wrote {path} in {time.perf_counter() - started:.1f} s")
    return paths


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output directory")
    parser.add_argument(
        "--formats",
        default=",".join(BUILDERS),
        help=f"comma-separated, from {', '.join(BUILDERS)} (default: all)",
    )
    parser.add_argument("--size", type=int, default=224, help="input height and width")
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--width", type=int, default=64, help="PyTorch only: 64 is ResNet50")
    parser.add_argument("--force", action="store_true", help="rebuild what exists")
    args = parser.parse_args(argv)
    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    unknown = sorted(set(formats) - set(BUILDERS))
    if unknown:
        parser.error(f"unknown format(s) {', '.join(unknown)}; choose from {', '.join(BUILDERS)}")
    build(
        formats, args.out, size=args.size, classes=args.classes, width=args.width, force=args.force
    )


if __name__ == "__main__":
    main()
