"""``scorepack serve`` with several models, run as a user runs it: NAME=PATH entries, a
repository folder with versions and model-settings.yaml, --model-control explicit, and
one model the old way still answering exactly as before."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from cli_process import ServerProcess, cli_env, run_cli
from fixture_backends import write_entry_point
from metrics_helpers import scrape, value

TESTS = Path(__file__).resolve().parent
X = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 2], "data": [1, 2]}]}


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    site = tmp_path / "site"
    write_entry_point(site)
    return cli_env([site, TESTS])


def model(path: Path, text: str = "fixture\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_named_models_and_a_repository_folder(tmp_path: Path, env: dict[str, str]) -> None:
    echo = model(tmp_path / "m.echo")
    repo = tmp_path / "repo"
    model(repo / "typed" / "1" / "a.types")
    model(repo / "typed" / "2" / "a.types")
    model(repo / "small" / "b.echo")
    (repo / "small" / "model-settings.yaml").write_text(
        "scoring:\n  batching:\n    max_batch_size: 3\n    max_delay_ms: 1\n"
    )
    args = [f"plain={echo}", "--repository", str(repo), "--max-batch-size", "16"]
    with ServerProcess(args, env) as server, httpx.Client(base_url=server.url, timeout=30) as c:
        assert "3 models (plain, small, typed)" in server.log_text
        assert c.get("/v2/models").json() == {"models": ["plain", "small", "typed"]}
        assert c.get("/v2/models/typed").json()["versions"] == ["1", "2"]
        info = {m["name"]: m for m in c.get("/info").json()["loaded"]}
        # the command line sets the defaults; a model's settings file changes them
        assert info["plain"]["max_batch_size"] == 16
        assert info["small"]["max_batch_size"] == 3
        assert c.post("/v2/models/small/infer", json=X).json()["outputs"][0]["data"] == [1, 2]
        typed = c.post(
            "/v2/models/typed/versions/1/infer",
            json={
                "inputs": [
                    {"name": "f", "datatype": "FP32", "shape": [1, 2], "data": [1, 2]},
                    {"name": "i", "datatype": "INT64", "shape": [1, 3], "data": [1, 2, 3]},
                    {"name": "b", "datatype": "BOOL", "shape": [1, 1], "data": [True]},
                ]
            },
        ).json()
        assert typed["model_version"] == "1"
        scored = c.post(
            "/score", params={"model": "plain", "raw": "true"}, json={"inputs": {"x": [[1, 2]]}}
        )
        assert scored.json()["outputs"]["y"] == [[1.0, 2.0]]
        assert c.post("/v2/repository/models/plain/unload").status_code == 400  # control none
        # a model without versions, asked for one: the message says to leave it out
        unversioned = c.get("/v2/models/plain/versions/1")
        assert unversioned.status_code == 404
        assert unversioned.json()["error"] == (
            "Model 'plain' has no versions (asked for '1'): leave it out."
        )
        assert "its versions are: 1, 2" in c.get("/v2/models/typed/versions/3").json()["error"]
    # each version's load line names its version: two lines "typed ready in" told nothing
    loaded = [line for line in server.log if " ready in " in line]
    assert any("typed version 1 ready in" in line for line in loaded), loaded
    assert any("typed version 2 ready in" in line for line in loaded), loaded
    assert any("small ready in" in line for line in loaded), loaded


def test_score_and_bench_pick_a_model_and_version_on_every_protocol(
    tmp_path: Path, env: dict[str, str]
) -> None:
    """As the README's client section says: --model and --model-version pick the model on
    every protocol, /score's included (as ?model=NAME&version=V), for score and bench."""
    repo = tmp_path / "repo"
    model(repo / "ver" / "1" / "a.echo")
    model(repo / "ver" / "2" / "a.echo")
    plain = model(tmp_path / "p.echo")
    tensors = tmp_path / "x.json"
    tensors.write_text('{"inputs": {"x": [[5, 5]]}}')  # y = x: two classes tied
    pick = ("--model", "ver", "--model-version", "1")
    args = [f"plain={plain}", "--repository", str(repo), "--grpc-port", "0"]
    with ServerProcess(args, env) as server, httpx.Client(base_url=server.url, timeout=30) as c:
        grpc_url = next(
            line.split("serving V2 gRPC at ")[1] for line in server.log if "V2 gRPC at" in line
        )
        for protocol, url in (("score", server.url), ("v2", server.url), ("grpc", grpc_url)):
            done = run_cli("score", url, str(tensors), "--protocol", protocol, *pick, env=env)
            assert done.returncode == 0, done.stderr
            # tied classes rank in index order on every protocol, as /score's top_k does
            first, second = done.stdout.index("1. class 0 "), done.stdout.index("2. class 1 ")
            assert first < second, done.stdout
            if protocol != "score":
                assert "model ver version 1)" in done.stdout, done.stdout
        # without --model, /score's answer names the query parameter; the command says
        # which of its own options that is
        unnamed = run_cli("score", server.url, str(tensors), env=env)
        assert unnamed.returncode == 1
        assert "name one with /score?model=NAME. Here: --model NAME." in unnamed.stderr
        bench = run_cli(
            "bench", server.url, str(tensors), *pick, "-c", "1", "-n", "3", "--json", env=env
        )
        assert bench.returncode == 0, bench.stderr
        assert '"200": 3' in bench.stdout
        samples = scrape(c)
    # the /score requests (score's one and bench's three) reached version 1, not the default
    labels = {"model": "ver", "protocol": "azureml", "status": "200"}
    assert value(samples, "scorepack_requests_total", version="1", **labels) == 4
    assert value(samples, "scorepack_requests_total", version="2", **labels) == 0


