"""The edge-cloud runtime: verifier server, edge client, wire protocol, delay proxy."""
