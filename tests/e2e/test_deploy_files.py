"""What can be checked of the Kubernetes deployment without a cluster, Docker engine or Helm: the code location image's
build context, the Helm values against the fields Dagster's chart defines for them, the KubeRay cluster against the
Ray this project runs, and the run tags that give run pods GPUs, parsed by dagster-k8s itself."""

from __future__ import annotations

import re
import shlex
import tomllib
from fnmatch import fnmatch
from pathlib import Path

import pytest
import ray
import yaml
from dagster_k8s.job import get_user_defined_k8s_config

from gonka_pipelines.defs.jobs import RUN_GPUS_ENV, run_pod_tags
from gonka_pipelines.local.config import ENGINE_ENV, RAY_ADDRESS_ENV, ConfigError, load_compute_settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
VALUES = yaml.safe_load((DEPLOY / "helm" / "values.yaml").read_text())
RAY_CLUSTER, CHAIN_VOLUME = yaml.safe_load_all((DEPLOY / "kuberay" / "raycluster.yaml").read_text())

# The fields of Dagster's chart (helm/dagster/schema, 1.13 series) that these values set; the chart forbids others.
K8S_RUN_LAUNCHER_FIELDS = {"image", "imagePullPolicy", "jobNamespace", "loadInclusterConfig", "kubeconfigFile", "envConfigMaps",
                           "envSecrets", "envVars", "volumeMounts", "volumes", "labels", "failPodOnRunFailure", "resources",
                           "schedulerName", "securityContext", "runK8sConfig"}
USER_DEPLOYMENT_FIELDS = {"name", "image", "port", "dagsterApiGrpcArgs", "codeServerArgs", "includeConfigInLaunchedRuns", "env",
                          "envConfigMaps", "envSecrets", "annotations", "nodeSelector", "affinity", "tolerations",
                          "podSecurityContext", "securityContext", "resources", "livenessProbe", "readinessProbe", "startupProbe",
                          "labels", "volumeMounts", "volumes", "schedulerName"}
POSTGRESQL_REQUIRED = {"enabled", "postgresqlUsername", "postgresqlPassword", "postgresqlDatabase", "service"}


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = (DEPLOY / "Dockerfile").read_text().replace("\\\n", " ")
    return [(line.split()[0].upper(), line.split(None, 1)[1]) for line in text.splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def test_the_dockerfile_copies_only_what_exists_and_the_build_context_keeps():
    ignored = [line for line in (ROOT / ".dockerignore").read_text().splitlines() if line and not line.startswith("#")]
    copies = [shlex.split(argument)[:-1] for instruction, argument in dockerfile_instructions() if instruction == "COPY"]
    assert copies, "the Dockerfile copies the project"
    for sources in copies:
        for source in sources:
            assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
            assert not any(fnmatch(source, pattern) for pattern in ignored), f"COPY {source}: excluded by .dockerignore"
    for heavy in ("data", ".venv", ".git", "tests"):
        assert heavy in ignored, f"{heavy}/ would be sent to the Docker daemon"


def test_the_image_installs_the_pinned_torch_and_serves_the_code_location():
    instructions = dockerfile_instructions()
    arguments = dict(argument.split("=", 1) for instruction, argument in instructions if instruction == "ARG")
    assert arguments["TORCH_VERSION"] == "2.13.0"
    assert any(i == "RUN" and 'pip install -e ".[k8s]"' in a for i, a in instructions)
    command = next(argument for instruction, argument in instructions if instruction == "CMD")
    target = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["dg"]["project"]["code_location_target_module"]
    assert f'"-m", "{target}"' in command


def test_the_helm_values_set_only_fields_the_chart_defines():
    launcher = VALUES["runLauncher"]
    assert launcher["type"] == "K8sRunLauncher" and set(launcher["config"]) == {"k8sRunLauncher"}
    assert set(launcher["config"]["k8sRunLauncher"]) <= K8S_RUN_LAUNCHER_FIELDS
    assert all(re.fullmatch(r"[A-Z_]+=.*", variable) for variable in launcher["config"]["k8sRunLauncher"]["envVars"])
    (deployment,) = VALUES["dagster-user-deployments"]["deployments"]
    assert set(deployment) <= USER_DEPLOYMENT_FIELDS and {"name", "image", "port"} <= set(deployment)
    assert POSTGRESQL_REQUIRED <= set(VALUES["postgresql"]) and VALUES["postgresql"]["enabled"]
    assert set(VALUES["concurrency"]) <= {"enabled", "pools", "runs"} and VALUES["concurrency"]["pools"] == {"defaultLimit": 1}
    assert VALUES["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"]["maxConcurrentRuns"] == 1


def test_the_code_location_and_run_pods_select_ray_at_the_kuberay_head(monkeypatch):
    (deployment,) = VALUES["dagster-user-deployments"]["deployments"]
    assert deployment["dagsterApiGrpcArgs"] == ["-m", "gonka_pipelines.definitions"]
    code_location = {variable["name"]: variable["value"] for variable in deployment["env"]}
    run_pods = dict(variable.split("=", 1) for variable in VALUES["runLauncher"]["config"]["k8sRunLauncher"]["envVars"])
    for environment in (code_location, run_pods):
        for name, value in environment.items():
            monkeypatch.setenv(name, value)
        settings = load_compute_settings()
        assert settings.engine == "ray"
        assert settings.ray.address == f"ray://{RAY_CLUSTER['metadata']['name']}-head-svc:10001"
    assert {ENGINE_ENV, RAY_ADDRESS_ENV, "GONKA_DATA_DIR"} <= set(run_pods)
    image = deployment["image"]
    assert all(container["image"] == f"{image['repository']}:{image['tag']}"
               for group in [RAY_CLUSTER["spec"]["headGroupSpec"], *RAY_CLUSTER["spec"]["workerGroupSpecs"]]
               for container in group["template"]["spec"]["containers"])


def test_the_ray_cluster_runs_the_ray_this_project_installs_and_shares_the_chain_volume():
    assert RAY_CLUSTER["apiVersion"] == "ray.io/v1" and RAY_CLUSTER["kind"] == "RayCluster"
    assert RAY_CLUSTER["spec"]["rayVersion"] == ray.__version__
    claim = CHAIN_VOLUME["metadata"]["name"]
    assert CHAIN_VOLUME["spec"]["accessModes"] == ["ReadWriteMany"]  # code server, run pods and Ray workers at once
    groups = [RAY_CLUSTER["spec"]["headGroupSpec"], *RAY_CLUSTER["spec"]["workerGroupSpecs"]]
    for group in groups:
        pod = group["template"]["spec"]
        assert pod["volumes"] == [{"name": "chain", "persistentVolumeClaim": {"claimName": claim}}]
        assert all({"name": "chain", "mountPath": "/data"} in c["volumeMounts"] for c in pod["containers"])
    assert VALUES["runLauncher"]["config"]["k8sRunLauncher"]["volumes"][0]["persistentVolumeClaim"]["claimName"] == claim


def test_run_tags_give_the_run_pod_gpus_as_dagster_k8s_reads_them():
    config = get_user_defined_k8s_config(run_pod_tags("2"))
    assert config.container_config["resources"] == {"requests": {"nvidia.com/gpu": "2"}, "limits": {"nvidia.com/gpu": "2"}}
    assert run_pod_tags("0") == {} and run_pod_tags(None) == {}
    with pytest.raises(ConfigError, match=f"{RUN_GPUS_ENV}='two': expected a whole number"):
        run_pod_tags("two")
