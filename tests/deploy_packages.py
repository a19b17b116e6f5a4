"""PackageSpecs and package directories for the deploy-target tests.

The deploy targets only read a package's files (and upload them), so these packages are
small hand-made ones: no framework is needed to test deployment.
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import replace
from pathlib import Path
from typing import Any

from scorepack.backend import Requirements
from scorepack.config import ScoringConfig
from scorepack.generator.spec import DeploymentSettings, PackageSpec
from scorepack.signature import Signature, TensorSpec

GPU_IMAGE = "mcr.microsoft.com/azureml/openmpi4.1.0-cuda11.8-cudnn8-ubuntu22.04"
SCOREPACK_WHEEL = "scorepack-0.1.0-py3-none-any.whl"
BACKEND_WHEEL = "scorepack_tensorflow-0.1.0-py3-none-any.whl"


def make_spec(**changes: Any) -> PackageSpec:
    """A GPU TensorFlow image classifier package, as ``scorepack build`` would resolve it."""
    deployment = changes.pop("deployment", DeploymentSettings())
    spec = PackageSpec(
        name="resnet50-demo",
        backend="tensorflow",
        backend_distribution="scorepack-tensorflow",
        model_files=(
            "saved_model.pb",
            "variables/variables.index",
            "variables/variables.data-00000-of-00001",
        ),
        model_entry=".",
        signature=Signature(
            inputs=(TensorSpec("input_1", "float32", (None, 224, 224, 3)),),
            outputs=(TensorSpec("predictions", "float32", (None, 1000)),),
        ),
        config=ScoringConfig(),
        device="cuda",
        requirements=Requirements(pip=("tensorflow[and-cuda]==2.21.0",), base_image=GPU_IMAGE),
        framework="tensorflow",
        framework_version="2.21.0",
        scorepack_version="0.1.0",
        backend_version="0.1.0",
        wheels=(f"wheels/{SCOREPACK_WHEEL}", f"wheels/{BACKEND_WHEEL}"),
        deployment=deployment,
    )
    return replace(spec, **changes)


ENVIRONMENT_YML = f"""\
name: scorepack-resnet50-demo
channels:
  - conda-forge
dependencies:
  - python=3.11
  - pip
  - pip:
      - tensorflow[and-cuda]==2.21.0
      - azureml-inference-server-http==1.5.1
      - ./wheels/{SCOREPACK_WHEEL}
      - ./wheels/{BACKEND_WHEEL}
"""

SCORE_PY = '''\
"""Azure ML entry script (stand-in for the generated one)."""

from azureml.contrib.services.aml_request import rawhttp


def init():
    pass


@rawhttp
def run(request):
    return {}
'''


def _wheel(name: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(f"{name.split('-')[0]}/__init__.py", "")
    return buffer.getvalue()


def make_package(root: Path, spec: PackageSpec | None = None, *, targets: bool = True) -> Path:
    """A package directory with the files deploy reads: score.py, manifest, environment,
    model/ and wheels/ — plus the deploy targets' own rendered files when ``targets``."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "score.py").write_text(SCORE_PY, encoding="utf-8")
    (root / "environment.yml").write_text(ENVIRONMENT_YML, encoding="utf-8")
    (root / "README.md").write_text("# resnet50-demo\n", encoding="utf-8")
    # as the package writer makes it: the model is its own asset, never part of the code
    (root / ".amlignore").write_text("model/\n*.zip\n", encoding="utf-8")
    model = root / "model"
    (model / "variables").mkdir(parents=True, exist_ok=True)
    (model / "saved_model.pb").write_bytes(b"\x08\x01" * 64)
    (model / "variables" / "variables.index").write_bytes(b"index")
    (model / "variables" / "variables.data-00000-of-00001").write_bytes(b"\x00" * 256)
    wheels = root / "wheels"
    wheels.mkdir(exist_ok=True)
    for name in (SCOREPACK_WHEEL, BACKEND_WHEEL):
        (wheels / name).write_bytes(_wheel(name))
    # the manifest, with the sha256 of every model file and wheel, as `scorepack build` writes it
    from scorepack.manifest import dump_manifest, sha256_file

    spec = spec or make_spec()
    hashes = {f"model/{name}": sha256_file(model / name) for name in spec.model_files}
    hashes.update({w: sha256_file(root / w) for w in spec.wheels})
    (root / "scorepack.yaml").write_text(
        dump_manifest(replace(spec, file_hashes=hashes)), encoding="utf-8"
    )
    if targets:
        from scorepack.targets.azureml_v1 import AzureMLV1Target
        from scorepack.targets.azureml_v2 import AzureMLV2Target

        for target in (AzureMLV1Target(), AzureMLV2Target()):
            for rel, text in target.render(spec).items():
                path = root / rel
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text, encoding="utf-8")
    return root


#: the models of the package of several (tests/deploy_packages.make_several_package)
SEVERAL = ("cnn", "resnet")


def several_spec() -> PackageSpec:
    """A package of two GPU TensorFlow models, ``cnn`` and ``resnet``, as
    ``scorepack build cnn=... resnet=...`` resolves it (named for the recordings)."""
    from scorepack.generator.several import join

    models = [
        make_spec(name="cnn", model_files=("saved_model.pb", "variables/variables.index")),
        make_spec(name="resnet"),
    ]
    joined = join(models, "resnet50-demo")
    return replace(joined, scorepack_version="0.1.0", wheels=make_spec().wheels)


def make_several_package(root: Path) -> tuple[Path, PackageSpec]:
    """A package of several models, laid out as ``scorepack build`` writes one: the files
    deploy reads, each model's files in model/NAME/ and its manifest in models/NAME/, and
    the Azure ML targets' own rendered files. Returns the package and its spec (hashes in)."""
    from scorepack.manifest import dump_manifest, sha256_file
    from scorepack.targets.azureml_v1 import AzureMLV1Target
    from scorepack.targets.azureml_v2 import AzureMLV2Target

    root.mkdir(parents=True, exist_ok=True)
    (root / "score.py").write_text(SCORE_PY, encoding="utf-8")
    (root / "environment.yml").write_text(ENVIRONMENT_YML, encoding="utf-8")
    (root / "README.md").write_text("# two models\n", encoding="utf-8")
    (root / ".amlignore").write_text("model/\n*.zip\n", encoding="utf-8")
    wheels = root / "wheels"
    wheels.mkdir(exist_ok=True)
    for name in (SCOREPACK_WHEEL, BACKEND_WHEEL):
        (wheels / name).write_bytes(_wheel(name))
    spec = several_spec()
    for number, model in enumerate(spec.models):
        for name in model.model_files:
            path = root / "model" / model.name / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(f"{model.name}:{name}:{number}".encode() * 16)
    hashes = {f"model/{n}": sha256_file(root / "model" / n) for n in spec.model_files}
    hashes.update({w: sha256_file(root / w) for w in spec.wheels})
    models = tuple(
        replace(
            m,
            file_hashes={f"model/{n}": hashes[f"model/{m.name}/{n}"] for n in m.model_files},
        )
        for m in spec.models
    )
    spec = replace(spec, file_hashes=hashes, models=models)
    (root / "scorepack.yaml").write_text(dump_manifest(spec), encoding="utf-8")
    for model in spec.models:
        folder = root / "models" / model.name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "scorepack.yaml").write_text(dump_manifest(model), encoding="utf-8")
    for target in (AzureMLV1Target(), AzureMLV2Target()):
        for rel, text in target.render(spec).items():
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
    return root, spec
