"""The job plain RQ runs in the orphan-detection comparison: it just keeps a horse busy."""

import time


def spin(seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.1)
