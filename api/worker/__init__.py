"""The worker: the host's agent (``agent``: RQ's forking worker, which runs only the service's own job function),
one attempt of a job (``attempt``: the task run with a ``TaskContext``, its end recorded), its liveness and lease
(``liveness``: heartbeats, the attempt's own database session and locks, the fence), its progress writes
(``progress``), its disk limit (``disk``), its scratch folder, locked while it lives, and the sweep of dead ones
(``scratch``), and the host's storage check: no job taken while it is full or unwritable (``storage``).

May import ``api.record``, ``api.queue``, ``api.stores``, ``api.settings`` and the SDK ``trainq``; never
``api.service`` or ``api.web``, nor torch or the built-in tasks (a worker offers whatever tasks are installed).

``api.worker.run_training_job`` is the function every RQ job names (``api.queue.JOB_FUNCTION``), jobs already
queued included: keep this path.
"""

from api.worker.attempt import run_training_job

__all__ = ["run_training_job"]
