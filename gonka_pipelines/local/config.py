"""Configuration files: genesis.yaml and network.yaml read and validated into the protocol's typed models."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gonka_pipelines.local.paths import RESOURCES
from gonka_pipelines.protocol.params import GenesisParams, NetworkConfig
from gonka_pipelines.protocol.rules import RULE_SETS

GENESIS_FILE = RESOURCES / "genesis.yaml"
NETWORK_FILE = RESOURCES / "network.yaml"
COMPUTE_FILE = RESOURCES / "compute.yaml"
ENGINE_ENV, RAY_ADDRESS_ENV = "GONKA_COMPUTE_ENGINE", "GONKA_RAY_ADDRESS"


class ConfigError(ValueError):
    """A configuration file is unreadable or a field in it is invalid; the message names both."""


def read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text())
    except FileNotFoundError as error:
        raise ConfigError(f"{path}: file not found") from error
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML ({error})") from error


def validate_config(model: type[BaseModel], data: Any, path: Path, prefix: str = "") -> Any:
    """Build a typed object, turning the first validation error into one line naming file and field."""
    try:
        return model.model_validate(data)
    except ValidationError as error:
        first = error.errors()[0]
        field = ".".join(str(part) for part in (prefix, *first["loc"]) if part != "")
        raise ConfigError(f"{path}: field '{field or '(root)'}': {first['msg']}") from error


def load_genesis(profile: str | None = None, path: Path = GENESIS_FILE) -> GenesisParams:
    """Read one profile (the file's default_profile when none is named) from genesis.yaml."""
    data = read_yaml(path)
    if not isinstance(data, dict) or not isinstance(data.get("profiles"), dict):
        raise ConfigError(f"{path}: field 'profiles': must be a mapping of profile name to parameters")
    name = profile or data.get("default_profile")
    if name not in data["profiles"]:
        known = ", ".join(sorted(data["profiles"]))
        raise ConfigError(f"{path}: profile {name!r} not found (known: {known})")
    body = data["profiles"][name]
    if not isinstance(body, dict):
        raise ConfigError(f"{path}: field 'profiles.{name}': must be a mapping")
    params = validate_config(GenesisParams, {"profile": name, **body}, path, prefix=f"profiles.{name}")
    if params.rules not in RULE_SETS:
        raise ConfigError(f"{path}: field 'profiles.{name}.rules': unknown rule set {params.rules!r} "
                          f"(known: {', '.join(sorted(RULE_SETS))})")
    return params


FIXED_PARAMS = ("profile", "chain_id", "genesis_time", "epoch_seconds", "token")
"""What a fork keeps: the chain's identity, its clock and its token (the lab changes rules, not which chain it is)."""


def changed_params(genesis: GenesisParams, settings: Sequence[str]) -> GenesisParams:
    """The parameters with `section.key=value` settings applied (values read as YAML: 0.3, [1.0, 0.5, 0.4], latest),
    checked by the params schema; a malformed setting, an unknown or fixed key or a bad value is a ConfigError naming it."""
    data = genesis.model_dump(mode="json")
    for setting in settings:
        path, equals, text = setting.partition("=")
        keys = path.strip().split(".")
        if not equals or not all(keys):
            raise ConfigError(f"--set {setting!r}: expected section.key=value (e.g. sprint.power_cap=0.3)")
        if keys[0] in FIXED_PARAMS:
            raise ConfigError(f"--set {path}: a fork keeps the chain's {keys[0]}")
        node = data
        for depth, key in enumerate(keys):
            known = sorted(k for k in node if k not in FIXED_PARAMS) if isinstance(node, dict) else []
            if key not in known:
                where = ".".join(keys[:depth]) or "the parameters"
                raise ConfigError(f"--set {path}: {key!r} is not a parameter of {where} (known: {', '.join(known)})")
            if depth < len(keys) - 1:
                node = node[key]
        if isinstance(node[keys[-1]], dict):
            raise ConfigError(f"--set {path}: a section; set one of its keys ({', '.join(sorted(node[keys[-1]]))})")
        try:
            node[keys[-1]] = yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise ConfigError(f"--set {path}: value {text!r} is not valid YAML ({error})") from error
    changed = validate_config(GenesisParams, data, Path("--set"))
    if changed.rules not in RULE_SETS:
        raise ConfigError(f"--set rules: unknown rule set {changed.rules!r} (known: {', '.join(sorted(RULE_SETS))})")
    return changed


def load_network(path: Path = NETWORK_FILE) -> NetworkConfig:
    """Read and validate network.yaml."""
    return validate_config(NetworkConfig, read_yaml(path), path)


class RaySettings(BaseModel):
    """How host tasks are placed on a Ray cluster (compute.yaml's `ray` section)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    address: str | None = None
    num_cpus: float = Field(default=1.0, gt=0)
    num_gpus: float = Field(default=0.0, ge=0)
    workers: int | None = Field(default=None, gt=0)
    max_retries: int = Field(default=2, ge=0)


class ComputeSettings(BaseModel):
    """Where hosts' model compute runs (compute.yaml): not consensus, so blocks do not depend on it."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    engine: Literal["local", "ray"] = "local"
    device: str | None = None
    ray: RaySettings = Field(default_factory=RaySettings)


def load_compute_settings(path: Path = COMPUTE_FILE, **overrides: Any) -> ComputeSettings:
    """compute.yaml, then GONKA_COMPUTE_ENGINE / GONKA_RAY_ADDRESS, then the overrides that are not None
    (engine, device, and the ray section's keys); a bad value is a ConfigError naming the field."""
    data = read_yaml(path) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: must be a mapping (engine, device, ray)")
    ray = dict(data.get("ray") or {})
    environment = {"engine": os.environ.get(ENGINE_ENV) or None}
    ray_environment = {"address": os.environ.get(RAY_ADDRESS_ENV) or None}
    for key, value in (*environment.items(), *overrides.items()):
        if value is not None and key in ("engine", "device"):
            data[key] = value
    for key, value in (*ray_environment.items(), *overrides.items()):
        if value is not None and key not in ("engine", "device"):
            ray[key] = value
    return validate_config(ComputeSettings, {**data, "ray": ray}, path)