def test_explicit_model_control_from_the_command_line(tmp_path: Path, env: dict[str, str]) -> None:
    a, b = model(tmp_path / "a.echo"), model(tmp_path / "b.echo")
    args = [f"a={a}", f"b={b}", "--model-control", "explicit"]
    with ServerProcess(args, env) as server, httpx.Client(base_url=server.url, timeout=30) as c:
        assert c.post("/v2/repository/models/a/unload").status_code == 200
        assert c.get("/v2/models/a/ready").status_code == 503
        assert c.post("/v2/models/b/infer", json=X).status_code == 200
        # ready (nothing unloaded is awaited), and it names what it serves: b alone
        assert c.get("/health/ready").json() == {"status": "ready", "models": ["b"]}
        assert c.post("/v2/repository/models/a/load").status_code == 200
        assert c.post("/v2/models/a/infer", json=X).status_code == 200
        assert "model 'a' unloaded" in server.log_text


def test_load_model_loads_only_the_models_named_at_start(
    tmp_path: Path, env: dict[str, str]
) -> None:
    """As Triton's --load-model: with explicit control, only the named models load at
    start; the others are known, not loaded, and load on request."""
    a, b = model(tmp_path / "a.echo"), model(tmp_path / "b.echo")
    args = [f"a={a}", f"b={b}", "--model-control", "explicit", "--load-model", "b"]
    with ServerProcess(args, env) as server, httpx.Client(base_url=server.url, timeout=30) as c:
        index = {m["name"]: m for m in c.post("/v2/repository/index", json={}).json()}
        assert index["a"]["state"] == "UNAVAILABLE"
        assert index["a"]["reason"] == "not loaded"
        assert index["b"]["state"] == "READY"
        assert c.get("/v2/health/ready").status_code == 200
        assert c.post("/v2/models/a/infer", json=X).status_code == 503
        assert c.post("/v2/models/b/infer", json=X).status_code == 200
        assert c.post("/v2/repository/models/a/load").status_code == 200
        assert c.post("/v2/models/a/infer", json=X).status_code == 200
    # refused: without explicit control, and a name that is not a model
    wrong = run_cli("serve", f"a={a}", "--load-model", "a", env=env)
    assert wrong.returncode == 2
    assert "--load-model goes with --model-control explicit" in wrong.stderr
    unknown = run_cli(
        "serve", f"a={a}", "--model-control", "explicit", "--load-model", "c", env=env
    )
    assert unknown.returncode == 2
    assert "--load-model c: no such model; the models are a" in unknown.stderr


