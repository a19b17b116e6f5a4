"""``render(spec)``: a scoring package's text files, as ``{relative path: text}``.

Pure: no file is read but the templates shipped with scorepack, nothing is written, and
the same spec always gives the same files (golden-file tested). :func:`~.write.write_package`
puts them on disk beside the model and the wheels.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable, Mapping, Sequence
from importlib import resources
from string import Template
from typing import Any

import yaml

from ..azureml.settings import server_environment
from ..cuda import service_variables
from ..errors import PackageError
from ..manifest import (
    LABELS_FILE,
    MANIFEST_FILE,
    MODEL_DIR,
    MODELS_DIR,
    dump_manifest,
    labels_text,
)
from ..openapi import SWAGGER_FILES
from ..postprocess import plan_outputs
from ..preprocess import plan_image
from .container import DOCKERFILE, DOCKERIGNORE, INSTALL_SCRIPT, render_container
from .openapi_files import SWAGGER_DESCRIPTIONS, SWAGGER_DESCRIPTIONS_SEVERAL, swagger_files
from .spec import PackageSpec

__all__ = ["CORE_FILES", "render", "render_targets", "requirement_lines", "shell"]

#: files every package has, besides labels.txt (when it has labels) and the targets' files
CORE_FILES = (
    "score.py",
    MANIFEST_FILE,
    "environment.yml",
    "requirements.txt",
    "README.md",
    ".amlignore",
    DOCKERFILE,
    DOCKERIGNORE,
    INSTALL_SCRIPT,
    *SWAGGER_FILES.values(),
)

_DESCRIPTIONS = {
    "score.py": (
        "Azure ML entry script: `init()` and `run()` with `@rawhttp`, calling the scorepack runtime"
    ),
    MANIFEST_FILE: (
        "the manifest: backend, model files with sha256, signature, preprocessing, batching, "
        "device, versions"
    ),
    "environment.yml": "conda environment for Azure ML, pinned",
    "requirements.txt": (
        "the same pins for pip (`pip install -r requirements.txt` from this directory)"
    ),
    "README.md": "this file",
    ".amlignore": "what Azure ML leaves out when it uploads this directory as the code",
    LABELS_FILE: "class labels, one a line",
    DOCKERFILE: (
        "the container image of scorepack's own server (`scorepack serve` on ports 8080 and "
        "8081, non-root, the model at /mnt/models): `docker build -t IMAGE .`"
    ),
    DOCKERIGNORE: "what `docker build` leaves out of the build context",
    INSTALL_SCRIPT: "the image's install step: the pinned environment into a virtual environment",
    **SWAGGER_DESCRIPTIONS,
}


def shell(*tokens: str) -> str:
    """One shell command line, every token quoted."""
    return " ".join(shlex.quote(t) for t in tokens)


def _template(name: str) -> Template:
    text = resources.files("scorepack.generator").joinpath("templates", name).read_text("utf-8")
    return Template(text)


def render(spec: PackageSpec, targets: Mapping[str, Any] | None = None) -> dict[str, str]:
    """All text files of the package for ``spec``: its own, then each deploy target's.

    ``targets`` maps names to :class:`~scorepack.targets.DeployTarget` objects (by
    default none); their files may not collide with the package's or each other's.
    """
    if spec.models:
        return _render_several(spec, targets or {})
    target_files = render_targets(spec, targets or {})
    files: dict[str, str] = {
        "score.py": _score_py(spec),
        MANIFEST_FILE: dump_manifest(spec),
        "environment.yml": _environment_yml(spec),
        "requirements.txt": _requirements_txt(spec),
    }
    labels = spec.config.postprocess.labels
    if labels is not None:
        files[LABELS_FILE] = labels_text(labels)
    files[".amlignore"] = _template("amlignore.tmpl").substitute()
    files.update(render_container(spec))
    files.update(swagger_files(spec))
    files["README.md"] = _readme(spec, [*files, "README.md", *target_files], target_files)
    for path, text in target_files.items():
        files[path] = text
    return files


def render_targets(spec: PackageSpec, targets: Mapping[str, Any]) -> dict[str, str]:
    """Every target's ``render(spec)``, checked: relative paths, no collisions."""
    owners: dict[str, str] = {path: "the package itself" for path in (*CORE_FILES, LABELS_FILE)}
    files: dict[str, str] = {}
    for name, target in targets.items():
        for path, text in target.render(spec).items():
            if path.startswith(("/", "\\")) or ".." in path.replace("\\", "/").split("/"):
                raise PackageError(
                    f"Deploy target {name!r} rendered a path outside the package: {path!r}"
                )
            if path in owners or path.startswith((f"{MODEL_DIR}/", "wheels/")):
                owner = owners.get(path, "the package itself")
                raise PackageError(f"Deploy target {name!r} and {owner} both write {path!r}.")
            owners[path] = f"deploy target {name!r}"
            files[path] = text
    return files


