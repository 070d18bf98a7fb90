import os
import time

import pytest

# The SDKs' HTTP library: anthropic 0.x uses httpx; anthropic 2.x and openai 3.x use its fork httpx2.
try:
    import httpx2 as httpx
except ImportError:
    import httpx

BASE = os.environ["SIM_BASE_URL"]


def wait_for(fn, timeout=15.0, every=0.05):
    """Calls fn until it returns a truthy value; fails after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(every)


@pytest.fixture
def sim():
    with httpx.Client(base_url=BASE, timeout=10) as c:
        yield c
