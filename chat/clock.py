"""The server clock, as the wire carries it: milliseconds since the epoch."""

import time


def now_ms() -> int:
    return int(time.time() * 1000)