# --- several models ----------------------------------------------------------------------


def _render_several(spec: PackageSpec, targets: Mapping[str, Any]) -> dict[str, str]:
    """A package of several models: its own files, each model's manifest (and labels) in
    ``models/NAME/``, and the files of the deploy targets that serve several models (the
    Azure ML ones; others say ``several_models = False`` or nothing)."""
    chosen = {n: t for n, t in targets.items() if getattr(t, "several_models", False)}
    target_files = render_targets(spec, chosen)
    files: dict[str, str] = {
        "score.py": _template("score_models.py.tmpl").substitute(
            name_literal=repr(spec.name),
            model_lines="\n".join(
                f"    {m.name}: {m.backend} backend ({m.framework} {m.framework_version})"
                for m in spec.models
            ),
            scorepack_version=spec.scorepack_version,
            device=spec.device,
            models_literal=repr(tuple(m.name for m in spec.models)),
        ),
        MANIFEST_FILE: dump_manifest(spec),
        "environment.yml": _environment_yml(spec),
        "requirements.txt": _requirements_txt(spec),
        ".amlignore": _template("amlignore.tmpl").substitute(),
        # one API document for every model, where azmlinfsrv serves it from
        **swagger_files(spec),
    }
    for model in spec.models:
        files[f"{MODELS_DIR}/{model.name}/{MANIFEST_FILE}"] = dump_manifest(model)
        if model.config.postprocess.labels is not None:
            files[f"{MODELS_DIR}/{model.name}/{LABELS_FILE}"] = labels_text(
                model.config.postprocess.labels
            )
    files["README.md"] = _readme_several(spec, [*files, "README.md"], target_files)
    files.update(target_files)
    return files


def _readme_several(
    spec: PackageSpec, paths: Sequence[str], target_files: Mapping[str, str]
) -> str:
    descriptions = {**_DESCRIPTIONS, **SWAGGER_DESCRIPTIONS_SEVERAL}
    rows = [(f"`{p}`", descriptions[p]) for p in paths if p in descriptions]
    for model in spec.models:
        rows.append(
            (
                f"`{MODEL_DIR}/{model.name}/`, `{MODELS_DIR}/{model.name}/`",
                f"model {model.name}: its files ({len(model.model_files)}); its manifest "
                "(backend, signature, scoring settings, labels)",
            )
        )
    if spec.wheels:
        rows.append(("`wheels/`", ", ".join(f"`{w.rsplit('/', 1)[-1]}`" for w in spec.wheels)))
    rows += [(f"`{path}`", "deployment file") for path in target_files]
    model_rows = [
        (
            f"`{m.name}`",
            m.backend,
            f"{m.framework} {m.framework_version}",
            ", ".join(f"`{s.name}` {s.dtype} `{s.shape_text()}`" for s in m.signature.inputs),
            ", ".join(f"`{s.name}`" for s in m.signature.outputs),
            str(m.config.batching.max_batch_size),
        )
        for m in spec.models
    ]
    gpu = spec.device == "cuda"
    first = spec.models[0].name
    url = f"http://127.0.0.1:5001/score?model={first}"
    return _template("README_models.md.tmpl").substitute(
        name=spec.name,
        count=len(spec.models),
        device_text="a CUDA GPU" if gpu else "the CPU",
        scorepack_version=spec.scorepack_version,
        python_version=spec.python_version,
        model_rows=_table(model_rows),
        file_rows=_table(rows),
        gpu_note=" (`--device cpu` runs this GPU package on a machine without a GPU)"
        if gpu
        else "",
        local_commands=_local_commands(spec),
        score_commands=_score_commands(url),
        deploy_commands=_deploy_commands(spec),
    )


