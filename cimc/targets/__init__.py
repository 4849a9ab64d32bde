"""Chip targets as data: one validated TOML file per chip (see docs/targets.md).

This package's top level imports only the schema (stdlib and :mod:`cimc.errors`), so the runtime
can rebuild a target from an artifact's manifest without importing the compiler.
"""

from cimc.targets.schema import Target, list_targets, load_target, targets_markdown

__all__ = ["Target", "list_targets", "load_target", "targets_markdown"]
