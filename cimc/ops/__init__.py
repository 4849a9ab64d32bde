"""Op families. Importing this package registers every op in ``cimc.ops.registry``."""

from cimc.ops import builtin, cim, elementwise, linalg, norm, pool, reduce, shape, xbar  # noqa: F401