# --- score.py ----------------------------------------------------------------------------


def _score_py(spec: PackageSpec) -> str:
    return _template("score.py.tmpl").substitute(
        name_literal=repr(spec.name),
        scorepack_version=spec.scorepack_version,
        backend=spec.backend,
        framework=spec.framework,
        framework_version=spec.framework_version,
        device=spec.device,
        backend_literal=repr(spec.backend),
        module_literal=repr(spec.backend_module or None),
    )


# --- environments ------------------------------------------------------------------------


def requirement_lines(spec: PackageSpec) -> list[str]:
    """Every pip requirement of the package, in install order: framework, runtime, wheels."""
    return [*spec.requirements.pip, *spec.runtime_requirements, *(f"./{w}" for w in spec.wheels)]


def _requirements_txt(spec: PackageSpec) -> str:
    install = ["#   cd PACKAGE_DIR && python -m pip install -r requirements.txt"]
    if spec.requirements.cuda is not None:
        env = spec.requirements.cuda
        install.append(
            f"# CUDA {env.cuda}: the GPU needs an NVIDIA driver {env.driver_min} or newer"
        )
    if any(_name(line) == "torch" for line in spec.requirements.pip):
        # a bare torch resolution pulls gigabytes of CUDA wheels; the pinned one goes first
        pin = next(line for line in spec.requirements.pip if _name(line) == "torch")
        install.insert(0, f"#   python -m pip install {shell(pin)}   (first, on its own)")
    return _template("requirements.txt.tmpl").substitute(
        name_literal=repr(spec.name),
        device=spec.device,
        python_version=spec.python_version,
        install_lines="\n".join(install),
        framework_text=f"{spec.framework} {spec.framework_version}".strip(),
        backend_text=f"the {spec.backend} backends"
        if spec.models
        else f"the {spec.backend} backend",
        framework_lines="\n".join(spec.requirements.pip) or "# (none)",
        runtime_lines=_runtime_lines(spec),
        wheel_lines="\n".join(f"./{w}" for w in spec.wheels) or "# (none)",
    )


def _runtime_lines(spec: PackageSpec) -> str:
    lines = list(spec.runtime_requirements) or ["# (none)"]
    if spec.tracing:
        from .tracing import OTEL_RELEASE

        lines.insert(
            0,
            f"# built with --tracing: OpenTelemetry's OTLP exporter of azmlinfsrv's release "
            f"({OTEL_RELEASE}), which runs on protobuf 5",
        )
    return "\n".join(lines)


def _tracing_text(spec: PackageSpec) -> str:
    if not spec.tracing:
        return ""
    return (
        "\n\nBuilt with `--tracing`: the environment carries OpenTelemetry's OTLP exporter, "
        "so\n`SCOREPACK_OTLP_ENDPOINT=http://COLLECTOR:4318/v1/traces` exports a span per "
        "request\n(decode, queue wait and model call as its children), joined to the "
        "caller's `traceparent`."
    )


def _environment_yml(spec: PackageSpec) -> str:
    slug = "".join(c if c.isalnum() else "-" for c in spec.name.lower()).strip("-")
    data = {
        "name": f"scorepack-{slug or 'package'}",
        "channels": list(spec.requirements.channels),
        "dependencies": [
            f"python={spec.python_version}",
            "pip",
            *spec.requirements.conda,
            {"pip": requirement_lines(spec)},
        ],
    }
    header = _template("environment.yml.tmpl").substitute(
        name_literal=repr(spec.name), device=spec.device
    )
    return header + yaml.safe_dump(data, sort_keys=False, default_flow_style=False, width=100)


def _name(requirement: str) -> str:
    """The normalised project name of a requirement line ("" for options and paths)."""
    text = requirement.strip()
    if not text or text.startswith(("-", "#", ".", "/")):
        return ""
    end = len(text)
    for i, ch in enumerate(text):
        if not (ch.isalnum() or ch in "-_."):
            end = i
            break
    return text[:end].lower().replace("_", "-").replace(".", "-")


