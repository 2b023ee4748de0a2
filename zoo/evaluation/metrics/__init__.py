"""The papers' metrics: UNSCENE binary, open-ended judge, multiple choice, grounding."""
