"""ConfigSpec: pick, and run, the best configuration for edge-cloud speculative decoding.

The public surface is small on purpose; everything else lives in private-by-convention
submodules that may change between minor versions.
"""

from configspec._version import __version__
from configspec.errors import (
    ConfigSpecError,
    IncompatibleModels,
    InvalidInput,
    NoFeasibleConfig,
    ProfileError,
    ProfileMissing,
)

__all__ = [
    "ConfigSpecError",
    "IncompatibleModels",
    "InvalidInput",
    "NoFeasibleConfig",
    "ProfileError",
    "ProfileMissing",
    "__version__",
]
