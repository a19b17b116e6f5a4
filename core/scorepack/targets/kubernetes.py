"""Deploy target ``kubernetes``: the package's image on any Kubernetes cluster, with plain
manifests (Deployment, Service, PodDisruptionBudget, HorizontalPodAutoscaler).

The package carries the manifests in ``deploy/kubernetes/`` with a ``kustomization.yaml``
(``kubectl apply -k``); ``scorepack deploy --target kubernetes`` sends the same documents
through the official ``kubernetes`` client, waits for the rollout and says how to reach the
service. Registered as a default plugin through ``register_deploy_targets``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..errors import DeployError
from ..generator.container import GRPC_PORT, HTTP_PORT, READY_PATH
from ..generator.spec import PackageSpec
from ..hookspecs import hookimpl
from . import kubernetes_manifests as km
from .azureml_common import PackageFiles, default_dry_run_dir, fresh_dry_run_dir, wait_for
from .base import DeployOptions, DeployResult, Progress

__all__ = [
    "KubernetesTarget",
    "apply_all",
    "check_image",
    "dry_run",
    "register_deploy_targets",
]

DEPLOY_DIR = "deploy/kubernetes"
#: file name of each kind in deploy/kubernetes/
FILES = {
    "Deployment": "deployment.yaml",
    "Service": "service.yaml",
    "PodDisruptionBudget": "pdb.yaml",
    "HorizontalPodAutoscaler": "hpa.yaml",
}


def kustomization(files: Sequence[str], image: str, tag: str) -> str:
    """``kustomization.yaml``: the resources, and the image to point at your registry."""
    return km.to_yaml(
        {
            "apiVersion": "kustomize.config.k8s.io/v1beta1",
            "kind": "Kustomization",
            "resources": list(files),
            "images": [{"name": image, "newName": image, "newTag": tag}],
        },
        "kubectl apply -k . — set images[0].newName (and newTag) to where you pushed the image "
        "(`kustomize edit set image`), and add `namespace:` to deploy elsewhere than the "
        "current namespace",
    )


def check_image(options: DeployOptions) -> None:
    """A real deployment needs the image's place in a registry; a dry run does not."""
    if not options.image and not options.dry_run:
        raise DeployError(
            "Say where the image is: build and push it from the package directory "
            "(docker build -t REGISTRY/NAME:TAG PKG && docker push REGISTRY/NAME:TAG), then "
            "pass --image REGISTRY/NAME:TAG."
        )


def dry_run(
    target: str,
    name: str,
    documents: Sequence[dict[str, Any]],
    options: DeployOptions,
    progress: Progress,
) -> DeployResult:
    """``--dry-run``: each manifest as ``NN-kind-name.yaml`` in ``--dry-run-dir`` (or the
    target's default folder), exactly what would be applied, in order; nothing applied."""
    directory = options.dry_run_dir or default_dry_run_dir(target, name)
    fresh_dry_run_dir(directory)
    written = []
    for number, document in enumerate(documents, 1):
        kind, doc_name = document["kind"].lower(), document["metadata"]["name"]
        path = directory / f"{number:02d}-{kind}-{doc_name}.yaml"
        path.write_text(km.to_yaml(document), encoding="utf-8")
        written.append(path)
    progress(f"Dry run: wrote {len(written)} manifests to {directory}")
    return DeployResult(
        service_name=name,
        scoring_uri=None,
        keys_hint="",
        dry_run=True,
        written=tuple(written),
        key_auth=False,
    )


def apply_all(cluster: Any, documents: Sequence[dict[str, Any]], progress: Progress) -> None:
    """Create or patch every object, in order, saying what happened to each."""
    for document in documents:
        kind, name = document["kind"], document["metadata"]["name"]
        what = cluster.apply(document)
        progress(f"{kind} {cluster.namespace}/{name} {what}")


