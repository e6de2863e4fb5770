"""The watcher variables a pod may override (DESIGN.md): the entries of the watcher's
registry (oomdump.watcher_env) marked `pod_override`. The webhook validates annotations
and its defaults file with their checks and the watcher its environment, so the two
halves of oomdump cannot disagree about a value.

Each `normalize` returns the value as the watcher receives it or raises ValueError.
"""

from collections.abc import Mapping
from typing import Any

from oomdump import watcher_env
from oomdump.watcher_env import Variable

VARIABLES: tuple[Variable[Any], ...] = tuple(
    variable for variable in watcher_env.VARIABLES if variable.pod_override
)
BY_NAME: Mapping[str, Variable[Any]] = {variable.name: variable for variable in VARIABLES}
