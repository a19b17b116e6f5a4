"""Where Azure ML puts a package's model, and the same layout made on this machine.

Azure ML registers the package's ``model/`` folder as a model NAME and mounts it under
``azureml-models``: for a deployment of one model, ``AZUREML_MODEL_DIR`` is
``/var/azureml-app/azureml-models/NAME/VERSION`` and the registered folder is inside it
(``.../NAME/VERSION/model/...``); with several models it is ``.../azureml-models`` and each
one sits at ``NAME/VERSION/`` below it. (azmlinfsrv's own code assumes exactly these two
shapes when it reads model ids from ``AZUREML_MODEL_DIR``; Azure ML's documentation and
examples, e.g. ``os.path.join(os.getenv("AZUREML_MODEL_DIR"), "model/...")``, show the
registered folder inside.) The entry script's directory, ``AML_APP_ROOT``, holds
``score.py`` and ``scorepack.yaml``.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from pathlib import Path

from ..errors import PackageError
from ..generator.spec import PackageSpec
from ..manifest import MODEL_DIR

__all__ = ["MODEL_VERSION", "locate_model_dir", "locate_models", "make_model_dir"]

#: the version a locally laid out model gets (Azure ML numbers registrations from 1)
MODEL_VERSION = "1"


def _holds_model(path: Path, spec: PackageSpec) -> bool:
    return path.is_dir() and all((path / name).is_file() for name in spec.model_files)


def locate_model_dir(
    spec: PackageSpec,
    package: Path,
    environ: Mapping[str, str],
    *,
    explicit: str | Path | None = None,
) -> Path:
    """The directory that holds the package's model files.

    ``explicit`` (the settings object's ``model_dir``, ``SCOREPACK_MODEL_DIR``) wins when
    set; under Azure ML (``AZUREML_MODEL_DIR`` in ``environ``) the registered ``model/``
    folder is looked for in the shapes Azure ML uses, and nowhere else; otherwise the
    package's own ``model/``.
    """
    if explicit:
        return Path(explicit)
    azure = environ.get("AZUREML_MODEL_DIR")
    if not azure:
        return package / MODEL_DIR
    base = Path(azure)
    candidates = [
        base / MODEL_DIR,  # one model: NAME/VERSION/model
        base,  # a model registered from inside its folder: NAME/VERSION/<files>
        base / spec.name / MODEL_VERSION / MODEL_DIR,  # several models, this one first
        *sorted(base.glob(f"*/*/{MODEL_DIR}")),  # several models: any NAME/VERSION/model
    ]
    for candidate in candidates:
        if _holds_model(candidate, spec):
            return candidate
    seen = sorted(str(p.relative_to(base)) for p in base.rglob("*"))[:20] if base.is_dir() else []
    raise PackageError(
        f"AZUREML_MODEL_DIR={azure} does not hold this package's model (looked for "
        f"{MODEL_DIR}/{spec.model_files[0]} and the other model files). It holds: "
        f"{', '.join(seen) or 'nothing'}. Register the package's {MODEL_DIR}/ folder as the model."
    )


def locate_models(
    spec: PackageSpec,
    package: Path,
    environ: Mapping[str, str],
    *,
    explicit: str | Path | None = None,
) -> dict[str, Path]:
    """Each model's folder, by name, for a package of several models (see the module);
    ``explicit`` (the settings' ``model_dir``) is the folder holding them, ``NAME/`` each."""
    azure = environ.get("AZUREML_MODEL_DIR")
    found = {}
    for model in spec.models:
        if explicit:
            candidates = [Path(explicit) / model.name]
        elif not azure:
            candidates = [package / MODEL_DIR / model.name]
        else:
            base = Path(azure)
            registered = base / model.name
            versions = sorted(
                (p for p in registered.iterdir() if p.is_dir()) if registered.is_dir() else (),
                key=lambda p: (p.name.isdigit(), int(p.name) if p.name.isdigit() else 0, p.name),
                reverse=True,
            )
            candidates = [
                base / MODEL_DIR / model.name,  # SDK v2: one folder holding every model
                *(v / model.name for v in versions),  # SDK v1: NAME/VERSION/NAME
                # a deployment of this package's v2 model among others: PKG/VERSION/model/NAME
                *sorted(base.glob(f"*/*/{MODEL_DIR}/{model.name}")),
            ]
        hit = next((c for c in candidates if _holds_model(c, model)), None)
        if hit is None:
            where = str(explicit or azure or package / MODEL_DIR)
            raise PackageError(
                f"The files of model {model.name!r} are not where this package of several "
                f"models looks for them under {where} (tried "
                f"{', '.join(str(c) for c in candidates[:4]) or 'nothing'}). Deploy it with "
                "its deployment files: SDK v2 registers model/ as one model, SDK v1 each "
                "model/NAME as model NAME."
            )
        found[model.name] = hit
    return found


def make_model_dir(spec: PackageSpec, package: Path, root: Path) -> Path:
    """Lay the package's model out under ``root`` as Azure ML mounts a registered model.

    Returns the ``AZUREML_MODEL_DIR`` to use: ``root/azureml-models/NAME/1``, with the
    files in ``model/`` inside it. Files are hard-linked where possible, else copied.
    """
    model_dir = root / "azureml-models" / spec.name / MODEL_VERSION
    for name in spec.model_files:
        origin = package / MODEL_DIR / name
        target = model_dir / MODEL_DIR / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if not origin.is_file():
            raise PackageError(f"The model file {origin} is missing; the package is incomplete.")
        try:
            os.link(origin, target)
        except OSError:
            shutil.copyfile(origin, target)
    return model_dir
