"""A task module that fails to import: the worker logs it and offers the others."""

from trainq import task  # noqa: F401

raise RuntimeError("this module is broken on purpose")
