"""The model's memory on transparent huge pages: glibc's ``malloc`` asks the kernel for them.

A CNN's weights and activations are hundreds of megabytes read again on every call; on 4 KiB
pages each pass walks them through the TLB a page at a time. Linux backs memory with 2 MiB
pages when a program asks (``madvise``, the default setting of
``/sys/kernel/mm/transparent_hugepage/enabled`` on most distributions), and the frameworks'
CPU allocators mostly do not ask: their memory comes from glibc's ``malloc``. glibc 2.35
and later asks for them itself when the tunable ``glibc.malloc.hugetlb=1`` is set, in the
``GLIBC_TUNABLES`` environment variable, which glibc reads once, when the process starts.

Measured on this machine (AMD EPYC, 2 cores, ResNet50, quiet; ``benchmarks/RESULTS.md``,
stop 19). The model call alone (``benchmarks/micro/huge_pages.py``: fresh processes in
alternating turns, medians of three): PyTorch batch 8 165.4 → 149.9 ms (−9 %), batch 1
26.2 → 25.7; TensorFlow batch 1 31.8 → 27.5 ms (−13 %), batch 8 167.0 → 156.2; ONNX
Runtime batch 8 129.0 → 124.4 ms (−4 %), batch 1 unchanged. The server at c=32
(``benchmarks/micro/paired_ab.py --compare huge-pages``, live servers in alternating
turns): PyTorch 1.12 × the requests a second (every one of 8 turns ahead), TensorFlow
1.02 ×; a tiny model, where the server's own work dominates, 0.99 ×. The price is memory:
288-472 MiB of the process on huge pages instead of 2-8 MiB, resident memory +31 MiB for
PyTorch (428 → 459), +32 for ONNX Runtime (416 → 448), +15 for TensorFlow (991 → 1006).

So scorepack runs its services with ``glibc.malloc.hugetlb=1``:

* ``scorepack serve`` (the console command or ``python -m scorepack``) re-executes itself
  once, before it imports anything heavy, with the tunable added to ``GLIBC_TUNABLES``:
  same process id, same arguments, same environment otherwise (:func:`reexec`);
* a package's services get it as an environment variable wherever scorepack writes their
  environment (Azure ML v1 and v2 deployments, the container image, and through it the
  Kubernetes and KServe manifests; :func:`service_variables`).

Nothing is set when the user's ``GLIBC_TUNABLES`` already names ``glibc.malloc.hugetlb``
(``glibc.malloc.hugetlb=0`` turns it off), when the kernel's huge pages are ``never``, or
off Linux and glibc; an older glibc ignores a tunable it does not know. ``/info`` says what
is in effect (``huge_pages``). A program that loads models in-process
(``scorepack.load``) starts before scorepack can act: set the variable when starting it.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping, Sequence

__all__ = [
    "SETTING",
    "TUNABLE",
    "glibc",
    "in_effect",
    "kernel_offers",
    "reexec",
    "service_variables",
    "tunables_with_huge_pages",
    "unavailable",
    "user_setting",
]

logger = logging.getLogger("scorepack.hugepages")

#: the glibc tunable, and the value scorepack runs with
TUNABLE = "glibc.malloc.hugetlb"
SETTING = f"{TUNABLE}=1"
#: where Linux says whether programs may ask for transparent huge pages
THP_ENABLED = "/sys/kernel/mm/transparent_hugepage/enabled"


def user_setting(env: Mapping[str, str]) -> str | None:
    """The ``glibc.malloc.hugetlb=...`` entry of ``env``'s ``GLIBC_TUNABLES``, if any."""
    for entry in env.get("GLIBC_TUNABLES", "").split(":"):
        if entry.split("=", 1)[0].strip() == TUNABLE:
            return entry.strip()
    return None


def tunables_with_huge_pages(env: Mapping[str, str]) -> str | None:
    """``GLIBC_TUNABLES`` with scorepack's setting added; None when the user's names it."""
    if user_setting(env) is not None:
        return None
    current = env.get("GLIBC_TUNABLES", "")
    return f"{current}:{SETTING}" if current else SETTING


def kernel_offers(path: str = THP_ENABLED) -> bool:
    """Whether this Linux lets a program ask for transparent huge pages (``always`` or
    ``madvise`` selected, shown in brackets); False off Linux or without the file."""
    try:
        with open(path, encoding="ascii") as f:
            modes = f.read()
    except OSError:
        return False
    return "[never]" not in modes and "[" in modes


def glibc() -> bool:
    """Whether this process runs on glibc (whose malloc reads the tunable)."""
    try:
        return os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc")  # type: ignore[union-attr]
    except (AttributeError, ValueError, OSError):
        return False


def service_variables() -> dict[str, str]:
    """What a package's service environment gets (its host's kernel and libc are unknown
    here; where they cannot use it, glibc and the kernel ignore it)."""
    return {"GLIBC_TUNABLES": SETTING}


def unavailable() -> str | None:
    """Why this process cannot have glibc's huge pages, or None when it can."""
    if not (sys.platform.startswith("linux") and glibc()):
        return "not glibc"
    if not kernel_offers():
        return "the kernel offers none"
    return None


def reexec(orig_argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> None:
    """Start this program again with huge pages asked for, when that applies (see the
    module's docstring). Returns when nothing is to be done, or when the new start was
    refused (logged): the program then goes on as started."""
    env = os.environ if env is None else env
    argv = list(sys.orig_argv if orig_argv is None else orig_argv)
    tunables = tunables_with_huge_pages(env)
    if tunables is None or not argv or unavailable() is not None:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    # the same interpreter and the command line it was given (``-m scorepack``, a console
    # script's path); glibc reads GLIBC_TUNABLES only at start, hence a new image
    try:
        os.execve(sys.executable, argv, {**env, "GLIBC_TUNABLES": tunables})
    except OSError as exc:  # e.g. the interpreter moved: serve as started, say why
        logger.warning("could not start again with glibc's huge pages: %s", exc)


def in_effect(env: Mapping[str, str] | None = None) -> str:
    """What ``/info`` shows: the tunable this process runs with, or why none."""
    env = os.environ if env is None else env
    setting = user_setting(env)
    if setting is not None:
        return setting
    why = unavailable() or "the process was started without GLIBC_TUNABLES"
    return f"not asked for ({why})"
