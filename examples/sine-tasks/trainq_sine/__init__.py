"""Example trainq tasks (see tasks.py)."""
