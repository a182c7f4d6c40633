"""``make run``: the embedded Redis and PostgreSQL (``servers``, also the tests' and benchmarks' throwaway
servers) and the supervisor of the API, worker and reconciler (``supervisor``; ``python -m api.dev``).

Imports nothing of the service; only ``api.ops`` (and tests) import it.
"""