class KubernetesTarget:
    """Plain Kubernetes: the package's image as a Deployment behind a Service.

    ``cluster_factory`` makes the :class:`~scorepack.targets.kube_client.Cluster` (tests
    point it at a recorded API server through a kubeconfig like any user);
    ``poll_interval_s`` is how often the rollout is checked.
    """

    name = "kubernetes"
    description = (
        "Kubernetes: Deployment, Service, PodDisruptionBudget and an HPA on requests in flight"
    )

    def __init__(self, poll_interval_s: float = 5.0, sleep: Callable[[float], None] = time.sleep):
        self.poll_interval_s = poll_interval_s
        self.sleep = sleep

    # --- files in the package ----------------------------------------------------------

    def render(self, spec: PackageSpec) -> dict[str, str]:
        """``deploy/kubernetes/``: one file per object and a kustomization.yaml."""
        settings = km.kube_settings(spec, DeployOptions())
        files: dict[str, str] = {}
        for document in km.manifests(spec, settings):
            kind = document["kind"]
            files[f"{DEPLOY_DIR}/{FILES[kind]}"] = km.to_yaml(
                document, f"{kind} of the scorepack package {spec.name} (kubectl apply -k .)"
            )
        image, _, tag = settings.image.rpartition(":")
        files[f"{DEPLOY_DIR}/kustomization.yaml"] = kustomization(list(FILES.values()), image, tag)
        return files

    # --- deploy ------------------------------------------------------------------------

    def documents(self, spec: PackageSpec, options: DeployOptions) -> list[dict[str, Any]]:
        """The objects a deployment applies, with the command line's settings."""
        return km.manifests(spec, km.kube_settings(spec, options))

    def deploy(
        self, package: Path, spec: PackageSpec, options: DeployOptions, progress: Progress
    ) -> DeployResult:
        """Apply the objects, wait for the rollout, say how to reach the service."""
        PackageFiles(package).check("Dockerfile")
        check_image(options)
        settings = km.kube_settings(spec, options)
        if options.dry_run:
            return dry_run(
                self.name, settings.name, km.manifests(spec, settings), options, progress
            )
        from .kube_client import Cluster

        cluster = Cluster(options.kubeconfig, options.context, options.namespace)
        progress(
            f"Applying to namespace {cluster.namespace} "
            f"(context {cluster.context}, {cluster.server})"
        )
        documents = km.manifests(spec, settings)
        for document in documents:
            document["metadata"].setdefault("namespace", cluster.namespace)
        apply_all(cluster, documents, progress)
        self._wait_rollout(cluster, settings.name, options, progress)
        host = f"{settings.name}.{cluster.namespace}.svc.cluster.local"
        return DeployResult(
            service_name=settings.name,
            scoring_uri=f"http://{host}:{HTTP_PORT}/score",
            keys_hint=reach_hint(settings.name, cluster.namespace, host),
            key_auth=False,
        )

    def _wait_rollout(
        self, cluster: Any, name: str, options: DeployOptions, progress: Progress
    ) -> None:
        """Until every replica runs the new pod template and is ready (kubectl rollout status)."""

        def poll() -> tuple[bool, str]:
            current = cluster.get("Deployment", name)
            if current is None:
                raise DeployError(f"Deployment {cluster.namespace}/{name} disappeared.")
            done, state = rollout_state(current)
            if not done:
                reasons = pod_problems(cluster.pods(km.pod_selector(name)))
                if reasons:
                    state += "; " + "; ".join(reasons)
            return done, state

        wait_for(
            poll,
            what=f"Rollout of {name}",
            progress=progress,
            interval_s=self.poll_interval_s,
            timeout_s=options.wait_timeout_s,
            sleep=self.sleep,
        )

    # --- delete ------------------------------------------------------------------------

    def delete(self, spec: PackageSpec | None, options: DeployOptions, progress: Progress) -> None:
        """Delete the objects deploy made (the HPA first, so it cannot scale back up)."""
        name = km.kube_name(spec, options.service_name)
        delete_all(self.name, [(kind, name) for kind in reversed(FILES)], options, progress)


def delete_all(
    target: str, objects: Sequence[tuple[str, str]], options: DeployOptions, progress: Progress
) -> None:
    """Delete objects by kind and name; a dry run lists them."""
    if options.dry_run:
        for kind, name in objects:
            progress(f"Dry run: would delete {kind} {name}")
        return
    from .kube_client import Cluster

    cluster = Cluster(options.kubeconfig, options.context, options.namespace)
    for kind, name in objects:
        if cluster.delete(kind, name):
            progress(f"Deleted {kind} {cluster.namespace}/{name}")
        else:
            progress(f"No {kind} {cluster.namespace}/{name}; nothing to delete")


def rollout_state(deployment: dict[str, Any]) -> tuple[bool, str]:
    """(done, state) of a Deployment's rollout, as ``kubectl rollout status`` judges it."""
    meta, spec, status = (deployment.get(k) or {} for k in ("metadata", "spec", "status"))
    wanted = int(spec.get("replicas", 1))
    updated = int(status.get("updatedReplicas") or 0)
    available = int(status.get("availableReplicas") or 0)
    total = int(status.get("replicas") or 0)
    for condition in status.get("conditions") or ():
        if condition.get("type") == "Progressing" and condition.get("reason") == (
            "ProgressDeadlineExceeded"
        ):
            raise DeployError(
                f"The rollout of {meta.get('name')} stalled: {condition.get('message')}. "
                "`kubectl describe pods -l app.kubernetes.io/name=NAME` says why (often: no node "
                "with a free GPU, or the image cannot be pulled)."
            )
    if int(status.get("observedGeneration") or 0) < int(meta.get("generation") or 0):
        return False, "waiting for the new spec to be observed"
    state = f"{updated}/{wanted} updated, {available}/{wanted} available"
    if total > updated:
        state += f", {total - updated} old pods terminating"
    return updated >= wanted and available >= wanted and total <= updated, state


def pod_problems(pods: Sequence[dict[str, Any]]) -> list[str]:
    """Why pods are not ready yet, in kubectl's words: unschedulable (no free GPU), an image
    that cannot be pulled, a container that keeps crashing."""
    problems: set[str] = set()
    for pod in pods:
        status = pod.get("status") or {}
        for condition in status.get("conditions") or ():
            if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
                problems.add(f"{condition.get('reason')}: {condition.get('message')}")
        for container in status.get("containerStatuses") or ():
            waiting = (container.get("state") or {}).get("waiting") or {}
            if waiting.get("reason") not in (None, "ContainerCreating", "PodInitializing"):
                problems.add(f"{waiting.get('reason')}: {waiting.get('message') or ''}".strip())
    return sorted(problems)


def reach_hint(name: str, namespace: str, host: str) -> str:
    """How to reach a ClusterIP service from inside and outside the cluster."""
    return (
        f"Inside the cluster: http://{host}:{HTTP_PORT} (gRPC: {host}:{GRPC_PORT}).\n"
        f"From here: kubectl port-forward -n {namespace} svc/{name} {HTTP_PORT}:{HTTP_PORT} "
        f"{GRPC_PORT}:{GRPC_PORT}, then curl http://127.0.0.1:{HTTP_PORT}{READY_PATH} and "
        f"scorepack score http://127.0.0.1:{HTTP_PORT} IMAGE.\n"
        "For outside traffic, put an Ingress or a LoadBalancer Service in front of it."
    )


@hookimpl
def register_deploy_targets(register: Callable[[Any], None]) -> None:
    register(KubernetesTarget())
