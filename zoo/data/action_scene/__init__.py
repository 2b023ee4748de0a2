"""The synthetic action-scene suite: real mp4 videos of actions (motion patterns) in scenes
(backgrounds), co-occurring with a configurable bias, with UNSCENE-style test splits,
multiple-choice and grounding questions. See docs/data_format.md."""

from zoo.data.action_scene.suite import GENERATOR_VERSION, SuiteOptions, generate_suite

__all__ = ["GENERATOR_VERSION", "SuiteOptions", "generate_suite"]
