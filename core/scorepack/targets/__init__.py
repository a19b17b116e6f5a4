"""Deploy targets. The built-in ones are registered as default plugins."""

from .base import DeployOptions, DeployResult, DeployTarget, Progress

__all__ = ["DeployOptions", "DeployResult", "DeployTarget", "Progress"]
