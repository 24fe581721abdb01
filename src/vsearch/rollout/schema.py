"""The ``rollout.yaml`` schema: one pydantic model, validated on write and on read.

The search service reads the same file to route traffic: a stable hash of the user id puts
each user in a bucket in [0, 10000); buckets below ``traffic.treatment_percent * 100`` get
the treatment, the rest the control. The hash is salted with the experiment id, so two
experiments split users independently, and a user keeps their variant for the whole
experiment (and across ramp steps: raising the percentage only moves control users over).
"""

from __future__ import annotations

import hashlib
import os
from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from vsearch import artifacts

SCHEMA_VERSION = 1
BUCKETS = 10_000


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelRef(_Strict):
    uri: str = Field(description="model folder or fsspec URI (a vsearch save_pretrained folder)")
    version: str = Field(description="vsearch.artifacts.model_version of the weights")
    drift_reference: str | None = Field(default=None, description="durable URI of the model's drift reference snapshot "
                                        "(build_drift_reference): the monitoring pipeline's reference_uri once it serves")


# Milvus names: letters, digits, underscores; a letter or underscore first (no path tricks).
_ALIAS = r"^[A-Za-z_][A-Za-z0-9_]{0,254}$"


class Variant(_Strict):
    name: Literal["control", "treatment"]
    model: ModelRef
    milvus_alias: str = Field(pattern=_ALIAS, description="alias the variant searches through")
    milvus_collection: str | None = Field(default=None, description="collection the alias points to at write time")


class RampStep(_Strict):
    treatment_percent: float = Field(gt=0, le=100)
    min_duration_hours: float = Field(gt=0, le=24 * 365, allow_inf_nan=False)


class Traffic(_Strict):
    treatment_percent: float = Field(ge=0, le=100, description="share of users on the treatment now")
    ramp: list[RampStep] = Field(min_length=1)

    @model_validator(mode="after")
    def _ramp_increases(self) -> Traffic:
        steps = [s.treatment_percent for s in self.ramp]
        if steps != sorted(steps) or len(set(steps)) != len(steps):
            raise ValueError(f"ramp steps must strictly increase, got {steps}")
        return self


class Guardrail(_Strict):
    metric: Literal["ctr", "add_to_cart_rate", "p99_latency_ms", "error_rate"]
    direction: Literal["higher_is_better", "lower_is_better"]
    max_relative_regression: float | None = Field(default=None, ge=0, description="stop if treatment is worse than control by more than this fraction")
    max_absolute: float | None = Field(default=None, description="stop if the treatment value crosses this bound")
    min_samples: int = Field(default=1000, ge=1)

    @model_validator(mode="after")
    def _has_stop_condition(self) -> Guardrail:
        if self.max_relative_regression is None and self.max_absolute is None:
            raise ValueError(f"guardrail {self.metric}: needs max_relative_regression or max_absolute")
        return self


class Assignment(_Strict):
    unit: Literal["user_id"] = "user_id"
    hash: Literal["sha256"] = "sha256"
    salt: str


class Rollback(_Strict):
    instruction: str
    alias: str
    restore_collection: str | None = None


class Lineage(_Strict):
    code_version: str | None = Field(default=None, description="git SHA (or package version) of the code that wrote the plan")
    run_id: str | None = Field(default=None, description="the KFP run that wrote it; None outside a pipeline run")


class RolloutConfig(_Strict):
    schema_version: Literal[1] = SCHEMA_VERSION
    experiment_id: str = Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
    created_at: datetime
    blessing: str = Field(description="the blessing.json that allowed this rollout: relative to the plan's folder, or a URI")
    control: Variant
    treatment: Variant
    traffic: Traffic
    assignment: Assignment
    guardrails: list[Guardrail] = Field(min_length=1)
    rollback: Rollback
    live_alias: str = Field(default="vsearch_serving", pattern=_ALIAS,
                            description="the alias live traffic searches; only `vsearch release promote | rollback` move it")
    milvus_uri: str | None = Field(default=None, description="the Milvus both arms' aliases live in (default for serve / release)")
    registry: str | None = Field(default=None, description="champion registry the plan was checked against (default for release)")
    lineage: Lineage | None = Field(default=None, description="code and KFP run that wrote the plan (the blessing copy has the gate's)")

    @model_validator(mode="after")
    def _variants(self) -> RolloutConfig:
        if self.control.name != "control" or self.treatment.name != "treatment":
            raise ValueError("control/treatment variants must be named 'control' and 'treatment'")
        return self

    def variants(self) -> dict[str, Variant]:
        return {"control": self.control, "treatment": self.treatment}


def bucket(salt: str, user_id: str) -> int:
    """Stable bucket in [0, BUCKETS) for a user: sha256 of ``salt:user_id``."""
    digest = hashlib.sha256(f"{salt}:{user_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


def assign_variant(cfg: RolloutConfig, user_id: str) -> Variant:
    """The variant a user sees under ``cfg`` (deterministic; see the module docstring)."""
    threshold = round(cfg.traffic.treatment_percent * BUCKETS / 100)
    return cfg.treatment if bucket(cfg.assignment.salt, user_id) < threshold else cfg.control


def load_rollout(path: str | os.PathLike) -> RolloutConfig:
    """Read and validate a rollout.yaml (``yaml.safe_load``); DataError (one line) on any violation."""
    import yaml
    from pydantic import ValidationError

    from vsearch.schema import DataError

    path = Path(path)
    if not path.is_file():
        raise DataError(path, "rollout file is missing")
    try:
        raw = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise DataError(path, "not valid YAML", detail=str(err).splitlines()[0]) from err
    if not isinstance(raw, dict):
        raise DataError(path, "expected a mapping at the top level")
    try:
        return RolloutConfig.model_validate(raw)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise DataError(path, f"not a valid rollout: {where}: {first['msg']}", detail=f"{err.error_count()} error(s)") from err


def with_traffic(cfg: RolloutConfig, treatment_percent: float) -> RolloutConfig:
    """The same plan with another current treatment share (a ramp step, or 0 after a rollback)."""
    return RolloutConfig.model_validate(cfg.model_dump() | {"traffic": cfg.traffic.model_dump() | {"treatment_percent": treatment_percent}})


def dump_rollout(cfg: RolloutConfig, path: str | os.PathLike) -> Path:
    """Validate and write ``cfg`` atomically (temp file + rename)."""
    import yaml

    cfg = RolloutConfig.model_validate(cfg.model_dump())  # re-validate whatever the caller built
    path = Path(path)
    with artifacts.staged_file(path) as tmp:
        tmp.write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    return path
