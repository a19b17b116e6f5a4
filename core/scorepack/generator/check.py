"""``scorepack check PKG``: does the package's environment resolve for its target?

pip's own resolver answers, for the machine the package is meant for (Linux x86-64, the
package's Python), against the package index, installing nothing::

    pip install --dry-run --ignore-installed --report FILE --target TMP
        --only-binary=:all: --python-version 3.11 --platform manylinux_2_35_x86_64 ...

``--only-binary`` with ``--platform`` makes pip read wheel metadata only, never run a
build. pip runs with ``PIP_CONFIG_FILE`` pointing at nothing and without ``PIP_FIND_LINKS``
or ``PIP_CONSTRAINT``: a developer's local wheel folder or constraints (a CPU torch, say)
must not answer for what a GPU node would install.

Per requirement the report says: found or not, the version, the CUDA major its wheels
bring, and a conflict. An extra index (PyTorch's) that cannot be reached from here is
reported as such; what needs it is marked unchecked, never guessed.

A package of several models has one environment, resolved as one; the report then also
says, per model, whether what that model needs (its framework's pins, its backend's wheel,
and everything the models share) resolves, and names what fails it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import PackageError
from ..manifest import load_manifest
from .resolve import normalize
from .spec import PackageSpec

__all__ = [
    "DEFAULT_INDEX",
    "PLATFORMS",
    "CheckReport",
    "ModelResult",
    "RequirementResult",
    "check_package",
    "check_spec",
]

DEFAULT_INDEX = "https://pypi.org/simple"
#: the base images are Ubuntu 22.04 (glibc 2.35): every manylinux tag it runs, newest first
PLATFORMS = (
    *(f"manylinux_2_{minor}_x86_64" for minor in range(35, 16, -1)),
    "manylinux2014_x86_64",
    "manylinux2010_x86_64",
    "manylinux1_x86_64",
)
#: pip settings that would let this machine's own setup answer for the target's
_DROPPED_PIP_VARIABLES = (
    "PIP_FIND_LINKS",
    "PIP_CONSTRAINT",
    "PIP_EXTRA_INDEX_URL",
    "PIP_NO_INDEX",
    "PIP_REQUIREMENT",
    "PIP_TARGET",
    "PIP_PREFIX",
    "PIP_USER",
    "PIP_ONLY_BINARY",
    "PIP_NO_BINARY",
    "PIP_PLATFORM",
)
_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")
_CU_SUFFIX = re.compile(r"-cu(\d+)$")
_LOCAL_CU = re.compile(r"\+cu(\d\d)\d*$")
#: packages whose version is the CUDA version they belong to
_CUDA_VERSIONED = {"cuda-toolkit", "nvidia-cuda-runtime", "nvidia-cuda-nvrtc", "cuda-bindings"}

Runner = Callable[[Sequence[str], dict[str, str], float], "subprocess.CompletedProcess[str]"]


@dataclass(frozen=True)
class RequirementResult:
    """What pip found for one requirement line."""

    requirement: str
    #: ok | not found | conflict | unchecked
    status: str
    version: str | None = None
    cuda_major: int | None = None
    detail: str = ""

    @property
    def found(self) -> bool:
        """Whether pip found a version that fits."""
        return self.version is not None


@dataclass(frozen=True)
class ModelResult:
    """One model of a package of several: does what it needs resolve?"""

    name: str
    backend: str
    #: ok | fails | unchecked
    status: str
    #: what fails it, each a requirement line and the reason in brackets (or, when
    #: unchecked, the lines that could not be checked)
    culprits: tuple[str, ...] = ()
    #: the CUDA major its own requirements bring
    cuda_major: int | None = None

    def text(self) -> str:
        """One line of the report."""
        head = f"model {self.name} ({self.backend}): "
        if self.status == "ok":
            return head + "ok"
        what = "does NOT resolve" if self.status == "fails" else "unchecked"
        return f"{head}{what}: {', '.join(self.culprits)}"


@dataclass(frozen=True)
class CheckReport:
    """The outcome of resolving one package's environment."""

    package: str
    device: str
    python: str
    index: str
    results: tuple[RequirementResult, ...]
    #: problems of the whole set (a CUDA major that differs from the manifest's, …)
    problems: tuple[str, ...] = ()
    #: extra indexes that could not be reached from here, with the reason
    unreachable: tuple[str, ...] = ()
    resolved: int = 0
    cuda_expected: int | None = None
    packages: tuple[str, ...] = field(default=(), repr=False)
    #: per model, for a package of several (empty for one model)
    models: tuple[ModelResult, ...] = ()

    @property
    def ok(self) -> bool:
        """Everything was checked and resolves together."""
        return self.complete and not self.failed

    @property
    def failed(self) -> bool:
        """Something is missing, conflicts, or does not fit the package's CUDA."""
        return bool(self.problems) or any(
            r.status in ("not found", "conflict") for r in self.results
        )

    @property
    def complete(self) -> bool:
        """Every requirement was checked (no extra index was out of reach)."""
        return not any(r.status == "unchecked" for r in self.results)

    def text(self) -> str:
        """The report a person reads."""
        cuda = f", CUDA {self.cuda_expected}" if self.cuda_expected else ""
        lines = [
            f"{self.package}: {self.device}{cuda}, Python {self.python}, Linux x86-64 "
            f"(manylinux, glibc 2.35), index {self.index}",
        ]
        width = max((len(r.requirement) for r in self.results), default=10)
        for r in self.results:
            cuda_text = f"CUDA {r.cuda_major}" if r.cuda_major else "-"
            version = r.version or "-"
            detail = f"  {r.detail}" if r.detail else ""
            lines.append(
                f"  {r.requirement.ljust(width)}  {r.status:<9}  {version:<12}  "
                f"{cuda_text:<7}{detail}"
            )
        lines += [f"  unreachable: {u}" for u in self.unreachable]
        lines += [f"  problem: {p}" for p in self.problems]
        lines += [f"  {m.text()}" for m in self.models]
        if self.ok:
            lines.append(f"resolves: {self.resolved} distributions, nothing installed")
        elif self.failed:
            lines.append("does NOT resolve")
        else:
            lines.append("incomplete: what is marked unchecked could not be checked from here")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """The report as plain data (``scorepack check --json``)."""
        return {
            "package": self.package,
            "device": self.device,
            "python": self.python,
            "index": self.index,
            "ok": self.ok,
            "complete": self.complete,
            "cuda_expected": self.cuda_expected,
            "resolved": self.resolved,
            "requirements": [
                {
                    "requirement": r.requirement,
                    "status": r.status,
                    "found": r.found,
                    "version": r.version,
                    "cuda_major": r.cuda_major,
                    "detail": r.detail,
                }
                for r in self.results
            ],
            "problems": list(self.problems),
            "unreachable": list(self.unreachable),
            "models": [
                {
                    "name": m.name,
                    "backend": m.backend,
                    "status": m.status,
                    "ok": m.status == "ok",
                    "culprits": list(m.culprits),
                    "cuda_major": m.cuda_major,
                }
                for m in self.models
            ],
        }


