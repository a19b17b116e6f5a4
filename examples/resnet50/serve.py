"""Serve one ResNet50 export, building it first when it is not there yet.

    python examples/resnet50/serve.py tensorflow|onnx|torchscript|pt2 [scorepack serve options]

It runs ``scorepack serve MODEL`` with the preprocessing each network was made for (Keras'
"caffe" pixels for the SavedModel; torchvision's ImageNet normalisation with a centre crop
for the PyTorch exports) and passes any other option through, e.g. ``--port 5002`` or
``--device cuda``.
"""

from __future__ import annotations

import sys

from build import FILES, build

from scorepack.cli import main as scorepack

#: what each network expects: Keras' ResNet50 is BGR with ImageNet means subtracted;
#: the PyTorch one (like torchvision's) takes RGB 0..1, ImageNet-normalised
PREPROCESSING = {
    "tensorflow": ["--preset", "caffe"],
    "onnx": ["--preset", "imagenet", "--resize", "crop"],
    "torchscript": ["--preset", "imagenet", "--resize", "crop"],
    "pt2": ["--preset", "imagenet", "--resize", "crop"],
}


def main(argv: list[str]) -> None:
    if not argv or argv[0] not in FILES:
        raise SystemExit(f"usage: serve.py {{{'|'.join(FILES)}}} [scorepack serve options]")
    fmt, rest = argv[0], argv[1:]
    path = build([fmt])[fmt]
    scorepack(["serve", str(path), *PREPROCESSING[fmt], *rest])


if __name__ == "__main__":
    main(sys.argv[1:])