def test_explicit_load_reads_the_model_folder_again(tmp_path: Path, env: dict[str, str]) -> None:
    """As Triton's explicit mode: a load reads the model's folder again, so a model or a
    version added after the start is loaded by name, a version removed is unloaded, and
    changed settings apply to what loads next. A NAME=PATH model is never looked for in
    the folder."""
    import shutil

    repo = tmp_path / "repo"
    model(repo / "a" / "1" / "m.echo")
    settings = repo / "a" / "model-settings.yaml"
    settings.write_text("scoring:\n  batching:\n    max_batch_size: 3\n")
    plain = model(tmp_path / "p.echo")
    args = [f"plain={plain}", "--repository", str(repo), "--model-control", "explicit"]
    with ServerProcess(args, env) as server, httpx.Client(base_url=server.url, timeout=30) as c:

        def batch_caps() -> dict[tuple[str, str | None], int]:
            loaded = c.get("/info").json()["loaded"]
            return {(m["name"], m.get("version")): m["max_batch_size"] for m in loaded}

        # a model folder added after the start: unknown until loaded, then served
        model(repo / "b" / "m.echo")
        assert c.post("/v2/models/b/infer", json=X).status_code == 404
        assert c.post("/v2/repository/models/b/load").status_code == 200
        assert c.post("/v2/models/b/infer", json=X).status_code == 200
        assert c.get("/v2/models").json() == {"models": ["a", "b", "plain"]}
        # a version added: loaded beside the one serving, and now the default
        model(repo / "a" / "2" / "m.echo")
        assert c.post("/v2/repository/models/a/load").status_code == 200
        assert c.get("/v2/models/a").json()["versions"] == ["1", "2"]
        assert c.post("/v2/models/a/infer", json=X).json()["model_version"] == "2"
        # changed settings: the version loaded before keeps its own until it loads again
        settings.write_text("scoring:\n  batching:\n    max_batch_size: 5\n")
        assert c.post("/v2/repository/models/a/load").status_code == 200
        assert batch_caps()[("a", "1")] == 3
        assert c.post("/v2/repository/models/a/unload").status_code == 200
        assert c.post("/v2/repository/models/a/load").status_code == 200
        assert batch_caps()[("a", "1")] == 5 and batch_caps()[("a", "2")] == 5
        # a version folder removed: unloaded and forgotten at the next load
        shutil.rmtree(repo / "a" / "1")
        assert c.post("/v2/repository/models/a/load").status_code == 200
        assert c.get("/v2/models/a").json()["versions"] == ["2"]
        assert c.post("/v2/models/a/versions/1/infer", json=X).status_code == 404
        # no such folder, or a name given as NAME=PATH: not read from the folder
        assert c.post("/v2/repository/models/nope/load").status_code == 404
        model(repo / "plain" / "1" / "m.echo")
        assert c.post("/v2/repository/models/plain/load").status_code == 200
        assert c.get("/v2/models/plain").json()["versions"] == []
        index = c.post("/v2/repository/index").json()
        assert {(m["name"], m.get("version"), m["state"]) for m in index} == {
            ("a", "2", "READY"),
            ("b", None, "READY"),
            ("plain", None, "READY"),
        }
    assert "model 'a' version '1' is gone from the repository: unloaded" in server.log_text


