"""Former name of ``streamlog.inspection``, kept because earlier releases documented it.

The module was renamed because ``inspect`` is also the name of a standard
library module; new code imports ``streamlog.inspection``.
"""

from .inspection import *  # noqa: F403
from .inspection import __all__  # noqa: F401
