"""Video input: readers, frame samplers, preprocessing, datasets, the synthetic action-scene suite."""