def test_a_bad_model_in_a_repository_leaves_the_others_serving(
    tmp_path: Path, env: dict[str, str]
) -> None:
    repo = tmp_path / "repo"
    model(repo / "good" / "m.echo")
    model(repo / "broken" / "m.echo")
    (repo / "broken" / "model-settings.yaml").write_text("options:\n  load_delay: nope\n")
    server = ServerProcess(["--repository", str(repo)], env)
    try:
        url = server.wait_listening()
        with httpx.Client(base_url=url, timeout=30) as c:
            deadline_ok = _poll(
                lambda: c.get("/v2/models/broken").json().get("state") == "UNAVAILABLE"
            )
            assert deadline_ok, server.log_text
            assert _poll(lambda: c.get("/v2/models/good/ready").status_code == 200)
            assert "nope" in c.get("/v2/models/broken").json()["reason"]
            assert c.post("/v2/models/good/infer", json=X).status_code == 200
            assert c.get("/health/ready").status_code == 503
        assert "broken failed to load" in server.log_text
    finally:
        server.stop()


def _poll(condition: object, timeout: float = 60) -> bool:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if condition():  # type: ignore[operator]
                return True
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    return False


def test_one_model_the_old_way_is_unchanged(tmp_path: Path, env: dict[str, str]) -> None:
    echo = model(tmp_path / "m.echo")
    with (
        ServerProcess([str(echo)], env) as server,
        httpx.Client(base_url=server.url, timeout=30) as c,
    ):
        ready = c.get("/health/ready").json()
        assert ready == {"status": "ready", "model": "m"}
        assert c.post("/score", json={"inputs": {"x": [[1, 2]]}}).status_code == 200
        # and the same model speaks V2 under its file's name
        assert c.post("/v2/models/m/infer", json=X).status_code == 200
        # read as Prometheus reads it: the sample, not a line that merely holds the text
        samples = scrape(c)
        assert value(samples, "scorepack_model_ready", model="m") == 1


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["a=nowhere"], ["nowhere", "does not exist"]),
        (["nowhere"], ["nowhere", "does not exist"]),
        (["=x", "b=y"], ["NAME=PATH"]),
        (["a=.", "b=.", "--runtime", "azureml"], ["embedded server only"]),
        (["a=core", "a=tests"], ["model 'a' is given twice (core and tests)"]),
        ([], ["Give a model"]),
    ],
)
def test_usage_errors(args: list[str], words: list[str], env: dict[str, str]) -> None:
    result = run_cli("serve", *args, env=env)
    assert result.returncode == 2, result.stderr
    for word in words:
        assert word in result.stderr, result.stderr


# --- scoring packages as models -------------------------------------------------------


@pytest.fixture(scope="module")
def packages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The tiny ONNX image classifier packaged by ``scorepack build``, for the CPU and for
    CUDA (built here without a GPU: a package records the device it is meant for)."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from packages import package_for

    root = tmp_path_factory.getbasetemp() / "packages"
    # the CPU one is the package other tests build (package_for builds it once a session)
    return {"cpu": package_for("onnx", root), "cuda": package_for("onnx", root, device="cuda")}


def onnx_has_cuda() -> bool:
    import onnxruntime

    return "CUDAExecutionProvider" in onnxruntime.get_available_providers()


def post_image(client: httpx.Client, query: str, body: bytes) -> httpx.Response:
    """``POST /score?QUERY`` with an encoded image."""
    kind = "image/png" if body.startswith(b"\x89PNG") else "image/jpeg"
    return client.post(f"/score?{query}", content=body, headers={"content-type": kind})


