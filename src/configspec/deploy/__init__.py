"""From a chosen configuration to a deployment: engine commands and profile fingerprints."""

from configspec.deploy.emit import (
    ENGINE_VERSIONS,
    ENGINES,
    Deployment,
    EngineCannotExpress,
    emit,
    is_model_free,
)

__all__ = [
    "ENGINES",
    "ENGINE_VERSIONS",
    "Deployment",
    "EngineCannotExpress",
    "emit",
    "is_model_free",
]
