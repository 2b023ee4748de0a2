"""Evaluation: benchmarks scored by the metrics of the papers, and where answers look."""