def _name(line: str) -> str:
    match = _NAME.match(line)
    return normalize(match.group(1)) if match else ""


def pip_environment() -> dict[str, str]:
    """This process's environment without the pip settings that would skew the check."""
    env = {k: v for k, v in os.environ.items() if k not in _DROPPED_PIP_VARIABLES}
    env["PIP_CONFIG_FILE"] = os.devnull
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def _run(
    args: Sequence[str], env: dict[str, str], timeout: float
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(args), env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def index_error(url: str, timeout: float = 15.0) -> str | None:
    """Why the simple index at ``url`` cannot be read from here (None: it can)."""
    probe = url.rstrip("/") + "/pip/"
    try:
        with urllib.request.urlopen(probe, timeout=timeout) as response:
            response.read(1)
    except urllib.error.HTTPError as exc:
        if exc.code == 404:  # the index answers; it just has no pip (a private index)
            return None
        return f"HTTP {exc.code} from {probe}"
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return f"{type(exc).__name__}: {reason}"
    return None


class _Resolver:
    """Runs pip's resolver for one target, one requirement set at a time."""

    def __init__(
        self, python: str, index: str, extra: Sequence[str], runner: Runner, timeout: float
    ) -> None:
        self.python = python
        self.index = index
        self.extra = list(extra)
        self.runner = runner
        self.timeout = timeout

    def __call__(self, lines: Sequence[str]) -> tuple[dict[str, Any] | None, str]:
        with tempfile.TemporaryDirectory(prefix="scorepack-check-") as tmp:
            report = Path(tmp) / "report.json"
            args = [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--dry-run",
                "--ignore-installed",
                "--quiet",
                "--report",
                str(report),
                "--target",
                str(Path(tmp) / "target"),
                "--only-binary=:all:",
                "--python-version",
                self.python,
                "--implementation",
                "cp",
                "--index-url",
                self.index,
            ]
            for platform in PLATFORMS:
                args += ["--platform", platform]
            for url in self.extra:
                args += ["--extra-index-url", url]
            args += list(lines)
            try:
                done = self.runner(args, pip_environment(), self.timeout)
            except subprocess.TimeoutExpired:
                return None, f"pip did not finish within {self.timeout:.0f} s"
            if done.returncode != 0 or not report.is_file():
                return None, _pip_error(done.stderr or done.stdout)
            return json.loads(report.read_text("utf-8")), ""


def _pip_error(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip().startswith("ERROR:")]
    wanted = [ln for ln in lines if "No matching distribution" in ln or "conflict" in ln]
    chosen = wanted or lines or [ln.strip() for ln in text.splitlines() if ln.strip()][-1:]
    return " ".join(ln.removeprefix("ERROR:").strip() for ln in chosen)[:400]


def _cuda_of(name: str, version: str) -> int | None:
    """The CUDA major a distribution belongs to, when it says."""
    if match := _CU_SUFFIX.search(name):
        return int(match.group(1))
    if match := _LOCAL_CU.search(version):
        return int(match.group(1))
    if name in _CUDA_VERSIONED and version[:2].isdigit():
        return int(version.split(".", 1)[0])
    return None


def _closure(root: str, items: dict[str, dict[str, Any]]) -> set[str]:
    seen: set[str] = set()
    todo = [root]
    while todo:
        name = todo.pop()
        if name in seen or name not in items:
            continue
        seen.add(name)
        for requirement in items[name]["metadata"].get("requires_dist") or ():
            todo.append(_name(requirement))
    return seen


def _is_wheel(line: str) -> bool:
    return line.startswith((".", "/")) and line.endswith(".whl")


def _requested_name(line: str) -> str:
    if _is_wheel(line):
        # a wheel file: its name is the first dash-separated part of the file name
        return normalize(Path(line).name.split("-", 1)[0])
    return _name(line)


def _results(
    lines: Sequence[str], report: dict[str, Any]
) -> tuple[list[RequirementResult], set[int]]:
    items = {normalize(i["metadata"]["name"]): i for i in report.get("install", [])}
    results = []
    majors: set[int] = set()
    for line in lines:
        name = _requested_name(line)
        item = items.get(name)
        if item is None:  # a marker excluded it for Linux x86-64
            results.append(RequirementResult(line, "ok", None, None, "not for this platform"))
            continue
        found = {
            m
            for dep in _closure(name, items)
            if (m := _cuda_of(dep, str(items[dep]["metadata"]["version"]))) is not None
        }
        majors |= found
        detail = ""
        major = min(found) if found else None
        status = "ok"
        if len(found) > 1:
            status, detail = "conflict", "mixes CUDA " + " and ".join(map(str, sorted(found)))
        results.append(
            RequirementResult(line, status, str(item["metadata"]["version"]), major, detail)
        )
    return results, majors


def requirement_set(spec: PackageSpec, package: Path) -> tuple[list[str], list[str]]:
    """The package's requirement lines (wheels as absolute paths) and its extra indexes."""
    lines: list[str] = []
    extra: list[str] = []
    for line in (*spec.requirements.pip, *spec.runtime_requirements):
        text = line.strip()
        if text.startswith("--extra-index-url"):
            extra.append(text.split(None, 1)[1].strip())
        elif text.startswith("--index-url"):
            extra.append(text.split(None, 1)[1].strip())
        elif text and not text.startswith("#"):
            lines.append(text)
    lines += [str((package / wheel).resolve()) for wheel in spec.wheels]
    return lines, extra


def check_spec(
    spec: PackageSpec,
    package: Path,
    *,
    index: str | None = None,
    runner: Runner = _run,
    reachable: Callable[[str], str | None] = index_error,
    timeout: float = 600.0,
) -> CheckReport:
    """Resolve ``spec``'s environment (see the module docstring) and report per requirement.

    Raises :class:`~scorepack.errors.PackageError` when the package index itself cannot be
    reached: nothing could be checked.
    """
    index = index or os.environ.get("PIP_INDEX_URL") or DEFAULT_INDEX
    problem = reachable(index)
    if problem:
        raise PackageError(
            f"The package index {index} is not reachable from here ({problem}), so the "
            "package's environment cannot be checked. Check the network (or point "
            "--index-url at a mirror), or build with --no-check."
        )
    lines, extra = requirement_set(spec, package)
    reachable_extra, unreachable = [], []
    for url in extra:
        why = reachable(url)
        if why:
            unreachable.append(f"{url} ({why})")
        else:
            reachable_extra.append(url)
    # a local version label (+cu126, +cpu) names a build only that extra index carries
    unchecked = [ln for ln in lines if unreachable and "+" in ln.split(";", 1)[0]]
    checked = [ln for ln in lines if ln not in unchecked]
    resolve = _Resolver(spec.python_version or "3.11", index, reachable_extra, runner, timeout)
    report, error = resolve(checked)
    expected = spec.requirements.cuda.major if spec.requirements.cuda else None
    problems: list[str] = []
    if report is not None:
        results, majors = _results(checked, report)
        resolved = len(report.get("install", []))
    else:
        results, majors = _isolate(checked, error, resolve), set()
        resolved = 0
        for r in results:
            if r.cuda_major is not None:
                majors.add(r.cuda_major)
    results += [
        RequirementResult(
            ln, "unchecked", None, None, f"needs {', '.join(unreachable)}, not reachable from here"
        )
        for ln in unchecked
    ]
    order = {ln: i for i, ln in enumerate(lines)}
    results.sort(key=lambda r: order.get(r.requirement, len(order)))
    if spec.device == "cpu" and majors:
        problems.append(
            "a CPU package pulls CUDA libraries (CUDA "
            + ", ".join(map(str, sorted(majors)))
            + "): pin the CPU build"
        )
    if expected is not None and majors and majors != {expected}:
        problems.append(
            f"the manifest says CUDA {expected}; the wheels bring CUDA "
            + " and ".join(map(str, sorted(majors)))
        )
    return CheckReport(
        package=spec.name,
        device=spec.device,
        python=spec.python_version or "3.11",
        index=index,
        results=tuple(results),
        problems=tuple(problems),
        unreachable=tuple(unreachable),
        resolved=resolved,
        cuda_expected=expected,
        models=_model_results(spec, package, results, expected),
    )


_FAILED = ("not found", "conflict")


def _why(result: RequirementResult) -> str:
    return f"{result.status}: {result.detail}" if result.detail else result.status


def _own_lines(model: PackageSpec, spec: PackageSpec, package: Path) -> set[str]:
    """The requirement lines (as :func:`requirement_set` writes them) only ``model`` needs:
    its framework's pins and its backend's wheel."""
    own = {ln.strip() for ln in model.requirements.pip if not ln.strip().startswith("-")}
    dist = normalize(model.backend_distribution) if model.backend_distribution else ""
    for wheel in spec.wheels:
        path = str((package / wheel).resolve())
        if dist and _requested_name(path) == dist:
            own.add(path)
    return own


def _model_results(
    spec: PackageSpec,
    package: Path,
    results: Sequence[RequirementResult],
    expected: int | None,
) -> tuple[ModelResult, ...]:
    """Each model's verdict: a line one model needs is that model's; every other line
    (the runtime's pins, scorepack's wheel) is every model's."""
    if not spec.models:
        return ()
    owned = {m.name: _own_lines(m, spec, package) for m in spec.models}
    anyone = set().union(*owned.values())
    verdicts = []
    for model in spec.models:
        mine = [
            r for r in results if r.requirement in owned[model.name] or r.requirement not in anyone
        ]
        majors = {r.cuda_major for r in mine if r.cuda_major is not None}
        failing = [f"{r.requirement} ({_why(r)})" for r in mine if r.status in _FAILED]
        failing += [
            f"{r.requirement} (brings CUDA {r.cuda_major}"
            + (f", the package's is {expected})" if expected else " to a CPU package)")
            for r in mine
            if r.status not in _FAILED
            and r.cuda_major is not None
            and r.requirement in owned[model.name]
            and r.cuda_major != expected
        ]
        unchecked = [r.requirement for r in mine if r.status == "unchecked"]
        status = "fails" if failing else "unchecked" if unchecked else "ok"
        verdicts.append(
            ModelResult(
                name=model.name,
                backend=model.backend,
                status=status,
                culprits=tuple(failing or unchecked),
                cuda_major=min(majors) if majors else None,
            )
        )
    return tuple(verdicts)


def _isolate(
    lines: Sequence[str], error: str, resolve: Callable[[Sequence[str]], tuple[Any, str]]
) -> list[RequirementResult]:
    """The whole set does not resolve: resolve each line alone to say which fail and why.

    A wheel of the package goes with the package's other wheels: a backend plugin's wheel
    needs scorepack's, which no index has (alone it would be "not found" for that reason).
    """
    wheels = [ln for ln in lines if _is_wheel(ln)]

    def alone_with_wheels(line: str) -> tuple[Any, str]:
        if _is_wheel(line):
            return resolve([line, *(w for w in wheels if w != line)])
        return resolve([line])

    with ThreadPoolExecutor(max_workers=4) as pool:
        alone = list(pool.map(alone_with_wheels, lines))
    results = []
    jointly = all(report is not None for report, _ in alone)
    named = [ln for ln in lines if _requested_name(ln) in error.lower()]
    for line, (report, own_error) in zip(lines, alone, strict=True):
        if report is None:
            results.append(RequirementResult(line, "not found", None, None, own_error))
            continue
        found, majors = _results([line], report)
        major = min(majors) if majors else None
        if jointly and (line in named or not named):
            # each resolves alone, so together they conflict; pip's message names whom
            results.append(RequirementResult(line, "conflict", found[0].version, major, error))
        else:
            results.append(
                RequirementResult(line, "ok", found[0].version, major, "resolves on its own")
            )
    return results


def check_package(package: str | Path, **kwargs: Any) -> CheckReport:
    """:func:`check_spec` for the package directory ``package``."""
    root = Path(package)
    return check_spec(load_manifest(root), root, **kwargs)