# --- README ------------------------------------------------------------------------------


def _table(rows: Iterable[Sequence[str]]) -> str:
    return "\n".join("| " + " | ".join(cells) + " |" for cells in rows)


def _readme(spec: PackageSpec, paths: Sequence[str], target_files: Mapping[str, str]) -> str:
    config = spec.config
    batching = config.batching
    rows = []
    for path in paths:
        if path in _DESCRIPTIONS:
            rows.append((f"`{path}`", _DESCRIPTIONS[path]))
    rows.append(
        (
            f"`{MODEL_DIR}/`",
            f"the model files ({len(spec.model_files)}), registered in Azure ML as `{spec.name}`",
        )
    )
    if spec.wheels:
        rows.append(("`wheels/`", ", ".join(f"`{w.rsplit('/', 1)[-1]}`" for w in spec.wheels)))
    for path in target_files:
        rows.append((f"`{path}`", "deployment file"))

    signature_rows = [
        (kind, f"`{s.name}`", s.dtype, f"`{s.shape_text()}`")
        for kind, specs in (("input", spec.signature.inputs), ("output", spec.signature.outputs))
        for s in specs
    ]
    env = server_environment(spec.deployment) | service_variables(spec.requirements.cuda)
    gpu = spec.device == "cuda"
    return _template("README.md.tmpl").substitute(
        name=spec.name,
        framework=spec.framework,
        framework_version=spec.framework_version,
        backend=spec.backend,
        device_text="a CUDA GPU" if gpu else "the CPU",
        scorepack_version=spec.scorepack_version,
        python_version=spec.python_version,
        file_rows=_table(rows),
        signature_name=spec.signature.name,
        signature_rows=_table(signature_rows),
        preprocess_text=_preprocess_text(spec),
        postprocess_text=_postprocess_text(spec),
        max_batch_size=batching.max_batch_size,
        preferred_batch_size=batching.preferred_batch_size,
        max_delay_ms=f"{batching.max_delay_ms:g}",
        max_queue_size=batching.max_queue_size,
        timeout_ms=f"{batching.timeout_ms:g}",
        local_commands=_local_commands(spec),
        score_commands=_score_commands("http://127.0.0.1:5001/score"),
        json_text=_json_text(spec),
        model_name=spec.name,
        deploy_commands=_deploy_commands(spec),
        gpu_text=" and the GPU" if gpu else "",
        gpu_note=" (`--device cpu` runs this GPU package on a machine without a GPU)"
        if gpu
        else "",
        threads=spec.deployment.threads,
        max_concurrent=spec.deployment.max_concurrent_requests,
        environment_rows=_table((f"`{k}`", f"`{v}`") for k, v in env.items()),
        tracing_text=_tracing_text(spec),
        container_commands="\n".join(
            [
                shell("docker", "build", "-t", "REGISTRY/IMAGE:TAG", "."),
                shell("docker", "push", "REGISTRY/IMAGE:TAG"),
                shell(
                    "scorepack",
                    "deploy",
                    ".",
                    "--target",
                    "kubernetes",
                    "--image",
                    "REGISTRY/IMAGE:TAG",
                ),
                shell(
                    "scorepack",
                    "deploy",
                    ".",
                    "--target",
                    "kserve",
                    "--image",
                    "REGISTRY/IMAGE:TAG",
                    "--storage-uri",
                    "s3://BUCKET/PATH/model",
                ),
            ]
        ),
        gpu_section=gpu_text(spec),
    )


def gpu_text(spec: PackageSpec) -> str:
    """The README's GPU section: CUDA, driver floor, architectures (empty for CPU packages)."""
    env = spec.requirements.cuda
    if spec.device != "cuda":
        return ""
    if env is None:
        return (
            "\n## GPU\n\nThe backend states no CUDA environment: check its documentation for "
            "the NVIDIA driver the GPU nodes need.\n"
        )
    source = f"the extra index {env.index_url}" if env.index_url else "the package index"
    lines = [
        "",
        "## GPU",
        "",
        f"CUDA {env.cuda}, from pip wheels ({source}); the image, "
        f"`{spec.requirements.base_image}`, needs no CUDA of its own.",
        f"**The GPU nodes need an NVIDIA driver {env.driver_min} or newer.**",
        f"GPU architectures: {env.jit_archs()}.",
    ]
    if env.notes:
        lines.append(f"Note: {env.notes}.")
    lines += [
        "`scorepack check .` resolves this environment with pip for Linux x86-64, installing "
        "nothing, and reports what it finds.",
        "",
    ]
    return "\n".join(lines)


