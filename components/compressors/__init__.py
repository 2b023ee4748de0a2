"""Registered compressors; every module here is imported by components.registry.discover()."""
