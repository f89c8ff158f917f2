"""A dispatch's chart drawn from its data, whatever its span and however many readings: a
bounded number of time labels and of points. (The data read from the store:
tests/store/test_telemetry.py.)"""

from datetime import UTC, datetime, timedelta
from xml.etree import ElementTree

from etl.read import chart


def a_chart(start: datetime, end: datetime, load: list[tuple[datetime, float]]) -> str:
    panel = chart.SitePanel("a", 10.0, load, [chart.Command("curtail", "succeeded", start)])
    return chart.render(chart.DispatchChart("d", "P", UTC, start, end, [panel]))


def tick_labels(svg: str) -> list[str]:
    root = ElementTree.fromstring(svg)
    texts = root.iter("{http://www.w3.org/2000/svg}text")
    return [t.text or "" for t in texts if t.get("text-anchor") == "middle"]


def test_a_chart_of_any_span_has_a_dozen_time_labels_at_most() -> None:
    """A dispatch from 1901 to 8999 never finished (a label every 15 minutes)."""
    for start, end in [
        (datetime(1901, 1, 1, tzinfo=UTC), datetime(8999, 12, 31, tzinfo=UTC)),
        (datetime(2026, 1, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC)),
        (datetime(2026, 1, 1, 9, tzinfo=UTC), datetime(2026, 1, 1, 10, tzinfo=UTC)),
    ]:
        labels = tick_labels(a_chart(start, end, []))
        assert 3 <= len(labels) <= chart.MOST_TICKS + 1, labels
    hour = a_chart(datetime(2026, 1, 1, 9, tzinfo=UTC), datetime(2026, 1, 1, 10, tzinfo=UTC), [])
    assert tick_labels(hour)[:2] == ["08:00", "08:15"]  # from the hour before, every 15 minutes


def test_a_year_of_readings_is_drawn_in_a_bounded_number_of_points_drop_included() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    minutes = [start + timedelta(minutes=m) for m in range(366 * 24 * 60)]
    load = [(at, 0.0 if n == 300_000 else 100.0) for n, at in enumerate(minutes)]
    svg = a_chart(start, minutes[-1], load)
    (line,) = ElementTree.fromstring(svg).iter("{http://www.w3.org/2000/svg}polyline")
    points = line.get("points", "").split()
    assert len(points) <= 2 * chart.BUCKETS and len(svg) < 100_000
    lowest_y = max(float(p.split(",")[1]) for p in points)  # y grows downwards
    assert lowest_y > min(float(p.split(",")[1]) for p in points)  # the one drop is drawn
    legend = [g for g in ElementTree.fromstring(svg).iter() if g.get("class") == "legend"]
    assert len(legend) == 5
