"""The runtime loop: run configurations for real and compare them with the model.

* :mod:`configspec.loop.runtime` — the local runtime (verifier subprocess, link, edge client);
* :mod:`configspec.loop.runs` — run plans through a runtime and store their records (shared
  by ``quickstart``, ``validate --run`` and ``run edge``);
* :mod:`configspec.loop.validate` — predicted (model on the profiles) versus measured (runs);
* :mod:`configspec.loop.quickstart` — the whole loop on this machine in one call.
"""
