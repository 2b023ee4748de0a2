"""The assembled video LLM: recipe -> model, forward, losses, generation, checkpoints, import, cost."""
