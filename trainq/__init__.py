"""trainq: the public SDK for tasks that run on a trainq service.

A task is a function decorated with ``@task(name, params=Model)``; the service calls it with a
``TaskContext`` and the validated params. Importing this package imports neither Flask, RQ, SQLAlchemy nor
torch (the context imports torch only when a task saves or restores state).
"""

from trainq.context import TaskContext
from trainq.process import loader_worker_init
from trainq.registry import Task, TaskError, load_task_modules, registry, task
from trainq.resources import Resources

__all__ = ["Resources", "Task", "TaskContext", "TaskError", "load_task_modules", "loader_worker_init", "registry",
           "task"]
