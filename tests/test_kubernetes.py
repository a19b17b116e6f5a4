"""The ``kubernetes`` and ``kserve`` deploy targets.

Their files are checked against golden files and validated against the upstream schemas
(Kubernetes' through kubernetes-validate, strict; KServe's CRDs from ../shared/schemas/kserve).
Deployments run through the real ``kubernetes`` client, configured by a kubeconfig, over
HTTP to a loopback server answering from recorded responses (tests/kube_http.py): the tests
check the requests it really sends. No cluster is involved anywhere.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from deploy_packages import make_package, make_spec
from kube_http import TOKEN, RecordedKubernetes
from manifest_schemas import validate, validate_builtin, validate_kserve
from packages import sample_spec
from scorepack.errors import DeployError
from scorepack.generator.container import render_container
from scorepack.hookspecs import hookimpl
from scorepack.plugins import make_plugin_manager, set_plugin_manager
from scorepack.targets import DeployOptions, DeployTarget
from scorepack.targets import kubernetes_manifests as km
from scorepack.targets.kserve import KServeTarget
from scorepack.targets.kubernetes import KubernetesTarget

pytest.importorskip("kubernetes")

GOLDEN = Path(__file__).parent / "golden" / "deploy-targets"
NAME = "resnet50-demo"
IMAGE = "registry.example.com/vision/resnet50-demo:1.0"


def gpu_spec() -> Any:
    """The GPU TensorFlow package of the deploy tests, with a measured load time."""
    return make_spec(load_seconds=30.0)


def cpu_spec() -> Any:
    return sample_spec()


CASES = {"gpu": gpu_spec, "cpu": cpu_spec}


def _targets() -> tuple[KubernetesTarget, KServeTarget]:
    return KubernetesTarget(poll_interval_s=0), KServeTarget(poll_interval_s=0)


def _documents(files: dict[str, str]) -> dict[str, dict[str, Any]]:
    return {path: yaml.safe_load(text) for path, text in files.items() if path.endswith(".yaml")}


@pytest.fixture
def package(tmp_path: Path) -> Path:
    spec = gpu_spec()
    root = make_package(tmp_path / NAME, spec)
    for path, text in render_container(spec).items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text)
    return root


# --- registration and files ------------------------------------------------------------


def test_targets_are_default_plugins() -> None:
    targets = set_plugin_manager(make_plugin_manager(entry_points=False)).deploy_targets
    for name in ("kubernetes", "kserve"):
        assert isinstance(targets[name], DeployTarget)


@pytest.mark.parametrize("case", sorted(CASES))
def test_render_matches_the_golden_files(case: str) -> None:
    files: dict[str, str] = {}
    for target in _targets():
        files.update(target.render(CASES[case]()))
    folder = GOLDEN / case
    if os.environ.get("SCOREPACK_UPDATE_GOLDEN"):
        for path, text in files.items():
            (folder / path).parent.mkdir(parents=True, exist_ok=True)
            (folder / path).write_text(text, encoding="utf-8")
    golden = {
        p.relative_to(folder).as_posix(): p.read_text("utf-8")
        for p in folder.rglob("*")
        if p.is_file()
    }
    assert sorted(files) == sorted(golden)
    for path, text in files.items():
        if text != golden[path]:
            diff = "\n".join(
                difflib.unified_diff(golden[path].splitlines(), text.splitlines(), lineterm="")
            )
            pytest.fail(f"{case}/{path} differs from the golden file:\n{diff}")


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_manifest_validates_against_the_upstream_schemas(case: str) -> None:
    files: dict[str, str] = {}
    for target in _targets():
        files.update(target.render(CASES[case]()))
    documents = _documents(files)
    kinds = set()
    for path, document in documents.items():
        if document["kind"] == "Kustomization":
            # every resource it lists is there, and its image is the one the manifests use
            folder = path.rsplit("/", 1)[0]
            listed = {f"{folder}/{name}" for name in document["resources"]}
            assert listed == {p for p in documents if p.startswith(folder)} - {path}
            images = {
                c["image"].rsplit(":", 1)[0] for p in listed for c in _containers(documents[p])
            }
            assert images == {document["images"][0]["name"]}
            continue
        validate(document)
        kinds.add(document["kind"])
    assert kinds == {
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
        "ServingRuntime",
        "InferenceService",
    }


def _containers(document: dict[str, Any]) -> list[dict[str, Any]]:
    spec = document["spec"]
    if "template" in spec:
        return list(spec["template"]["spec"]["containers"])
    if "containers" in spec:
        return list(spec["containers"])
    return []


def test_the_validators_are_strict() -> None:
    spec = gpu_spec()
    settings = km.kube_settings(spec, DeployOptions())
    deployment = km.deployment(spec, settings)
    deployment["spec"]["template"]["spec"]["containers"][0]["livenessProbes"] = {}
    with pytest.raises(Exception, match="livenessProbes"):
        validate_builtin(deployment)
    from scorepack.targets.kserve import inference_service

    isvc = inference_service(spec, settings)
    isvc["spec"]["predictor"]["model"]["protocolVersions"] = ["v2"]
    with pytest.raises(Exception, match="protocolVersions"):
        validate_kserve(isvc)


def test_gpu_pods_get_gpus_gpu_nodes_and_probes_sized_from_the_load_time() -> None:
    spec = gpu_spec()  # the model took 30 s to load at build: 4 x 30 + 60 = 180 s to start
    files = _documents(KubernetesTarget().render(spec))
    pod = files["deploy/kubernetes/deployment.yaml"]["spec"]["template"]
    container = pod["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert pod["spec"]["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["spec"][
        "tolerations"
    ]
    assert container["startupProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert (
        container["startupProbe"]["periodSeconds"] * container["startupProbe"]["failureThreshold"]
        == 180
    )
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert pod["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    # the HPA scales on requests in flight per pod, one full batch as the target; no CPU
    hpa = files["deploy/kubernetes/hpa.yaml"]["spec"]
    assert [m["type"] for m in hpa["metrics"]] == ["Pods"]
    assert hpa["metrics"][0]["pods"]["metric"]["name"] == km.INFLIGHT_METRIC
    assert hpa["metrics"][0]["pods"]["target"]["averageValue"] == str(
        spec.config.batching.max_batch_size
    )
    service = files["deploy/kubernetes/service.yaml"]["spec"]
    assert [(p["name"], p["port"]) for p in service["ports"]] == [("http", 8080), ("grpc", 8081)]
    # KServe: V2, port 8080, the model at /mnt/models, concurrency scaling from the batch size
    kserve = _documents(KServeTarget().render(spec))
    runtime = kserve["deploy/kserve/servingruntime.yaml"]["spec"]
    assert runtime["protocolVersions"] == ["v2"]
    assert runtime["containers"][0]["ports"][0]["containerPort"] == 8080
    assert {"name": "SCOREPACK_MODEL_DIR", "value": "/mnt/models"} in runtime["containers"][0][
        "env"
    ]
    assert runtime["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    predictor = kserve["deploy/kserve/inferenceservice.yaml"]["spec"]["predictor"]
    assert predictor["model"]["protocolVersion"] == "v2"
    assert (predictor["scaleMetric"], predictor["scaleTarget"]) == (
        "concurrency",
        spec.config.batching.max_batch_size,
    )


def test_cpu_pods_ask_for_no_gpu() -> None:
    files = _documents(KubernetesTarget().render(cpu_spec()))
    pod = files["deploy/kubernetes/deployment.yaml"]["spec"]["template"]["spec"]
    assert "nvidia.com/gpu" not in pod["containers"][0]["resources"]["limits"]
    assert "nodeSelector" not in pod and "tolerations" not in pod


def _slow_spec() -> Any:
    """The GPU package with a 2-minute request timeout."""
    spec = gpu_spec()
    batching = replace(spec.config.batching, timeout_ms=120_000)
    return replace(spec, config=replace(spec.config, batching=batching))


@pytest.mark.parametrize("make", [gpu_spec, cpu_spec, _slow_spec], ids=["gpu", "cpu", "slow"])
def test_pods_drain_before_they_stop_and_get_time_to_finish(make: Any) -> None:
    from scorepack.server.limits import HttpLimits

    spec = make()
    request_s = spec.config.batching.timeout_ms / 1000
    files = _documents(KubernetesTarget().render(spec))
    pod = files["deploy/kubernetes/deployment.yaml"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"]}
    # the variable the server reads, with a value it takes
    drain = HttpLimits.from_env(env).drain_s
    assert drain == km.DRAIN_S > 0
    # readiness fails (and whatever routes by it stops sending) well inside the drain
    ready = container["readinessProbe"]
    assert ready["httpGet"]["path"] == "/v2/health/ready"
    assert ready["periodSeconds"] * ready["failureThreshold"] + ready["timeoutSeconds"] < drain
    # the pod is not killed before the preStop pause, the drain and the slowest request
    pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pod["terminationGracePeriodSeconds"] >= pre_stop + drain + request_s + 10
    # KServe: the same drain and readiness; Knative makes the revision timeout the pods'
    # grace period (its webhook refuses terminationGracePeriodSeconds itself)
    kserve = _documents(KServeTarget().render(spec))
    runtime = kserve["deploy/kserve/servingruntime.yaml"]["spec"]["containers"][0]
    assert {"name": "SCOREPACK_DRAIN_SECONDS", "value": str(km.DRAIN_S)} in runtime["env"]
    assert runtime["readinessProbe"] == {**ready, "httpGet": runtime["readinessProbe"]["httpGet"]}
    predictor = kserve["deploy/kserve/inferenceservice.yaml"]["spec"]["predictor"]
    assert "terminationGracePeriodSeconds" not in predictor
    assert predictor["timeout"] == pod["terminationGracePeriodSeconds"]
    assert predictor["timeout"] >= drain + request_s + 10


def test_settings_from_the_command_line_are_checked() -> None:
    spec = gpu_spec()
    with pytest.raises(DeployError, match="valid Kubernetes name"):
        km.kube_settings(spec, DeployOptions(service_name="Not_A_Name"))
    with pytest.raises(DeployError, match="max_replicas"):
        km.kube_settings(spec, DeployOptions(overrides={"replicas": 3, "max_replicas": 2}))
    with pytest.raises(DeployError, match="gpu-cores 1"):
        km.kube_settings(spec, DeployOptions(overrides={"gpu_cores": 0}))
    settings = km.kube_settings(spec, DeployOptions(overrides={"replicas": 2}))
    assert (settings.replicas, settings.max_replicas) == (2, 8)


# --- deploying, against the recorded API server ----------------------------------------


def _deploy(target: Any, package: Path, **options: Any) -> tuple[Any, list[str]]:
    progress: list[str] = []
    result = target.deploy(package, gpu_spec(), DeployOptions(**options), progress.append)
    return result, progress


def test_deploy_creates_every_object_and_waits_for_the_rollout(
    tmp_path: Path, package: Path
) -> None:
    with RecordedKubernetes(("k8s_new",)) as api:
        kubeconfig = api.kubeconfig(tmp_path / "kubeconfig")
        result, progress = _deploy(
            KubernetesTarget(poll_interval_s=0),
            package,
            kubeconfig=kubeconfig,
            context="recorded",
            namespace="scoring",
            image=IMAGE,
        )
    assert api.unmatched == []
    assert all(r.headers["authorization"] == f"Bearer {TOKEN}" for r in api.requests)
    created = [r for r in api.requests if r.method == "POST"]
    assert [r.path for r in created] == [
        "/apis/apps/v1/namespaces/scoring/deployments",
        "/api/v1/namespaces/scoring/services",
        "/apis/policy/v1/namespaces/scoring/poddisruptionbudgets",
        "/apis/autoscaling/v2/namespaces/scoring/horizontalpodautoscalers",
    ]
    # what was sent is the rendered manifests, with the image and namespace of this deploy
    settings = km.kube_settings(gpu_spec(), DeployOptions(image=IMAGE, namespace="scoring"))
    assert [r.json() for r in created] == km.manifests(gpu_spec(), settings)
    for request in created:
        validate(request.json())
    assert created[0].json()["spec"]["template"]["spec"]["containers"][0]["image"] == IMAGE
    # the rollout was followed until every replica was available
    assert len(api.find("GET", r".*/deployments/resnet50-demo")) == 3
    assert any("0/1 available" in line for line in progress)
    # while it waits, it says why: here no node had a free GPU
    pods = api.find("GET", r"/api/v1/namespaces/scoring/pods")
    assert pods[0].query["labelSelector"] == [
        "app.kubernetes.io/name=resnet50-demo,app.kubernetes.io/instance=resnet50-demo"
    ]
    assert any(
        "Unschedulable: 0/3 nodes are available: 3 Insufficient nvidia.com/gpu" in line
        for line in progress
    )
    assert any("1/1 available" in line for line in progress)
    assert result.scoring_uri == "http://resnet50-demo.scoring.svc.cluster.local:8080/score"
    assert "kubectl port-forward -n scoring svc/resnet50-demo 8080:8080" in result.keys_hint
    assert not result.key_auth


def test_deploy_patches_what_exists_and_waits_for_old_pods(tmp_path: Path, package: Path) -> None:
    with RecordedKubernetes(("k8s_existing",)) as api:
        # the namespace comes from the context when --namespace is not given
        kubeconfig = api.kubeconfig(tmp_path / "kubeconfig", namespace="team-a")
        _, progress = _deploy(
            KubernetesTarget(poll_interval_s=0),
            package,
            kubeconfig=kubeconfig,
            context="recorded",
            image=IMAGE,
        )
    assert api.unmatched == []
    patches = [r for r in api.requests if r.method == "PATCH"]
    assert len(patches) == 4 and not [r for r in api.requests if r.method == "POST"]
    assert all(r.path.startswith(("/apis/", "/api/")) and "/team-a/" in r.path for r in patches)
    assert patches[0].headers["content-type"] == "application/strategic-merge-patch+json"
    assert any("Deployment team-a/resnet50-demo configured" in line for line in progress)
    assert any("1 old pods terminating" in line for line in progress)


def test_a_stalled_rollout_is_an_error_that_says_why(tmp_path: Path, package: Path) -> None:
    recordings = ("k8s_stalled", "k8s_new")  # the stalled Deployment route comes first
    with RecordedKubernetes(recordings) as api:
        kubeconfig = api.kubeconfig(tmp_path / "kubeconfig")
        with pytest.raises(DeployError, match=r"stalled.*timed out progressing"):
            _deploy(
                KubernetesTarget(poll_interval_s=0),
                package,
                kubeconfig=kubeconfig,
                context="recorded",
                image=IMAGE,
            )


def test_an_unknown_context_and_a_missing_image_are_errors(tmp_path: Path, package: Path) -> None:
    with RecordedKubernetes(("k8s_new",)) as api:
        kubeconfig = api.kubeconfig(tmp_path / "kubeconfig")
        with pytest.raises(DeployError, match="context nowhere"):
            _deploy(
                KubernetesTarget(), package, kubeconfig=kubeconfig, context="nowhere", image=IMAGE
            )
        with pytest.raises(DeployError, match="--image"):
            _deploy(KubernetesTarget(), package, kubeconfig=kubeconfig, context="recorded")
        with pytest.raises(DeployError, match="--storage-uri"):
            _deploy(KServeTarget(), package, kubeconfig=kubeconfig, context="recorded", image=IMAGE)
    assert api.requests == []


def test_kserve_deploy_creates_the_runtime_then_the_service_and_waits_until_ready(
    tmp_path: Path, package: Path
) -> None:
    with RecordedKubernetes(("kserve_new",)) as api:
        kubeconfig = api.kubeconfig(tmp_path / "kubeconfig")
        result, progress = _deploy(
            KServeTarget(poll_interval_s=0),
            package,
            kubeconfig=kubeconfig,
            context="recorded",
            namespace="models",
            image=IMAGE,
            storage_uri="s3://models/resnet50-demo/model",
        )
    assert api.unmatched == []
    created = [r for r in api.requests if r.method == "POST"]
    assert [r.path for r in created] == [
        "/apis/serving.kserve.io/v1alpha1/namespaces/models/servingruntimes",
        "/apis/serving.kserve.io/v1beta1/namespaces/models/inferenceservices",
    ]
    runtime, isvc = (r.json() for r in created)
    for document in (runtime, isvc):
        validate(document)
    assert isvc["spec"]["predictor"]["model"]["runtime"] == runtime["metadata"]["name"]
    assert isvc["spec"]["predictor"]["model"]["storageUri"] == "s3://models/resnet50-demo/model"
    assert runtime["spec"]["containers"][0]["image"] == IMAGE
    assert any("RevisionMissing" in line for line in progress)
    assert result.scoring_uri == (
        "http://resnet50-demo.models.example.com/v2/models/resnet50-demo/infer"
    )


def test_delete_removes_what_deploy_made(tmp_path: Path) -> None:
    with RecordedKubernetes(("k8s_delete",)) as api:
        kubeconfig = api.kubeconfig(tmp_path / "kubeconfig")
        progress: list[str] = []
        options = DeployOptions(kubeconfig=kubeconfig, context="recorded", namespace="scoring")
        KubernetesTarget().delete(gpu_spec(), options, progress.append)
        KServeTarget().delete(gpu_spec(), options, progress.append)
    assert api.unmatched == []
    assert [(r.method, r.path.rsplit("/", 2)[-2]) for r in api.requests] == [
        ("DELETE", "horizontalpodautoscalers"),
        ("DELETE", "poddisruptionbudgets"),
        ("DELETE", "services"),
        ("DELETE", "deployments"),
        ("DELETE", "inferenceservices"),
        ("DELETE", "servingruntimes"),
    ]
    assert all(r.json()["propagationPolicy"] == "Foreground" for r in api.requests)
    assert "No PodDisruptionBudget scoring/resnet50-demo; nothing to delete" in progress


# --- the command line ------------------------------------------------------------------


class _FastTargets:
    """The two targets without waits between polls."""

    @hookimpl
    def register_deploy_targets(self, register: Any) -> None:
        for target in _targets():
            register(target)


@pytest.fixture
def cli() -> Any:
    from scorepack.cli import build_cli

    pm = make_plugin_manager(entry_points=False, defaults=False)
    pm.register(_FastTargets(), name="fast-kubernetes")
    set_plugin_manager(pm)
    return build_cli()


def test_cli_deploy_and_delete(cli: Any, tmp_path: Path, package: Path) -> None:
    with RecordedKubernetes(("k8s_new", "k8s_delete")) as api:
        kubeconfig = str(api.kubeconfig(tmp_path / "kubeconfig"))
        runner = CliRunner()
        common = ["--kubeconfig", kubeconfig, "--context", "recorded", "--namespace", "scoring"]
        deployed = runner.invoke(
            cli,
            ["deploy", str(package), "--target", "kubernetes", *common, "--image", IMAGE],
        )
        deleted = runner.invoke(
            cli, ["delete", str(package), "--target", "kubernetes", *common, "--yes"]
        )
    assert deployed.exit_code == 0, deployed.output
    assert "Scoring URI: http://resnet50-demo.scoring.svc.cluster.local:8080/score" in (
        deployed.stdout
    )
    assert "kubectl port-forward" in deployed.stdout
    assert "Authorization" not in deployed.stdout  # no keys on a plain Kubernetes service
    assert "Rollout of resnet50-demo" in deployed.stderr
    assert deleted.exit_code == 0, deleted.output
    assert len(api.find("DELETE", r".*")) == 4
    assert api.unmatched == []


def test_cli_dry_run_writes_the_manifests_and_touches_nothing(
    cli: Any, tmp_path: Path, package: Path
) -> None:
    with RecordedKubernetes(()) as api:
        kubeconfig = str(api.kubeconfig(tmp_path / "kubeconfig"))
        out = tmp_path / "dry"
        out.mkdir()
        # an earlier dry run's manifest (a kubernetes target's) must not read as this one's
        (out / "03-poddisruptionbudget-resnet50-demo.yaml").write_text("kind: Old\n")
        result = CliRunner().invoke(
            cli,
            [
                "deploy",
                str(package),
                "--target",
                "kserve",
                "--kubeconfig",
                kubeconfig,
                "--context",
                "recorded",
                "--dry-run",
                "--dry-run-dir",
                str(out),
            ],
        )
    assert result.exit_code == 0, result.output
    assert api.requests == []
    written = sorted(p.name for p in out.iterdir())
    assert written == [
        "01-servingruntime-scorepack-resnet50-demo.yaml",
        "02-inferenceservice-resnet50-demo.yaml",
    ]
    for path in out.iterdir():
        validate(yaml.safe_load(path.read_text()))
    assert str(out / written[0]) in result.stdout
    # without --image the manifests name the image as the package's build would tag it
    runtime = yaml.safe_load((out / written[0]).read_text())
    assert runtime["spec"]["containers"][0]["image"] == "scorepack-resnet50-demo:0.1.0"


def test_cli_errors_are_exit_messages(cli: Any, tmp_path: Path, package: Path) -> None:
    missing = CliRunner().invoke(
        cli,
        ["deploy", str(package), "--target", "kubernetes", "--kubeconfig", str(tmp_path / "no")],
    )
    assert missing.exit_code == 1
    assert "--image" in missing.output
    broken = CliRunner().invoke(
        cli,
        [
            "deploy",
            str(package),
            "--target",
            "kubernetes",
            "--kubeconfig",
            str(tmp_path / "no"),
            "--image",
            IMAGE,
        ],
    )
    assert broken.exit_code == 1
    assert "kubeconfig" in broken.output and "Traceback" not in broken.output


def test_package_files_name_the_same_image_the_kustomization_rewrites() -> None:
    spec = replace(gpu_spec(), scorepack_version="0.2.0")
    files = _documents(KubernetesTarget().render(spec))
    kustomization = files["deploy/kubernetes/kustomization.yaml"]
    assert kustomization["images"] == [
        {"name": "scorepack-resnet50-demo", "newName": "scorepack-resnet50-demo", "newTag": "0.2.0"}
    ]
