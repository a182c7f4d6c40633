"""The record: PostgreSQL, which holds every job's row and decides. Tables (``tables``), the status vocabulary as
pure data (``status``), the one status writer (``status_writer``), every advisory lock key (``locks``), and each
job's log lines (``joblog``).

May import ``api.stores`` and ``api.settings`` only (and ``status`` not even those: it is pure data).
"""
