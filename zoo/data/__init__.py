"""Video input and text: readers, samplers, transforms, prompts, batches, datasets, formats, the synthetic suite."""
