"""Deploy target ``azureml-v1``: Azure ML SDK v1 (azureml-core 1.61) onto a GPU AKS cluster.

The article's recipe, with the parts it gets wrong today fixed: an Environment on a CUDA
base image instead of ``gpu_enabled``, a current GPU VM size instead of the retired
Standard_NC6, and ``replica_max_concurrent_requests`` above 1 so batching can work.
Registered as a default plugin through ``register_deploy_targets``.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import DeployError
from ..generator.spec import PackageSpec
from ..hookspecs import hookimpl
from . import azureml_v1_config as v1config
from .azureml_common import (
    DryRun,
    PackageFiles,
    WorkspaceConfig,
    base_image,
    default_dry_run_dir,
    deploy_settings,
    file_record,
    service_name,
    wait_for,
)
from .base import DeployOptions, DeployResult, Progress
from .templating import render_template

__all__ = ["AzureMLV1Target", "register_deploy_targets"]

DEPLOY_DIR = "deploy/azureml-v1"


class AzureMLV1Target:
    """Azure ML SDK v1: ``Model.register``, an ``Environment`` on a CUDA image,
    ``InferenceConfig``, ``AksWebservice.deploy_configuration``, ``Model.deploy``.

    ``auth`` is an azureml-core authentication object (None: the SDK's default, the Azure
    CLI login then an interactive one); ``poll_interval_s`` is how often to check progress.
    """

    name = "azureml-v1"
    description = "Azure ML SDK v1 (azureml-core): AKS web service on a GPU cluster"
    #: a package of several models registers each of them and deploys them together
    several_models = True

    def __init__(self, auth: Any = None, poll_interval_s: float = 15.0) -> None:
        self.auth = auth
        self.poll_interval_s = poll_interval_s

    # --- files in the package ----------------------------------------------------------

    def render(self, spec: PackageSpec) -> dict[str, str]:
        """``deploy/azureml-v1/``: three JSON configurations, deploy.py and a README."""
        settings = spec.deployment
        name = service_name(spec, DeployOptions())
        deploy = v1config.deploy_configuration(spec, settings)
        provisioning = v1config.provisioning_configuration(settings)
        inference = v1config.inference_configuration(spec, settings, name)
        env_vars = inference["environment"]["environment_variables"]
        return {
            f"{DEPLOY_DIR}/inference_config.json": _json(inference),
            f"{DEPLOY_DIR}/deploy_config.json": _json(deploy),
            f"{DEPLOY_DIR}/provisioning_config.json": _json(provisioning),
            f"{DEPLOY_DIR}/deploy.py": render_template(
                "azureml_v1_deploy.py.tmpl",
                scorepack_version=spec.scorepack_version or "unknown",
                service_name_literal=name,
                compute_name_literal=settings.compute_name,
                register_models=_REGISTER_SEVERAL if spec.models else _REGISTER_ONE,
                deployed_models="models" if spec.models else "[model]",
            ),
            f"{DEPLOY_DIR}/README.md": render_template(
                "azureml_v1_README.md.tmpl",
                scorepack_version=spec.scorepack_version or "unknown",
                package_name=spec.name,
                base_image=base_image(spec),
                env_summary=", ".join(f"`{k}={v}`" for k, v in env_vars.items()),
                replicas=deploy["num_replicas"],
                cpu_cores=deploy["cpu_cores"],
                memory_gb=deploy["memory_gb"],
                gpu_cores=deploy["gpu_cores"],
                max_concurrent=deploy["replica_max_concurrent_requests"],
                agent_count=provisioning["agent_count"],
                vm_size=provisioning["vm_size"],
                cluster_purpose=provisioning["cluster_purpose"],
                compute_name=settings.compute_name,
            ),
        }

    # --- deploy ------------------------------------------------------------------------

    def deploy(
        self, package: Path, spec: PackageSpec, options: DeployOptions, progress: Progress
    ) -> DeployResult:
        """Register the model, create or reuse the AKS compute, deploy, wait, report."""
        from . import azureml_v1_sdk as sdk

        files = PackageFiles(package).check()
        settings = deploy_settings(spec, options)
        name = service_name(spec, options)
        deploy_kwargs = v1config.deploy_configuration(spec, settings)
        provisioning = v1config.provisioning_configuration(settings)
        inference = v1config.inference_configuration(spec, settings, name)
        if spec.device == "cuda" and deploy_kwargs["gpu_cores"] < 1:
            raise DeployError("A CUDA package needs --gpu-cores 1 or more.")

        if options.dry_run:
            return self._dry_run(
                files, spec, options, name, deploy_kwargs, provisioning, inference, progress
            )

        sdk.import_sdk()
        config = WorkspaceConfig.find(options.workspace_config)
        progress(
            "Note: Azure ML SDK v1 is past its end of support; --sdk v2 deploys the same "
            "package to an attached Kubernetes compute"
        )
        progress(f"Opening workspace {config.workspace_name}")
        workspace = sdk.connect(config, self.auth)
        compute = self._compute(workspace, settings.compute_name, options, provisioning, progress)

        staging = Path(tempfile.mkdtemp(prefix="scorepack-azureml-v1-"))
        try:
            models = []
            for registration in v1config.registrations(inference):
                count = len(
                    [p for p in (files.root / registration["path"]).rglob("*") if p.is_file()]
                )
                progress(f"Registering model {registration['name']} ({count} files)")
                model = sdk.register_model(workspace, files, registration)
                progress(f"Registered model {model.name} version {model.version}")
                models.append(model)
            wheels = files.local_wheels()
            if wheels:
                progress(f"Uploading {len(wheels)} wheel(s) as private pip packages")
            urls = sdk.upload_wheels(workspace, files, staging)
            env = sdk.build_environment(files, inference["environment"], urls, staging)
            source = sdk.stage_source(files, tuple(inference["source_exclude"]), staging)
            inference_config = sdk.build_inference_config(source, inference["entry_script"], env)
            progress(
                f"Deploying service {name} on {settings.compute_name} (builds the image first)"
            )
            service = sdk.deploy_service(
                workspace, name, models, inference_config, deploy_kwargs, compute
            )
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        wait_for(
            lambda: sdk.service_state(service),
            what=f"Service {name}",
            progress=progress,
            interval_s=self.poll_interval_s,
            timeout_s=options.wait_timeout_s,
        )
        keys = sdk.service_keys(service) if options.show_keys else ()
        return DeployResult(
            service_name=name,
            scoring_uri=service.scoring_uri,
            keys_hint=keys_hint(name, config),
            keys=keys,
        )

    def _compute(
        self,
        workspace: Any,
        compute_name: str,
        options: DeployOptions,
        provisioning: dict[str, Any],
        progress: Progress,
    ) -> Any:
        from . import azureml_v1_sdk as sdk

        compute = sdk.find_compute(workspace, compute_name)
        if compute is not None:
            progress(
                f"Using AKS compute {compute_name} "
                f"({compute.agent_count} × {compute.agent_vm_size})"
            )
            return compute
        if not options.provision:
            raise DeployError(
                f"No compute named {compute_name} in the workspace. Add --provision to create "
                f"it ({provisioning['agent_count']} × {provisioning['vm_size']}), or name an "
                "existing AKS compute with --compute."
            )
        progress(
            f"Creating AKS compute {compute_name}: {provisioning['agent_count']} × "
            f"{provisioning['vm_size']}, {provisioning['cluster_purpose']} (about 10-20 minutes)"
        )
        compute = sdk.create_compute(workspace, compute_name, provisioning)
        wait_for(
            lambda: sdk.compute_state(compute),
            what=f"Compute {compute_name}",
            progress=progress,
            interval_s=self.poll_interval_s,
            timeout_s=options.wait_timeout_s,
        )
        return compute

    def _dry_run(
        self,
        files: PackageFiles,
        spec: PackageSpec,
        options: DeployOptions,
        name: str,
        deploy_kwargs: dict[str, Any],
        provisioning: dict[str, Any],
        inference: dict[str, Any],
        progress: Progress,
    ) -> DeployResult:
        """Build the real azureml-core objects offline and write what they would send."""
        from . import azureml_v1_sdk as sdk

        sdk.import_sdk()
        from azureml.core import Environment
        from azureml.core.compute import AksCompute
        from azureml.core.webservice import AksWebservice

        settings = deploy_settings(spec, options)
        config = WorkspaceConfig.find_or_placeholder(options.workspace_config)
        out = DryRun(options.dry_run_dir or default_dry_run_dir(self.name, name))
        arm = f"https://management.azure.com{config.workspace_id}"
        mms = _mms_url(config)
        out.request(
            "workspace", "GET", arm, note="Workspace(...): find the workspace and its region"
        )
        out.request(
            "compute",
            "GET",
            f"{arm}/computes/{settings.compute_name}",
            note="ComputeTarget(workspace, name): reuse the AKS compute when it exists",
        )
        if options.provision:
            with sdk.sdk_step("Building the provisioning configuration"):
                pc = AksCompute.provisioning_configuration(**provisioning)
                body = AksCompute._build_create_payload(
                    pc, "<workspace region>", config.subscription_id
                )
            out.request(
                "compute-create",
                "PUT",
                f"{arm}/computes/{settings.compute_name}",
                body,
                note="ComputeTarget.create: only when the compute does not exist",
            )
        registrations = v1config.registrations(inference)
        for registration in registrations:
            folder = files.root / registration["path"]
            out.write(
                "model-register",
                {
                    "call": (
                        f"Model.register(workspace, model_path={registration['path']!r}, "
                        "model_name=...)"
                    ),
                    "model_name": registration["name"],
                    "tags": registration["tags"],
                    "files": [
                        file_record(p, files.root) for p in sorted(folder.rglob("*")) if p.is_file()
                    ],
                },
            )
        wheels = files.local_wheels()
        out.write(
            "private-wheels",
            [
                {
                    "call": "Environment.add_private_pip_wheel(workspace, path, exist_ok=True)",
                    "environment_yml_line": w.entry,
                    "uploaded_as": w.content_tagged_name(),
                    **file_record(w.path, files.root),
                }
                for w in wheels
            ],
        )
        staging = Path(tempfile.mkdtemp(prefix="scorepack-azureml-v1-"))
        try:
            placeholders = {
                w.entry: f"<URL returned for {w.content_tagged_name()}>" for w in wheels
            }
            env = sdk.build_environment(files, inference["environment"], placeholders, staging)
            source = sdk.stage_source(files, tuple(inference["source_exclude"]), staging)
            # InferenceConfig checks the entry script and environment offline
            sdk.build_inference_config(source, inference["entry_script"], env)
            with sdk.sdk_step("Serializing the environment"):
                env_dict = Environment._serialize_to_dict(env)
            out.write(
                "inference-source",
                {
                    "call": "InferenceConfig(entry_script, source_directory, environment)",
                    "entry_script": inference["entry_script"],
                    "files": [
                        file_record(p, source) for p in sorted(source.rglob("*")) if p.is_file()
                    ],
                },
            )
            with sdk.sdk_step("Building the deployment configuration"):
                dc = AksWebservice.deploy_configuration(**deploy_kwargs)
                body = dc._build_create_payload(
                    name,
                    {
                        "modelIds": [f"{r['name']}:<new version>" for r in registrations],
                        "environment": env_dict,
                        "assets": "<entry script and source directory, uploaded as artifacts>",
                    },
                    overwrite=True,
                )
            body["computeName"] = settings.compute_name
            out.request(
                "service-create",
                "POST",
                f"{mms}/services",
                body,
                note="Model.deploy: builds the image, then creates the service",
            )
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return out.result(name, keys_hint(name, config), progress)

    # --- delete ------------------------------------------------------------------------

    def delete(self, spec: PackageSpec | None, options: DeployOptions, progress: Progress) -> None:
        """Delete the service and, with ``delete_compute``, the AKS compute (the clean-up)."""
        from . import azureml_v1_sdk as sdk

        name = service_name(spec, options)
        settings = deploy_settings(spec, options)
        if options.dry_run:
            config = WorkspaceConfig.find_or_placeholder(options.workspace_config)
            out = DryRun(options.dry_run_dir or default_dry_run_dir(self.name, name))
            mms = _mms_url(config)
            out.request("service-delete", "DELETE", f"{mms}/services/{name}")
            if options.delete_compute:
                arm = f"https://management.azure.com{config.workspace_id}"
                out.request(
                    "compute-delete",
                    "DELETE",
                    f"{arm}/computes/{settings.compute_name}?underlyingResourceAction=Delete",
                )
            progress(f"Dry run: wrote {len(out.written)} files to {out.directory}")
            return
        sdk.import_sdk()
        config = WorkspaceConfig.find(options.workspace_config)
        progress(f"Opening workspace {config.workspace_name}")
        workspace = sdk.connect(config, self.auth)
        progress(f"Deleting service {name}")
        if sdk.delete_service(workspace, name):
            progress(f"Deleted service {name}")
        else:
            progress(f"No service named {name}; nothing to delete")
        if options.delete_compute:
            progress(f"Deleting AKS compute {settings.compute_name}")
            if sdk.delete_compute(workspace, settings.compute_name):
                progress(
                    f"Azure is deleting compute {settings.compute_name} and its cluster "
                    "(it finishes in the background, about 10 minutes)"
                )
            else:
                progress(f"No compute named {settings.compute_name}; nothing to delete")


#: deploy.py's registration: the package's model/ folder as one model
_REGISTER_ONE = """\
        model_info = inference["model"]
        model = Model.register(ws, model_path=model_info["path"], model_name=model_info["name"],
                               tags=model_info["tags"], description="Registered by scorepack")
"""
#: a package of several models: each model/NAME folder registered as model NAME
_REGISTER_SEVERAL = """\
        models = [Model.register(ws, model_path=info["path"], model_name=info["name"],
                                 tags=info["tags"], description="Registered by scorepack")
                  for info in inference["models"]]
"""


def keys_hint(name: str, config: WorkspaceConfig) -> str:
    """How to read a v1 service's keys, without printing them."""
    return f"Keys (Python): Webservice(Workspace.from_config(), {name!r}).get_keys()"


def _mms_url(config: WorkspaceConfig) -> str:
    # the host comes from the workspace's discovery document, which a dry run does not read
    return (
        "https://<workspace region>.modelmanagement.azureml.net/modelmanagement/v1.0"
        f"{config.workspace_id}"
    )


def _json(data: Any) -> str:
    return json.dumps(data, indent=2) + "\n"


@hookimpl
def register_deploy_targets(register: Callable[[Any], None]) -> None:
    register(AzureMLV1Target())
