"""Runs: MLflow tracking, run_recipe (every launcher's path), sweeps and comparisons."""
