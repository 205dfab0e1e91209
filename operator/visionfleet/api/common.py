"""Shared building blocks of the VisionDeployment models.

The pydantic models in this package are the one source of truth for the CRD in ``crds/``: the
schema, its defaults, its bounds and its CEL rules are all declared here and rendered by
``visionfleet.api.crd``. Two consequences shape this module:

* Every string, list and map is bounded (``max_length`` / ``max_items`` / ``maxProperties``). The
  API server estimates the worst-case cost of each CEL rule from these bounds and refuses a CRD
  whose rules could cost too much; unbounded fields would make even simple rules unaffordable.
* Field names are camelCase on the wire (Kubernetes convention) and snake_case in Python.
"""

from __future__ import annotations

from typing import Annotated, Any, Callable

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

# Limits that several models share. Kubernetes' own limits where one exists.
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_LABEL_MAX = 63
LABEL_KEY_MAX = 317  # optional DNS subdomain prefix (253) + "/" + name (63)
LABEL_VALUE_MAX = 63
URI_MAX = 1024
IMAGE_MAX = 512
MAX_CLASSES = 32
MAX_SELECTOR_TERMS = 16

# Go-style durations as Kubernetes users write them: 30s, 2m, 1h30m, 500ms.
DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"

Duration = Annotated[str, Field(pattern=DURATION_PATTERN, max_length=32)]
DnsLabel = Annotated[str, Field(pattern=DNS_LABEL, min_length=1, max_length=DNS_LABEL_MAX)]
# A quantity as Kubernetes resources carry it ("1", "500m", "16Gi"), or a plain integer.
Quantity = Annotated[
    int | str,
    Field(json_schema_extra={"x-kubernetes-int-or-string": True}),
]


def cel(rule: str, message: str, *, field_path: str | None = None, reason: str | None = None) -> dict[str, Any]:
    """One ``x-kubernetes-validations`` entry.

    ``field_path`` points the API server's error at the offending field (``spec.x.y: Invalid
    value``) instead of the object that holds the rule, so the user sees which field to fix.
    """
    out: dict[str, Any] = {"rule": rule, "message": message}
    if field_path:
        out["fieldPath"] = field_path
    if reason:
        out["reason"] = reason
    return out


def validations(*rules: dict[str, Any]) -> dict[str, Any]:
    return {"x-kubernetes-validations": list(rules)}


def default_object(factory: Callable[[], "Model"]) -> Any:
    """A field defaulting to ``factory()``, with that whole object as the schema's default.

    The API server checks a default against the object's CEL rules *before* nested defaults are
    filled in, so ``default: {}`` fails a rule such as ``self.min <= self.max``; the complete
    object is both valid and exactly what the server would otherwise build up field by field.
    """
    return Field(default_factory=factory, json_schema_extra={"default": factory().to_wire()})


class Model(BaseModel):
    """Base of every API model: camelCase aliases, unknown fields refused, populate by name too."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        use_enum_values=True,
        validate_default=True,
    )

    def to_wire(self) -> dict[str, Any]:
        """The object as the API server stores it (aliases, no unset optionals)."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")
