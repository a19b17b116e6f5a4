"""Scoring packages: resolve a model into a PackageSpec, render it to files, write it."""

from .spec import DeploymentSettings, PackageSpec

__all__ = ["DeploymentSettings", "PackageSpec"]
