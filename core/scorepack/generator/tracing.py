"""``scorepack build --tracing``: the OTLP exporter in a package's pinned environment.

A package runs under azmlinfsrv, which pins its own OpenTelemetry SDK (1.33.0 in
azmlinfsrv 1.5.1). The exporter must be of the same release (every exporter from 1.20 on
requires ``opentelemetry-sdk~=`` its own minor), and exporter 1.33 needs
``opentelemetry-proto`` 1.33, which needs ``protobuf>=5,<6``. So a package with tracing
pins the exporter set below, protobuf 5 in place of the protobuf the package would pin
otherwise (the same set ``requirements/otlp.txt`` gives the dev environment's tests).

That works only where nothing else in the package needs protobuf 6: PyTorch does not, nor
ONNX Runtime (it asks for ``protobuf>=4.25.8``; a package does not carry the ``onnx``
package, which would need 6), nor scorepack's gRPC server (its messages are built from
descriptors at run time, not from generated code pinned to a protobuf major). TensorFlow
2.21 does (``protobuf>=6.31.1``): there the build refuses, saying why, rather than write a
package whose environment cannot install. What needs what is read from the installed
distributions' own metadata, and ``scorepack check`` (run after every build) confirms the
whole set with pip's resolver.
"""

from __future__ import annotations

import importlib.metadata
import re
from collections.abc import Iterable, Mapping

from ..errors import PackageError
from .resolve import normalize

__all__ = [
    "OTEL_RELEASE",
    "PROTOBUF",
    "check_tracing",
    "protobuf_conflicts",
    "tracing_requirements",
]

#: the OpenTelemetry release azmlinfsrv 1.5.1 pins (opentelemetry-sdk==1.33.0)
OTEL_RELEASE = "1.33.0"
#: the protobuf the exporter of that release runs on (opentelemetry-proto 1.33: >=5,<6)
PROTOBUF = "5.29.6"
#: the exporter set for :data:`OTEL_RELEASE`, beyond the SDK azmlinfsrv brings: name → version
_EXPORTER: Mapping[str, str] = {
    "opentelemetry-exporter-otlp-proto-http": OTEL_RELEASE,
    "opentelemetry-exporter-otlp-proto-common": OTEL_RELEASE,
    "opentelemetry-proto": OTEL_RELEASE,
    # required by the exporter's metadata; 1.70 is the last to take protobuf 5
    "googleapis-common-protos": "1.70.0",
    "protobuf": PROTOBUF,
}
_REQ_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def _sdk_release() -> str:
    """The OpenTelemetry SDK the installed azmlinfsrv pins (the package pins that azmlinfsrv)."""
    try:
        requires = importlib.metadata.requires("azureml-inference-server-http") or []
    except importlib.metadata.PackageNotFoundError:
        return OTEL_RELEASE
    for line in requires:
        match = re.match(r"\s*opentelemetry-sdk\s*==\s*([0-9][^;,\s]*)", line)
        if match:
            return match.group(1)
    return OTEL_RELEASE


def tracing_requirements(runtime: Iterable[str]) -> tuple[str, ...]:
    """The package's runtime pins with the OTLP exporter set of azmlinfsrv's OpenTelemetry
    release: its protobuf pin replaced by protobuf 5, the exporter's pins added, sorted.

    Raises :class:`PackageError` when the installed azmlinfsrv pins another release than the
    one this scorepack knows the exporter set of.
    """
    release = _sdk_release()
    if release != OTEL_RELEASE:
        raise PackageError(
            f"--tracing pins the OTLP exporter of OpenTelemetry {OTEL_RELEASE}, but the "
            f"installed azureml-inference-server-http pins opentelemetry-sdk=={release}; "
            "this scorepack does not know that release's exporter set. Build without --tracing."
        )
    pins = {normalize(m.group(1)): line for line in runtime if (m := _REQ_NAME.match(line))}
    for name, version in _EXPORTER.items():
        pins[normalize(name)] = f"{name}=={version}"
    pins[normalize("opentelemetry-sdk")] = f"opentelemetry-sdk=={OTEL_RELEASE}"
    return tuple(pins[k] for k in sorted(pins))


def protobuf_conflicts(distributions: Iterable[str]) -> list[str]:
    """``"NAME VERSION needs protobuf SPEC"`` for each of ``distributions`` installed here
    whose own metadata asks for a protobuf that excludes :data:`PROTOBUF`."""
    from packaging.requirements import Requirement

    found = []
    seen: set[str] = set()
    for name in distributions:
        key = normalize(name)
        if key in seen:
            continue
        seen.add(key)
        try:
            version = importlib.metadata.version(name)
            requires = importlib.metadata.requires(name) or []
        except importlib.metadata.PackageNotFoundError:
            continue
        for line in requires:
            requirement = Requirement(line)
            if normalize(requirement.name) != "protobuf" or "extra" in str(requirement.marker):
                continue
            if not requirement.specifier.contains(PROTOBUF, prereleases=True):
                found.append(f"{name} {version} needs protobuf{requirement.specifier}")
    return found


def check_tracing(pip: Iterable[str], distributions: Iterable[str], backend: str) -> None:
    """Refuse ``--tracing`` for a framework that needs protobuf 6: the framework's pins
    (``pip``) and its backend's distributions, as installed here, say what they need."""
    names = [m.group(1) for line in pip if (m := _REQ_NAME.match(line))]
    conflicts = protobuf_conflicts([*names, *distributions])
    if conflicts:
        raise PackageError(
            f"--tracing cannot go with the {backend} backend: azmlinfsrv pins OpenTelemetry "
            f"{OTEL_RELEASE}, whose OTLP exporter needs protobuf>=5,<6 (it pins "
            f"protobuf=={PROTOBUF}), but {'; '.join(conflicts)}. pip cannot install both, so "
            "no package is written. Build without --tracing (traces can still go to the "
            "console), or package the model for ONNX Runtime or PyTorch."
        )
