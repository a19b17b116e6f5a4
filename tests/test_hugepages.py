"""The model's memory on transparent huge pages (scorepack/hugepages.py).

The rule over given environments and kernel settings; the serving commands found on a
command line; then end to end: ``scorepack serve`` started without the tunable runs, in
the same process, with it (``/proc/PID/environ``) and says so in ``/info``, while the
user's own setting is left alone; a package's service environment carries it.
"""

from __future__ import annotations

import sys
from pathlib import Path

import httpx
import pytest

from cli_process import ServerProcess, cli_env
from scorepack import cli, hugepages
from scorepack.cuda import service_variables

linux_glibc = pytest.mark.skipif(
    hugepages.unavailable() is not None,
    reason="needs Linux, glibc and a kernel that offers transparent huge pages",
)


def test_the_setting_is_added_to_the_users_other_tunables() -> None:
    assert hugepages.tunables_with_huge_pages({}) == "glibc.malloc.hugetlb=1"
    other = {"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}
    assert (
        hugepages.tunables_with_huge_pages(other)
        == "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"
    )


@pytest.mark.parametrize(
    "tunables", ["glibc.malloc.hugetlb=0", "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=2"]
)
def test_the_users_own_huge_page_setting_wins(tunables: str) -> None:
    env = {"GLIBC_TUNABLES": tunables}
    assert hugepages.tunables_with_huge_pages(env) is None
    assert hugepages.in_effect(env) == tunables.rsplit(":", 1)[-1]


@pytest.mark.parametrize(
    ("modes", "offers"),
    [("always [madvise] never\n", True), ("[always] madvise never\n", True),
     ("always madvise [never]\n", False), (None, False)],
)  # fmt: skip
def test_the_kernels_setting_decides(tmp_path: Path, modes: str | None, offers: bool) -> None:
    path = tmp_path / "enabled"
    if modes is not None:
        path.write_text(modes)
    assert hugepages.kernel_offers(str(path)) is offers


@pytest.mark.parametrize(
    ("argv", "name"),
    [
        (["serve", "model/"], "serve"),
        (["--log-level", "debug", "serve", "model/"], "serve"),
        (["--log-format=json", "serve-azureml", "pkg/"], "serve-azureml"),
        (["score", "http://x", "serve"], "score"),
        (["--version"], None),
        ([], None),
    ],
)
def test_the_command_is_found_past_the_groups_options(argv: list[str], name: str | None) -> None:
    assert cli.command_name(cli._root(), argv) == name


def test_main_called_with_arguments_never_replaces_its_process(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[str] = []
    monkeypatch.setattr(hugepages, "reexec", lambda: calls.append("reexec"))
    monkeypatch.setattr(sys, "argv", ["scorepack", "serve", "--help"])
    with pytest.raises(SystemExit):
        cli.main(["serve", "--help"])  # from Python: the caller's process stays
    assert calls == []
    with pytest.raises(SystemExit):
        cli.main()  # as the program: a serving command starts itself again first
    assert calls == ["reexec"]


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


@linux_glibc
@pytest.mark.parametrize("user", [None, "glibc.malloc.hugetlb=0"], ids=["automatic", "user"])
def test_serve_runs_with_huge_pages_asked_for(identity_path: Path, user: str | None) -> None:
    env = cli_env()
    env.pop("GLIBC_TUNABLES", None)
    if user:
        env["GLIBC_TUNABLES"] = user
    with ServerProcess([str(identity_path)], env=env) as server:
        info = httpx.get(server.url + "/info", timeout=30).json()
        # the process the test started, started again in place: the same pid serves
        tunables = _environ(server.proc.pid).get("GLIBC_TUNABLES")
    want = user or "glibc.malloc.hugetlb=1"
    assert tunables == want
    assert info["huge_pages"] == want


def test_a_packages_service_environment_asks_for_huge_pages() -> None:
    assert service_variables(None) == {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}


@linux_glibc
def test_a_failed_restart_serves_on_as_started(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def refused(*_: object) -> None:
        raise PermissionError("no exec here")

    monkeypatch.setattr(hugepages.os, "execve", refused)
    hugepages.reexec(["python", "-m", "scorepack", "serve"], {})  # returns: serves on
    assert "no exec here" in caplog.text
