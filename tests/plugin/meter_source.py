"""A telemetry source plug-in for the tests: `meter:N` offers two batches of N readings of site
`one`'s meter as dicts, the second failing when N is negative, after the first is queued."""

from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any


def collect(argument: str, queue: Callable[[str, Iterable[dict[str, Any]]], object]) -> None:
    count = int(argument)
    end = datetime.fromtimestamp(int(datetime.now(UTC).timestamp()) // 30 * 30, UTC)
    for batch in ("first", "second"):
        if batch == "second" and count < 0:
            raise RuntimeError("the meter stopped answering")
        end -= timedelta(hours=1)
        queue(
            batch,
            (
                {
                    "site_id": "one",
                    "meter_id": "one-m",
                    "timestamp": (end - timedelta(seconds=30 * i)).isoformat(),
                    "kw": 10 + i,
                }
                for i in range(abs(count))
            ),
        )
