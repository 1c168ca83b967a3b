"""Model profiles: the shape and precision of a decoder, read from resources/models/NAME.yaml."""

from __future__ import annotations

from dataclasses import MISSING, dataclass, fields, replace
from pathlib import Path
from typing import Any, Literal

import yaml

from gonka_pipelines.local.paths import RESOURCES

MODELS_DIR = RESOURCES / "models"
KINDS = ("poc", "llm")
DTYPES = ("float32", "float16", "bfloat16")
_INT_FIELDS = ("dim", "n_layers", "n_heads", "ffn_hidden", "vocab", "seq_len", "batch_size")
_FLOAT_FIELDS = ("rope_theta", "norm_eps")


@dataclass(frozen=True)
class ModelProfile:
    """A Llama-style decoder's shape; `poc` models take embeddings, `llm` models take token ids."""

    name: str
    kind: Literal["poc", "llm"]
    dim: int
    n_layers: int
    n_heads: int
    ffn_hidden: int
    vocab: int
    seq_len: int
    batch_size: int
    dtype: str
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads


def cheaper_profile(profile: ModelProfile) -> ModelProfile:
    """A much smaller model with the same vocabulary and context (dim 32, 1 layer, 2 heads: about a tenth of llm-tiny's
    compute): what a cheating executor serves instead of the network's model, and the impostor of the similarity study."""
    return replace(profile, name=f"{profile.name}-small", dim=32, n_layers=1, n_heads=2, ffn_hidden=86)


def _check_field(name: str, value: Any) -> Any:
    """Return the field's value (floats normalised) or raise ValueError saying what the field must be."""
    if name in _INT_FIELDS:
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"field '{name}' must be a positive integer, got {value!r}")
        return value
    if name in _FLOAT_FIELDS:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < float("inf"):
            raise ValueError(f"field '{name}' must be a positive number, got {value!r}")
        return float(value)
    if name == "kind" and value not in KINDS:
        raise ValueError(f"field 'kind' must be one of {', '.join(KINDS)}, got {value!r}")
    if name == "dtype" and value not in DTYPES:
        raise ValueError(f"field 'dtype' must be one of {', '.join(DTYPES)}, got {value!r}")
    return value


def profile_from_dict(name: str, data: Any) -> ModelProfile:
    """Validate a profile's fields (types, ranges, head split) and build it; errors name the field."""
    if not isinstance(data, dict):
        raise ValueError(f"expected a mapping of profile fields, got {type(data).__name__}")
    known = {f.name: f for f in fields(ModelProfile)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ValueError(f"field '{unknown[0]}' is not a profile field (known: {', '.join(known)})")
    if data.get("name", name) != name:
        raise ValueError(f"field 'name' must match the file name {name!r}, got {data['name']!r}")
    values: dict[str, Any] = {"name": name}
    for field_name, spec in known.items():
        if field_name == "name":
            continue
        if field_name not in data:
            if spec.default is MISSING:
                raise ValueError(f"field '{field_name}' is missing")
            continue
        values[field_name] = _check_field(field_name, data[field_name])
    profile = ModelProfile(**values)
    if profile.dim % profile.n_heads or profile.head_dim % 2:
        raise ValueError(f"field 'n_heads' must split dim {profile.dim} into even head sizes, got {profile.n_heads}")
    return profile


def load_profile(name: str, models_dir: Path | None = None) -> ModelProfile:
    """Read and validate NAME.yaml; any problem raises ValueError naming the file and the field."""
    path = (models_dir or MODELS_DIR) / f"{name}.yaml"
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError as error:
        known = ", ".join(list_profiles(models_dir)) or "none"
        raise ValueError(f"{path.name}: no such model profile in {path.parent} (known: {known})") from error
    except yaml.YAMLError as error:
        raise ValueError(f"{path.name}: not valid YAML ({error})") from error
    try:
        return profile_from_dict(name, data)
    except ValueError as error:
        raise ValueError(f"{path.name}: {error}") from error


def list_profiles(models_dir: Path | None = None) -> list[str]:
    """Names of the profiles shipped in the models directory, sorted."""
    return sorted(path.stem for path in (models_dir or MODELS_DIR).glob("*.yaml"))


def llm_contexts(models_dir: Path | None = None) -> dict[str, int]:
    """Every language model's context length in tokens: the window a training step trains on."""
    profiles = (load_profile(name, models_dir) for name in list_profiles(models_dir))
    return {p.name: p.seq_len for p in profiles if p.kind == "llm"}
