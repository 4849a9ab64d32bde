"""Op families. Importing this package registers every op in ``cimc.ir.registry``."""

from cimc.ir.ops import builtin, elementwise  # noqa: F401