def test_packages_by_name_and_in_a_repository_folder(
    tmp_path: Path, env: dict[str, str], packages: dict[str, Path]
) -> None:
    import shutil

    import numpy as np
    import onnxruntime

    from images import jpeg
    from scorepack.loading import open_package

    package = packages["cpu"]
    repo = tmp_path / "repo"
    shutil.copytree(package, repo / "packed")
    # a package's own settings, changed for this entry by its settings file
    (repo / "packed" / "model-settings.yaml").write_text("scoring:\n  postprocess: {top_k: 1}\n")
    for version in ("1", "2"):
        shutil.copytree(package, repo / "versioned" / version)
    # labels alone, for every version
    (repo / "versioned" / "labels.txt").write_text("ant\nbee\ncat\ndog\n")
    (repo / "versioned" / "model-settings.yaml").write_text("labels: labels.txt\n")
    echo = model(tmp_path / "m.echo")
    args = [f"pkg={package}", f"plain={echo}", "--repository", str(repo)]
    image = jpeg(40, 30, seed=3)
    with open_package(package) as own:
        want = own.start().score(image, raw=True)
    x = np.random.default_rng(7).random((2, 3, 8, 8), dtype=np.float32)
    session = onnxruntime.InferenceSession(str(next((package / "model").glob("*.onnx"))))
    (probs,) = session.run(None, {"image": x})
    tensor = {"inputs": [{"name": "image", "datatype": "FP32", "shape": [2, 3, 8, 8]}]}
    tensor["inputs"][0]["data"] = x.ravel().tolist()
    with ServerProcess(args, env) as server, httpx.Client(base_url=server.url, timeout=60) as c:
        assert "4 models (packed, pkg, plain, versioned)" in server.log_text
        assert c.get("/v2/models").json() == {"models": ["packed", "pkg", "plain", "versioned"]}
        # each answers under its entry's name, not the package's own (tiny)
        for name, versions in (("pkg", []), ("packed", []), ("versioned", ["1", "2"])):
            meta = c.get(f"/v2/models/{name}").json()
            assert (meta["name"], meta["versions"]) == (name, versions), meta
            assert meta["platform"] == "onnxruntime_onnx"
            assert meta["inputs"] == [{"name": "image", "datatype": "FP32", "shape": [-1, 3, 8, 8]}]
        meta = c.get("/v2/models/versioned/versions/1").json()
        assert (meta["name"], meta["versions"]) == ("versioned", ["1", "2"])
        # /score picks the model by ?model= (and ?version=); answers as the package does
        for query in ("model=pkg", "model=packed", "model=versioned", "model=versioned&version=1"):
            got = post_image(c, f"{query}&raw=true", image)
            assert got.status_code == 200, got.text
            np.testing.assert_allclose(
                got.json()["outputs"]["probs"], want["outputs"]["probs"], rtol=1e-5, atol=1e-7
            )
        top = {
            name: post_image(c, f"model={name}", image).json()["predictions"][0]["top_k"]
            for name in ("pkg", "packed")
        }
        assert len(top["pkg"]) == 4 and len(top["packed"]) == 1  # packed's settings file
        assert top["packed"][0] == top["pkg"][0]
        assert "label" not in top["pkg"][0]
        labelled = post_image(c, "model=versioned", image).json()["predictions"][0]["top_k"]
        assert [e["label"] for e in labelled] == [
            "ant bee cat dog".split()[e["index"]] for e in top["pkg"]
        ]
        # V2 REST: the tensor as onnxruntime itself computes it, from every entry
        for path, version in (
            ("/v2/models/pkg/infer", ""),
            ("/v2/models/packed/infer", ""),
            ("/v2/models/versioned/infer", "2"),  # the default version: the highest
            ("/v2/models/versioned/versions/1/infer", "1"),
        ):
            answer = c.post(path, json=tensor).json()
            assert answer["model_name"] == path.split("/")[3], answer
            assert answer.get("model_version", "") == version, answer
            (output,) = answer["outputs"]
            assert (output["name"], output["shape"]) == ("probs", [2, 4])
            np.testing.assert_allclose(
                np.reshape(output["data"], (2, 4)), probs, rtol=1e-5, atol=1e-7
            )
        # the plain model beside them
        plain = c.post("/score?model=plain&raw=true", json={"inputs": {"x": [[1, 2]]}})
        assert plain.json()["outputs"]["y"] == [[1.0, 2.0]]
        assert c.post("/v2/models/plain/infer", json=X).json()["outputs"][0]["data"] == [1, 2]


