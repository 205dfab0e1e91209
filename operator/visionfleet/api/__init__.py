"""The VisionDeployment API (spec + status models); ``crds/`` is generated from these."""

from .crd import GROUP, KIND, PLURAL, VERSION
from .spec import VisionDeploymentSpec
from .status import VisionDeploymentStatus

__all__ = ["GROUP", "KIND", "PLURAL", "VERSION", "VisionDeploymentSpec", "VisionDeploymentStatus"]
