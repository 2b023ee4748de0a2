"""Registered encoders; every module here is imported by components.registry.discover()."""
