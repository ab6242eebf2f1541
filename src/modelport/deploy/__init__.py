"""The main job: from a model to a verified, benchmarked, servable repository."""

from modelport.deploy.example import example_calibration, example_model
from modelport.deploy.job import DeployResult, deploy

__all__ = ["DeployResult", "deploy", "example_calibration", "example_model"]