def unavailable(client: httpx.Client, name: str) -> str:
    """Wait until ``name`` is UNAVAILABLE (its load failed); its reason."""
    failed = _poll(lambda: client.get(f"/v2/models/{name}").json().get("state") == "UNAVAILABLE")
    assert failed, client.get(f"/v2/models/{name}").json()
    reason: str = client.get(f"/v2/models/{name}").json()["reason"]
    return reason


def test_a_package_with_its_model_files_elsewhere(
    tmp_path: Path, env: dict[str, str], packages: dict[str, Path]
) -> None:
    """``serve PKG --model-dir DIR``, as the README has it (a container's mounted model):
    the flag was refused by the settings object (a Path where it takes a str)."""
    import shutil

    from images import jpeg

    package = tmp_path / "pkg"
    shutil.copytree(packages["cpu"], package)
    mounted = tmp_path / "mounted"
    shutil.move(package / "model", mounted)
    with (
        ServerProcess([str(package), "--model-dir", str(mounted)], env) as server,
        httpx.Client(base_url=server.url, timeout=30) as c,
    ):
        assert post_image(c, "", jpeg(40, 30)).status_code == 200


def test_a_package_keeps_its_device_unless_serve_is_given_one(
    tmp_path: Path, env: dict[str, str], packages: dict[str, Path]
) -> None:
    if onnx_has_cuda():
        pytest.skip("checks a machine where onnxruntime has no CUDA")
    echo = model(tmp_path / "m.echo")
    args = [f"gpu={packages['cuda']}", f"plain={echo}"]
    server = ServerProcess(args, env)
    try:
        with httpx.Client(base_url=server.wait_listening(), timeout=30) as c:
            # built for CUDA: not moved to the CPU behind the user's back
            reason = unavailable(c, "gpu")
            assert "cuda:0 was requested" in reason and "can use only: cpu" in reason, reason
            assert _poll(lambda: c.get("/v2/models/plain/ready").status_code == 200)
            assert c.post("/v2/models/plain/infer", json=X).status_code == 200
            assert c.post("/v2/models/gpu/infer", json=X).status_code == 503
        assert "gpu failed to load: cuda:0 was requested" in server.log_text, server.log_text
    finally:
        server.stop()
    # --device given: every model goes there, the package too (as `serve PKG --device cpu`)
    with (
        ServerProcess([*args, "--device", "cpu"], env) as server,
        httpx.Client(base_url=server.url, timeout=30) as c,
    ):
        info = {m["name"]: m for m in c.get("/info").json()["loaded"]}
        assert info["gpu"]["backend"]["device"] == "cpu"
        from images import jpeg

        assert post_image(c, "model=gpu", jpeg(20, 20, seed=1)).status_code == 200


# --- per-model settings: device and preprocessing -------------------------------------


def test_each_model_has_its_own_device(tmp_path: Path, env: dict[str, str]) -> None:
    pytest.importorskip("onnxruntime")
    if onnx_has_cuda():
        pytest.skip("checks a machine where onnxruntime has no CUDA")
    from onnx_models import conv_classifier

    repo = tmp_path / "repo"
    for name, device in (("pinned", "cpu"), ("follows", None), ("asks", "cuda")):
        (repo / name).mkdir(parents=True)
        conv_classifier(repo / name / "model.onnx")
        if device:
            (repo / name / "model-settings.yaml").write_text(f"device: {device}\n")
    server = ServerProcess(["--repository", str(repo), "--device", "cuda"], env)
    try:
        with httpx.Client(base_url=server.wait_listening(), timeout=30) as c:
            # no GPU here: the models meant for one fail to load, saying why; the one whose
            # settings say cpu serves on the CPU whatever --device says
            for name in ("follows", "asks"):
                reason = unavailable(c, name)
                assert "cuda:0 was requested" in reason and "can use only: cpu" in reason, reason
            assert _poll(lambda: c.get("/v2/models/pinned/ready").status_code == 200)
            info = {m["name"]: m for m in c.get("/info").json()["loaded"]}
            assert info["pinned"]["backend"]["device"] == "cpu"
            tensor = {"inputs": [{"name": "image", "datatype": "FP32", "shape": [1, 3, 8, 8]}]}
            tensor["inputs"][0]["data"] = [0.5] * 192
            assert c.post("/v2/models/pinned/infer", json=tensor).status_code == 200
            assert c.get("/v2/health/ready").status_code == 503
        for name in ("follows", "asks"):
            assert f"{name} failed to load: cuda:0 was requested" in server.log_text
    finally:
        server.stop()


