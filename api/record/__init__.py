"""The record: PostgreSQL, which holds every job's row and decides. Tables (``tables``), the status vocabulary as
pure data (``status``), the one status writer (``status_writer``), every advisory lock key (``locks``), each
job's log lines (``joblog``), and an attempt's end kept beside its checkpoints for when neither store answers
(``outcome``: the outcome file, and artifact rows written late).

May import ``api.stores`` and ``api.settings`` only, and the SDK's checkpoint files (``trainq.checkpoints``:
``outcome`` writes atomically as checkpoints are); ``status`` not even those: it is pure data.
"""
