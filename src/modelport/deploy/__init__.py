"""The main job: from a model to a verified, benchmarked, servable repository."""

from modelport.deploy.example import example_calibration, example_model
from modelport.deploy.job import DeployResult, deploy, run_recipe
from modelport.deploy.recipe import Recipe, load_recipe, parse_recipe

__all__ = [
    "DeployResult",
    "Recipe",
    "deploy",
    "example_calibration",
    "example_model",
    "load_recipe",
    "parse_recipe",
    "run_recipe",
]
