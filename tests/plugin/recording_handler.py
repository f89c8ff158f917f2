"""A custom handler, installed in tests as the `etl.handlers` entry point `recording`.

Each call appends `<idempotency key> <action> <dispatch> <site> <test>` to $RECORDING_FILE before
it returns; $RECORDING_SLEEP makes each call that slow, and $RECORDING_FAIL_FIRST fails the first
N calls of each key (counted in the file), to exercise retries.
"""

import os
import time

from etl.handlers import ActionRequest


def handle(request: ActionRequest) -> str:
    path = os.environ["RECORDING_FILE"]
    line = (
        f"{request.idempotency_key} {request.action} {request.dispatch_id} {request.site_id} "
        f"{request.test}\n"
    )
    with open(path, "a") as record:  # O_APPEND: whole lines, even from many processes
        record.write(line)
    time.sleep(float(os.environ.get("RECORDING_SLEEP", "0")))
    with open(path) as record:
        calls = sum(1 for seen in record if seen.startswith(request.idempotency_key))
    if calls <= int(os.environ.get("RECORDING_FAIL_FIRST", "0")):
        raise RuntimeError(f"failing call {calls} on purpose")
    return f"recorded {request.action} of {request.site_id}"
