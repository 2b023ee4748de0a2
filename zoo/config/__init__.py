"""Recipes (YAML -> typed Recipe) and experiment files (a base recipe, variants, seeds)."""
