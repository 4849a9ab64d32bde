"""Op families. Importing this package registers every op in ``cimc.ir.registry``."""

from cimc.ir.ops import builtin, cim, elementwise, linalg, norm, pool, reduce, shape, xbar  # noqa: F401
