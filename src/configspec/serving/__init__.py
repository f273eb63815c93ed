"""The edge-cloud runtime: verifier server, edge client, wire protocol, delay proxy.

>>> service = VerifierService([target], ServerLimits(max_k=8))
>>> with ServerThread(service) as srv, EdgeClient(srv.url, drafter, k=4) as client:
...     gen = client.generate(prompt_tokens, max_tokens=64)
>>> record = build_run_record(gen, RunConfig(drafter=..., target=..., k=4))
"""

from configspec.serving.client import EdgeClient, Generation, ServerRejected, probe_server
from configspec.serving.proxy import DelayProxy, LinkSettings
from configspec.serving.record import build_run_record
from configspec.serving.server import ServerThread, create_app, run_server
from configspec.serving.sessions import ServerLimits, VerifierService

__all__ = [
    "DelayProxy",
    "EdgeClient",
    "Generation",
    "LinkSettings",
    "ServerLimits",
    "ServerRejected",
    "ServerThread",
    "VerifierService",
    "build_run_record",
    "create_app",
    "probe_server",
    "run_server",
]