def test_a_device_that_is_no_device_stops_serve_naming_the_model(
    tmp_path: Path, env: dict[str, str]
) -> None:
    repo = tmp_path / "repo"
    model(repo / "good" / "m.echo")
    model(repo / "typo" / "m.echo")
    (repo / "typo" / "model-settings.yaml").write_text("device: tpu\n")
    result = run_cli("serve", "--repository", str(repo), env=env)
    assert result.returncode == 2, result.stderr
    assert "model 'typo'" in result.stderr and "'tpu'" in result.stderr, result.stderr
    assert "auto, cpu, cuda or cuda:N" in result.stderr


def identity(path: Path) -> Path:
    """An ONNX model whose output is its input: image [N, 3, H, W] float32 → pixels, so an
    answer shows exactly what preprocessing made of an image."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["image"], ["pixels"])],
        "identity",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["N", 3, "H", "W"])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def test_each_model_preprocesses_images_as_its_settings_say(
    tmp_path: Path, env: dict[str, str]
) -> None:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    import numpy as np
    from PIL import Image

    from images import encode

    repo = tmp_path / "repo"
    identity(repo / "unit" / "model.onnx")
    identity(repo / "caffe" / "model.onnx")
    # the command line's preset (unit: 0..1) for one; the other's settings replace it
    (repo / "unit" / "model-settings.yaml").write_text("scoring:\n  preprocess: {size: [4, 4]}\n")
    (repo / "caffe" / "model-settings.yaml").write_text(
        "scoring:\n  preprocess: {preset: caffe, size: [2, 6]}\n"
    )
    red, green, blue = 200, 100, 50
    # one colour (PNG: lossless), so any resize keeps it and the values can be told exactly
    solid = encode(Image.new("RGB", (10, 10), (red, green, blue)), "PNG")
    with (
        ServerProcess(["--repository", str(repo), "--preset", "unit"], env) as server,
        httpx.Client(base_url=server.url, timeout=30) as c,
    ):
        unit = np.array(post_image(c, "model=unit&raw=true", solid).json()["outputs"]["pixels"])
        caffe = np.array(post_image(c, "model=caffe&raw=true", solid).json()["outputs"]["pixels"])
        info = {m["name"]: m["preprocess"] for m in c.get("/info").json()["loaded"]}
    # unit: RGB scaled to 0..1, resized to 4x4
    assert unit.shape == (1, 3, 4, 4)
    want = np.array([red, green, blue], dtype=np.float32) / 255
    np.testing.assert_allclose(unit[0], np.broadcast_to(want[:, None, None], (3, 4, 4)), atol=1e-6)
    # caffe: BGR, ImageNet means subtracted, no scaling, resized to 2x6
    assert caffe.shape == (1, 3, 2, 6)
    want = np.array([blue - 103.939, green - 116.779, red - 123.68], dtype=np.float32)
    np.testing.assert_allclose(caffe[0], np.broadcast_to(want[:, None, None], (3, 2, 6)), atol=1e-3)
    assert (info["unit"]["size"], info["unit"]["color"]) == ([4, 4], "RGB")
    assert (info["caffe"]["size"], info["caffe"]["color"]) == ([2, 6], "BGR")
