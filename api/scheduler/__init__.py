"""The scheduler: where each queued job runs, on which devices. ``placement`` decides (pure: fits, backfill, holds
for the starved, why a job waits), ``schedule`` runs one pass against the record (reservations written under the
scheduler's lock before anything is enqueued), ``hosts`` keeps each host's registration and liveness.

May import ``api.queue``, ``api.record``, ``api.stores``, ``api.settings`` and the SDK's ``trainq.resources``;
``api.service`` and ``api.worker`` import it (a submit and a finished job each run a pass).
"""
