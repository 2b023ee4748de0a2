"""Launching: the Ray Train launcher, local loopback servers and the demo."""
