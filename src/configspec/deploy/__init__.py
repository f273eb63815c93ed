"""From a chosen configuration to a deployment: engine commands and profile fingerprints."""

from configspec.backends.specs import is_model_free
from configspec.deploy.emit import (
    EMITTERS,
    ENGINE_VERSIONS,
    ENGINES,
    Deployment,
    EngineCannotExpress,
    emit,
)

__all__ = [
    "EMITTERS",
    "ENGINES",
    "ENGINE_VERSIONS",
    "Deployment",
    "EngineCannotExpress",
    "emit",
    "is_model_free",
]
