"""Training: the loop, progressive stages, and the strategies that wrap the model (plain, DDP, DeepSpeed)."""