def _commented(lines: Sequence[tuple[str, str]]) -> str:
    width = max(len(command) for command, _ in lines)
    return "\n".join(f"{command.ljust(width)}  # {comment}" for command, comment in lines)


def _preprocess_text(spec: PackageSpec) -> str:
    try:
        plan = plan_image(spec.signature, spec.config.preprocess)
    except ValueError as exc:
        return f"Images cannot be scored with these settings ({exc}); send JSON tensors."
    if plan is None:
        return "No input takes images: send JSON tensors."
    mean = ", ".join(f"{m:g}" for m in plan.mean)
    std = ", ".join(f"{s:g}" for s in plan.std)
    return (
        f"Images (JPEG or PNG) go to `{plan.input}`: resized ({plan.resize}) to "
        f"{plan.height}x{plan.width}, {plan.channels} channel(s) {plan.color}, {plan.layout}, "
        f"{plan.dtype}; value = (pixel x {plan.scale:g} - mean) / std with mean ({mean}) "
        f"and std ({std})."
    )


def _postprocess_text(spec: PackageSpec) -> str:
    try:
        plan = plan_outputs(spec.signature, spec.config.postprocess)
    except ValueError as exc:
        return f"The postprocessing settings do not fit the model: {exc}."
    if plan.classifier is None:
        return 'Responses carry the raw outputs: `{"outputs": {name: values}}`.'
    labels = " with labels from `labels.txt`" if spec.config.postprocess.labels else ""
    return (
        f"Responses carry the top {plan.top_k} classes of `{plan.classifier}`{labels} for each "
        'row: `{"predictions": [{"top_k": [{"index": i, "score": s}, ...]}]}`; add '
        "`?top_k=N` for more or fewer, `?raw=true` for the raw outputs as well."
    )


def _json_text(spec: PackageSpec) -> str:
    names = spec.signature.input_names
    body = '{"inputs": {' + ", ".join(f'"{n}": [...]' for n in names) + "}}"
    return (
        f"Or send JSON tensors, one array per input with the batch first: `{body}` with "
        "`Content-Type: application/json`."
    )


def _local_commands(spec: PackageSpec) -> str:
    """The README's ways to run the package here: the embedded server, azmlinfsrv, and
    azmlinfsrv in an isolated environment (one model or several alike)."""
    gpu = spec.device == "cuda"
    cpu = ["--device", "cpu"] if gpu else []
    return _commented(
        [
            (shell("scorepack", "serve", ".", *cpu), "the embedded server"),
            (shell("scorepack", "serve-azureml", ".", *cpu), "azmlinfsrv, as on Azure ML"),
            (
                shell("scorepack", "serve-azureml", ".", "--isolated"),
                "the same, in a fresh environment" + (" (on a GPU machine)" if gpu else ""),
            ),
        ]
    )


def _score_commands(url: str) -> str:
    """The README's two ways to score ``image.jpg`` at ``url``: curl and scorepack."""
    curl = shell("curl", "--data-binary", "@image.jpg", "-H", "Content-Type: image/jpeg", url)
    return "\n".join([curl, shell("scorepack", "score", url, "image.jpg")])


def _deploy_commands(spec: PackageSpec) -> str:
    """The README's deploy and delete commands (Azure ML, SDK v2)."""
    deploy = shell(
        "scorepack",
        "deploy",
        ".",
        "--workspace-config",
        "config.json",
        "--compute",
        spec.deployment.compute_name,
        "--sdk",
        "v2",
    )
    delete = shell("scorepack", "delete", ".", "--workspace-config", "config.json")
    return "\n".join([deploy, delete])
