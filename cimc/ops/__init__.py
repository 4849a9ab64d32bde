"""Op families. Importing this package registers every op in ``cimc.ops.registry``."""

from cimc.ops import (  # noqa: F401
    builtin,
    cim,
    elementwise,
    linalg,
    norm,
    pool,
    recurrent,
    reduce,
    shape,
    xbar,
)
