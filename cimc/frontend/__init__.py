"""Frontends: model formats to IR."""
