"""Deploy target ``azureml-v2``: Azure ML SDK v2 (azure-ai-ml) Kubernetes online endpoints.

SDK v1 is past its end of support; this is the current way to serve a package from a GPU
AKS cluster through Azure ML. The cluster must already be attached to the workspace as a
Kubernetes compute. Registered as a default plugin through ``register_deploy_targets``.
"""

from __future__ import annotations

import contextlib
import io
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ..cuda import service_variables
from ..errors import DeployError
from ..generator import container
from ..generator.spec import DeploymentSettings, PackageSpec
from ..hookspecs import hookimpl
from . import azureml_v2_config as v2config
from .azureml_common import (
    DryRun,
    PackageFiles,
    WorkspaceConfig,
    base_image,
    default_dry_run_dir,
    deploy_settings,
    file_record,
    server_environment,
    service_name,
    wait_for,
)
from .base import DeployOptions, DeployResult, Progress
from .templating import render_template

__all__ = ["AzureMLV2Target", "register_deploy_targets"]

ENDPOINT_FILE = f"{v2config.DEPLOY_DIR}/endpoint.yml"
DEPLOYMENT_FILE = f"{v2config.DEPLOY_DIR}/deployment.yml"


class AzureMLV2Target:
    """Azure ML SDK v2: a Kubernetes online endpoint and one deployment taking all traffic.

    ``credential`` is an azure-core TokenCredential (None: azure-identity's
    DefaultAzureCredential); ``client_kwargs`` go to ``MLClient`` (tests pass a transport
    there); ``poll_interval_s`` is how often progress is reported while Azure works.
    """

    name = "azureml-v2"
    description = (
        "Azure ML SDK v2 (azure-ai-ml): Kubernetes online endpoint on an attached GPU AKS cluster"
    )
    #: a package of several models registers model/ as one model folder holding them all
    #: (served by azmlinfsrv; ``--runtime scorepack`` serves one model a package)
    several_models = True

    def __init__(
        self,
        credential: Any = None,
        poll_interval_s: float = 15.0,
        client_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        self.credential = credential
        self.poll_interval_s = poll_interval_s
        self.client_kwargs = dict(client_kwargs or {})

    # --- files in the package ----------------------------------------------------------

    def documents(
        self,
        spec: PackageSpec,
        settings: DeploymentSettings,
        service: str,
        runtime: str = "azmlinfsrv",
    ) -> tuple[str, str]:
        """The endpoint and deployment YAML for these settings and server runtime."""
        endpoint = v2config.to_yaml(
            v2config.endpoint_document(spec, settings, service),
            f"Azure ML SDK v2 Kubernetes online endpoint for {spec.name} (scorepack)",
        )
        if runtime == "scorepack":
            deployment = v2config.to_yaml(
                v2config.scorepack_deployment_document(spec, settings, service),
                f"Azure ML SDK v2 Kubernetes online deployment for {spec.name}: scorepack's own "
                "server as a custom container (scorepack deploy --runtime scorepack); paths "
                "are relative to this file",
            )
        else:
            deployment = v2config.to_yaml(
                v2config.deployment_document(spec, settings, service),
                f"Azure ML SDK v2 Kubernetes online deployment for {spec.name} (scorepack); "
                "paths are relative to this file",
            )
        return endpoint, deployment

    def render(self, spec: PackageSpec) -> dict[str, str]:
        """``deploy/azureml-v2/``: endpoint.yml, deployment.yml, Dockerfile and a README.

        The package's own ``.amlignore`` (written with the package) keeps model/ out of the
        code and build-context uploads; the model is uploaded once, as the model asset.
        """
        settings = spec.deployment
        name = service_name(spec, DeployOptions())
        endpoint, deployment = self.documents(spec, settings, name)
        resources = v2config.resources(spec, settings)["requests"]
        version = spec.scorepack_version or "unknown"
        files = {ENDPOINT_FILE: endpoint, DEPLOYMENT_FILE: deployment}
        if not spec.models:
            _, scorepack_deployment = self.documents(spec, settings, name, "scorepack")
            files[v2config.SCOREPACK_DEPLOYMENT] = scorepack_deployment
            files[v2config.SCOREPACK_DOCKERFILE] = container.dockerfile(spec, with_model=False)
        return files | {
            v2config.DOCKERFILE: render_template(
                "azureml_v2_Dockerfile.tmpl",
                package_name=spec.name,
                scorepack_version=version,
                base_image=base_image(spec),
            ),
            f"{v2config.DEPLOY_DIR}/README.md": render_template(
                "azureml_v2_README.md.tmpl",
                scorepack_version=version,
                package_name=spec.name,
                compute_name=settings.compute_name,
                service_name=name,
                deployment_name=v2config.DEPLOYMENT_NAME,
                instance_count=settings.replicas,
                resources=", ".join(f"{k} {v}" for k, v in resources.items()),
                max_concurrent=settings.max_concurrent_requests,
                env_summary=", ".join(
                    f"`{k}={v}`"
                    for k, v in (
                        server_environment(settings) | service_variables(spec.requirements.cuda)
                    ).items()
                ),
                base_image=base_image(spec),
                runtime_rows=_SEVERAL_ROW if spec.models else _RUNTIME_ROWS,
            ),
        }

    # --- deploy ------------------------------------------------------------------------

    def deploy(
        self, package: Path, spec: PackageSpec, options: DeployOptions, progress: Progress
    ) -> DeployResult:
        """Create the endpoint, the deployment (uploads and image build), route all traffic."""
        from . import azureml_v2_sdk as sdk

        if options.provision:
            raise DeployError(
                "--provision works with --sdk v1 only: Azure ML SDK v2 deploys to a Kubernetes "
                "cluster already attached to the workspace and does not create one. Attach your "
                "GPU AKS cluster first (https://learn.microsoft.com/azure/machine-learning/"
                "how-to-attach-kubernetes-anywhere), or use --sdk v1 --provision."
            )
        if options.runtime not in ("azmlinfsrv", "scorepack"):
            raise DeployError(f"Unknown runtime {options.runtime!r}: azmlinfsrv or scorepack.")
        custom = options.runtime == "scorepack"
        if custom and spec.models:
            raise DeployError(
                "--runtime scorepack serves one model a package; a package of several models "
                "deploys under azmlinfsrv (leave --runtime out)."
            )
        dockerfile = v2config.SCOREPACK_DOCKERFILE if custom else v2config.DOCKERFILE
        files = PackageFiles(package).check(dockerfile, ".amlignore")
        settings = deploy_settings(spec, options)
        name = service_name(spec, options)
        if (
            spec.device == "cuda"
            and v2config.resources(spec, settings)["requests"].get("nvidia.com/gpu") is None
        ):
            raise DeployError("A CUDA package needs --gpu-cores 1 or more.")
        if not settings.auth_enabled:
            progress("Note: Azure ML online endpoints always require a key; auth stays on")
        endpoint_text, deployment_text = self.documents(spec, settings, name, options.runtime)
        origin = files.root / (v2config.SCOREPACK_DEPLOYMENT if custom else DEPLOYMENT_FILE)
        sdk.import_sdk()
        endpoint = sdk.load_endpoint(endpoint_text, origin)
        deployment = sdk.load_deployment(deployment_text, origin)
        if options.dry_run:
            return self._dry_run(files, settings, options, name, endpoint, deployment, progress)

        config = WorkspaceConfig.find(options.workspace_config)
        ml_client = sdk.connect(config, self.credential, **self.client_kwargs)
        progress(
            f"Checking Kubernetes compute {settings.compute_name} "
            f"in workspace {config.workspace_name}"
        )
        sdk.kubernetes_compute(ml_client, settings.compute_name)

        progress(f"Creating endpoint {name}")
        self._wait(sdk.create_endpoint(ml_client, endpoint), f"Endpoint {name}", options, progress)
        progress(
            f"Uploading model, code and image build context; creating deployment "
            f"{deployment.name} (the image build takes a while)"
        )
        poller = sdk.create_deployment(ml_client, deployment)
        self._wait(poller, f"Deployment {deployment.name}", options, progress)
        progress(f"Sending all traffic to {deployment.name}")
        sdk.traffic_update(endpoint, {deployment.name: 100})
        self._wait(sdk.create_endpoint(ml_client, endpoint), f"Endpoint {name}", options, progress)
        keys = sdk.endpoint_keys(ml_client, name) if options.show_keys else ()
        return DeployResult(
            service_name=name,
            scoring_uri=sdk.scoring_uri(ml_client, name),
            keys_hint=keys_hint(name, config),
            keys=keys,
        )

    def _wait(self, poller: Any, what: str, options: DeployOptions, progress: Progress) -> Any:
        from . import azureml_v2_sdk as sdk

        stdout = sys.stdout

        def say(line: str) -> None:
            with contextlib.redirect_stdout(stdout):
                progress(line)

        def pause(seconds: float) -> None:
            # wait() re-raises a failed operation's error; result() below reports it
            with contextlib.suppress(Exception):
                poller.wait(timeout=seconds)

        # the SDK's poller prints a dot per poll to stdout from its own thread
        with contextlib.redirect_stdout(io.StringIO()):
            wait_for(
                lambda: (poller.done(), str(poller.status())),
                what=what,
                progress=say,
                interval_s=self.poll_interval_s,
                timeout_s=options.wait_timeout_s,
                sleep=pause,
            )
            return sdk.result(poller, what)

    def _dry_run(
        self,
        files: PackageFiles,
        settings: DeploymentSettings,
        options: DeployOptions,
        name: str,
        endpoint: Any,
        deployment: Any,
        progress: Progress,
    ) -> DeployResult:
        """Write the requests the deployment would send, built by azure-ai-ml's own entities."""
        from . import azureml_v2_sdk as sdk

        config = WorkspaceConfig.find_or_placeholder(options.workspace_config)
        out = DryRun(options.dry_run_dir or default_dry_run_dir(self.name, name))
        arm = f"https://management.azure.com{config.workspace_id}"
        location = "<workspace region>"
        out.request(
            "compute",
            "GET",
            f"{arm}/computes/{settings.compute_name}",
            note="must exist and be an attached Kubernetes compute",
        )
        with sdk.sdk_step("Serializing the endpoint"):
            body = _wire(endpoint._to_rest_online_endpoint(location))
        out.request("endpoint-create", "PUT", f"{arm}/onlineEndpoints/{name}", body)
        out.write("uploads", _uploads(files))
        with sdk.sdk_step("Serializing the deployment"):
            # the uploads above replace the local paths with asset ids
            deployment.model = f"azureml:{deployment.model.name}:<new version>"
            if deployment.code_configuration is not None:  # none for a custom container
                deployment.code_configuration.code = "<code asset id of the package upload>"
            deployment.environment = f"azureml:{deployment.environment.name}:<new version>"
            body = _wire(deployment._to_rest_object(location=location))
        out.request(
            "deployment-create",
            "PUT",
            f"{arm}/onlineEndpoints/{name}/deployments/{deployment.name}",
            body,
            note="after the uploads; Azure builds the image from the build context, then deploys",
        )
        with sdk.sdk_step("Serializing the traffic update"):
            endpoint.traffic = {deployment.name: 100}
            body = _wire(endpoint._to_rest_online_endpoint(location))
        out.request("endpoint-traffic", "PUT", f"{arm}/onlineEndpoints/{name}", body)
        return out.result(name, keys_hint(name, config), progress)

    # --- delete ------------------------------------------------------------------------

    def delete(self, spec: PackageSpec | None, options: DeployOptions, progress: Progress) -> None:
        """Delete the endpoint (and its deployments); with ``delete_compute``, detach the
        Kubernetes compute and say how to delete the cluster itself."""
        from . import azureml_v2_sdk as sdk

        name = service_name(spec, options)
        settings = deploy_settings(spec, options)
        if options.dry_run:
            config = WorkspaceConfig.find_or_placeholder(options.workspace_config)
            out = DryRun(options.dry_run_dir or default_dry_run_dir(self.name, name))
            arm = f"https://management.azure.com{config.workspace_id}"
            out.request("endpoint-delete", "DELETE", f"{arm}/onlineEndpoints/{name}")
            if options.delete_compute:
                out.request(
                    "compute-detach",
                    "DELETE",
                    f"{arm}/computes/{settings.compute_name}?underlyingResourceAction=Detach",
                )
            progress(f"Dry run: wrote {len(out.written)} files to {out.directory}")
            return
        sdk.import_sdk()
        config = WorkspaceConfig.find(options.workspace_config)
        ml_client = sdk.connect(config, self.credential, **self.client_kwargs)
        progress(f"Deleting endpoint {name} and its deployments")
        poller = sdk.delete_endpoint(ml_client, name)
        if poller is None:
            progress(f"No endpoint named {name}; nothing to delete")
        else:
            self._wait(poller, f"Deleting endpoint {name}", options, progress)
            progress(f"Deleted endpoint {name}")
        if options.delete_compute:
            progress(f"Detaching Kubernetes compute {settings.compute_name}")
            detached = sdk.detach_compute(ml_client, settings.compute_name)
            if detached is None:
                progress(f"No compute named {settings.compute_name}; nothing to detach")
                return
            poller, cluster = detached
            self._wait(poller, f"Detaching {settings.compute_name}", options, progress)
            progress(
                f"Detached {settings.compute_name}. The AKS cluster itself still runs and costs "
                f"money: delete it with `az aks delete --ids {cluster or '<cluster resource id>'}`"
            )


_RUNTIME_ROWS = """\
| `deployment-scorepack.yml` | the same deployment with scorepack's own server instead of azmlinfsrv: a custom container (`inference_config` routes: liveness `/v2/health/live`, readiness `/v2/health/ready`, scoring `/score` on port 8080), the model mounted at `/mnt/models`; `scorepack deploy PKG --runtime scorepack` |
| `scorepack.Dockerfile` | its image: the package's container image (`../../Dockerfile`) without the model, which Azure ML mounts |
"""  # noqa: E501
#: a package of several models: ``../../model`` holds every model's folder
_SEVERAL_ROW = """\
| (several models) | `../../model` is registered as one model holding every model's folder (`model/NAME/`); `score.py` serves each at `/score?model=NAME` |
"""  # noqa: E501


def _uploads(files: PackageFiles) -> dict[str, Any]:
    """What the deployment uploads: model/ as a model asset, the package root (less what
    .amlignore excludes) as the code asset and as the image's build context."""
    ignored = _ignored(files.root)
    package_files = [p for p in sorted(files.root.rglob("*")) if p.is_file() and not ignored(p)]
    return {
        "model": [file_record(p, files.root) for p in files.model_files()],
        "code_and_build_context": [file_record(p, files.root) for p in package_files],
    }


def _ignored(root: Path) -> Callable[[Path], bool]:
    # azure-ai-ml's own .amlignore reader, so the list matches what it would upload
    from azure.ai.ml._utils._asset_utils import get_ignore_file

    ignore = get_ignore_file(root)
    return lambda path: bool(ignore.is_file_excluded(path))


def _wire(rest_object: Any) -> Any:
    """A REST model as the JSON body azure-ai-ml would send (old and new model bases)."""
    if hasattr(rest_object, "serialize"):
        return rest_object.serialize()
    return rest_object.as_dict()


def keys_hint(name: str, config: WorkspaceConfig) -> str:
    """How to read an endpoint's keys, without printing them."""
    return (
        f"Keys: az ml online-endpoint get-credentials --name {name} "
        f"--resource-group {config.resource_group} --workspace-name {config.workspace_name}"
    )


@hookimpl
def register_deploy_targets(register: Callable[[Any], None]) -> None:
    register(AzureMLV2Target())
