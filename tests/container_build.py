"""A package's Dockerfile, carried out here without a container daemon.

No image can be built on this machine, so the build context is proved instead: the
Dockerfile's own instructions are read and done on the file system — COPY from the build
context (less what ``.dockerignore`` leaves out), WORKDIR, ENV, and RUN through ``sh`` — with
the image's absolute paths mapped under a temporary root, so ``/opt/scorepack/venv`` becomes a
fresh virtual environment here. The one RUN that needs root (creating the image's user) is
left out; everything else runs as written. The entrypoint, healthcheck and environment come
back for the test to run the server exactly as the container would.
"""

from __future__ import annotations

import fnmatch
import json
import os
import shlex
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

#: RUN commands that change the system rather than the image's files: they need root
_SYSTEM_COMMANDS = ("groupadd", "useradd")


@dataclass
class Built:
    """What the Dockerfile made: the image's environment, entrypoint and healthcheck."""

    root: Path
    env: dict[str, str] = field(default_factory=dict)
    entrypoint: list[str] = field(default_factory=list)
    healthcheck: list[str] = field(default_factory=list)
    exposed: list[int] = field(default_factory=list)
    user: str = ""
    skipped: list[str] = field(default_factory=list)

    def path(self, image_path: str) -> Path:
        """Where an absolute path of the image is here."""
        return self.root / image_path.lstrip("/")


def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        full = pending + stripped
        pending = ""
        word, _, rest = full.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def _ignored(context: Path) -> list[tuple[bool, str]]:
    """.dockerignore's patterns as (negated, pattern)."""
    path = context / ".dockerignore"
    patterns = []
    for line in path.read_text().splitlines() if path.is_file() else ():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        patterns.append((negated, line.lstrip("!").rstrip("/")))
    return patterns


def _excluded(relative: str, patterns: list[tuple[bool, str]]) -> bool:
    # docker's rule: the last matching pattern wins; a directory pattern covers what is inside
    excluded = False
    for negated, pattern in patterns:
        parts = relative.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        glob = pattern.replace("**/", "*")
        if any(fnmatch.fnmatch(p, glob) for p in prefixes):
            excluded = not negated
    return excluded


class DockerfileRunner:
    """Carries out one stage chain of a Dockerfile (``target``: the last stage by default)."""

    def __init__(self, context: Path, root: Path, *, python: str, target: str | None = None):
        self.context = context
        self.root = root
        self.python = python
        self.target = target
        self.patterns = _ignored(context)

    def _map(self, text: str) -> str:
        for prefix in ("/opt/", "/mnt/"):
            text = text.replace(prefix, f"{self.root}{prefix}")
        return text

    def _copy(self, args: str, workdir: Path) -> None:
        tokens = shlex.split(args)
        tokens = [t for t in tokens if not t.startswith("--")]
        *sources, dest = tokens
        target = Path(self._map(dest)) if dest.startswith("/") else workdir / dest
        for source in sources:
            origin = self.context / source.rstrip("/")
            relative = source.rstrip("/")
            if not origin.exists() or _excluded(relative, self.patterns):
                raise FileNotFoundError(f"COPY {source}: not in the build context")
            if origin.is_dir():
                for item in sorted(origin.rglob("*")):
                    rel = item.relative_to(self.context).as_posix()
                    if item.is_file() and not _excluded(rel, self.patterns):
                        copy = target / item.relative_to(origin)
                        copy.parent.mkdir(parents=True, exist_ok=True)
                        shutil.copy2(item, copy)
            else:
                into = target / origin.name if dest.endswith("/") else target
                into.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(origin, into)

    def run(self) -> Built:
        stages: dict[str, list[tuple[str, str]]] = {}
        order: list[tuple[str, str, list[tuple[str, str]]]] = []
        args: dict[str, str] = {}
        for word, rest in _instructions((self.context / "Dockerfile").read_text()):
            if word == "ARG" and not order:
                name, _, value = rest.partition("=")
                args[name] = value
            elif word == "FROM":
                image, _, alias = rest.partition(" AS ")
                steps: list[tuple[str, str]] = []
                order.append((alias.strip() or f"stage{len(order)}", image.strip(), steps))
                stages[order[-1][0]] = steps
            else:
                order[-1][2].append((word, rest))
        # the chain of stages that builds the target
        index = {name: (image, steps) for name, image, steps in order}
        name = self.target or order[-1][0]
        chain = []
        while name in index:
            image, steps = index[name]
            chain.insert(0, steps)
            name = image
        built = Built(root=self.root)
        env: dict[str, str] = {}
        workdir = self.root
        for steps in chain:
            for word, rest in steps:
                if word == "ENV":
                    for token in shlex.split(rest):
                        key, _, value = token.partition("=")
                        # the base image's PATH is this machine's here
                        env[key] = value.replace("$PATH", env.get("PATH", os.environ["PATH"]))
                elif word == "WORKDIR":
                    workdir = Path(self._map(rest))
                    workdir.mkdir(parents=True, exist_ok=True)
                elif word == "COPY":
                    self._copy(rest, workdir)
                elif word == "RUN":
                    if rest.split()[0] in _SYSTEM_COMMANDS:
                        built.skipped.append(rest)
                        continue
                    run_env = {**os.environ, **{k: self._map(v) for k, v in env.items()}}
                    run_env["PYTHON"] = self.python
                    run_env.pop("PYTHONPATH", None)
                    run_env.pop("PIP_NO_CACHE_DIR", None)  # the pip cache keeps the test quick
                    subprocess.run(
                        ["sh", "-c", self._map(rest)],
                        cwd=workdir,
                        env=run_env,
                        check=True,
                        capture_output=True,
                        text=True,
                    )
                elif word == "ENTRYPOINT":
                    built.entrypoint = json.loads(rest)
                elif word == "HEALTHCHECK":
                    built.healthcheck = json.loads(rest.split(" CMD ", 1)[1])
                elif word == "EXPOSE":
                    built.exposed = [int(p) for p in rest.split()]
                elif word == "USER":
                    built.user = rest
        built.env = env
        return built
