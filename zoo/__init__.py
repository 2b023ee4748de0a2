"""The assembled video LLM: recipe -> model, forward, losses, generate, save/load, training."""
