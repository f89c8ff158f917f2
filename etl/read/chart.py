"""A picture of one dispatch (`etl audit --dispatch ID --chart FILE.svg`): one panel per site,
its metered kW around the dispatch, the dispatch shaded, the baseline and target lines, and a
marker for each curtail and restore, times in the program's zone (or the console page's).

A dispatch of several sites has a first panel of their sum, the fleet's; and at most MOST_PANELS
sites are drawn, those that most need an eye (`_notable`), the others counted ("and 4,980 more
sites"): 5,000 panels were a picture 1,250,000 pixels tall, and seconds of queries.

The view is the dispatch with its own length either side (VIEW_MARGIN), so that a 3-minute
dispatch is not a sliver of the telemetry window; the baseline is still the mean of the hour
before the start, drawn or not. Until Voltus's readings of the window are fetched (after the
end), a site's load is that of its readings queued for Voltus, if etl sends them: live while
the dispatch is under way.

Hand-written SVG: a few lines, rectangles and markers need no plotting library (matplotlib
would cost this command half a second to import, and etl a large dependency); any browser opens
and prints the file.
"""

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, tzinfo
from typing import Any
from xml.sax.saxutils import escape

from sqlalchemy import ColumnElement, Connection, Engine, Select, and_, exists, func, or_, select

from etl.base.errors import ConfigError
from etl.base.logs import counted
from etl.base.timeutil import zone_or_utc
from etl.base.vocabulary import ActionState, OutboxEndpoint, ReadingUnits
from etl.read.reports import dispatch_performance, meter_readings, site_meters
from etl.store.db import read_transaction
from etl.store.schema import (
    BASELINE_BEFORE,
    TELEMETRY_INTERVAL,
    actions,
    dispatch_sites,
    dispatches,
    programs,
    telemetry_outbox,
)

__all__ = [
    "BUCKETS",
    "FAILED",
    "MOST_PANELS",
    "MOST_TICKS",
    "Command",
    "DispatchChart",
    "SitePanel",
    "chart_data",
    "render",
]

WIDTH, PANEL_HEIGHT, MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, HEADER = 900, 220, 60, 20, 30, 64
MOST_TICKS = 12  # time labels on an axis, whatever the span
# a site's load is drawn with at most this many buckets, each its lowest and highest reading (so
# that a drop stays visible however long the window): a year of minutes is not 500,000 points
BUCKETS = 400
MOST_PANELS = 20  # sites drawn, beside the fleet's sum
MINUTE, DAY = timedelta(minutes=1), timedelta(days=1)
TICK_STEPS = [MINUTE * n for n in (1, 5, 15, 30, 60, 120, 180, 360, 720)] + [
    DAY * n for n in (1, 2, 7, 14, 30, 91, 182, 365, 730, 1826, 3652, 36524, 365242)
]
# the time drawn either side of the dispatch: its own length, within these bounds
VIEW_MARGIN = (timedelta(minutes=5), DAY)
COLORS = {"succeeded": "#2e7d32", "failed": "#c62828", "missed": "#ef6c00"}
FAILED = (ActionState.FAILED, ActionState.MISSED, ActionState.RETRYING)  # it failed its site
QUOTE = {'"': "&quot;"}  # for escape() in an attribute: an id may hold a quote
CLIP = "view"  # the id of the view's clip path


Sites = Select[tuple[str]] | list[str]  # the sites whose load is summed: a query of ids, or ids


@dataclass(frozen=True)
class Command:
    kind: str  # curtail | restore
    state: str
    at: datetime


@dataclass(frozen=True)
class SitePanel:
    site_id: str
    commitment_kw: float | None
    load: list[tuple[datetime, float]]  # (interval end, kW), in time order
    commands: list[Command]
    live: bool = False  # its load is that of its readings queued for Voltus, not Voltus's
    summed: int = 0  # the fleet's panel: how many sites' load it sums (0: one site's own)
    read: int = 0  # the fleet's panel: how many of those sites its readings are of


@dataclass(frozen=True)
class DispatchChart:
    dispatch_id: str
    program_name: str
    zone: tzinfo
    start: datetime
    end: datetime
    panels: list[SitePanel]  # the fleet's first, if the dispatch has several sites
    more: int = 0  # its sites not drawn

    def baseline(self, panel: SitePanel) -> float | None:
        """The mean load of the hour before the start, as the view dispatch_performance has it."""
        before = [kw for at, kw in panel.load if self.start - BASELINE_BEFORE < at <= self.start]
        return sum(before) / len(before) if before else None

    @property
    def view(self) -> tuple[datetime, datetime]:
        """The first and last time drawn: the dispatch is a third of the width (more, under 5
        minutes), and an hour-long one shows its whole baseline hour."""
        low, high = VIEW_MARGIN
        margin = min(max(self.end - self.start, low), high)
        return self.start - margin, self.end + margin


def chart_data(engine: Engine, dispatch_id: str) -> DispatchChart:
    d, p, ds = dispatches.c, programs.c, dispatch_sites.c
    with read_transaction(engine) as conn:
        head = conn.execute(
            select(d.start_time, d.end_time, p.name, p.timezone)
            .join(programs, p.id == d.program_id)
            .where(d.id == dispatch_id)
        ).first()
        if head is None:
            raise ConfigError(f"no dispatch {dispatch_id!r} in the store", "see etl audit")
        end = head.end_time or head.start_time + timedelta(hours=1)
        chart = DispatchChart(
            dispatch_id, head.name, zone_or_utc(head.timezone), head.start_time, end, []
        )
        first, last = chart.view
        first = min(first, chart.start - BASELINE_BEFORE)  # the baseline's hour, drawn or not
        # the fleet: the sites the dispatch lists now, whose commitments make its target
        listed = (ds.dispatch_id == dispatch_id, ds.removed_at.is_(None))
        count, committed = conn.execute(
            select(func.count(), func.sum(ds.commitment_kw)).where(*listed)
        ).one()
        panels = []
        if count > 1:
            load, live, read = _load(conn, select(ds.site_id).where(*listed), first, last)
            panels.append(SitePanel("", committed, load, [], live, summed=count, read=read))
        notable = _notable(conn, dispatch_id)
        for site_id, commitment_kw in notable:
            load, live, _ = _load(conn, [site_id], first, last)
            commands = _site_commands(conn, dispatch_id, site_id)
            panels.append(SitePanel(site_id, commitment_kw, load, commands, live))
    return replace(chart, panels=panels, more=count - len(notable))


def _notable(conn: Connection, dispatch_id: str) -> list[tuple[str, float | None]]:
    """The MOST_PANELS sites of the dispatch that most need an eye, and their commitments: those
    an action of which failed (or is retrying, or was missed), then those furthest short of
    their commitment by their metered response (dispatch_performance, once measured), then by
    id. Read apart and ranked here: joined to the view, SQLite computed the view again for each
    site (8 s for 5,000)."""
    a, ds, v = actions.c, dispatch_sites.c, dispatch_performance.c
    failed = set(
        conn.execute(
            select(a.site_id).where(a.dispatch_id == dispatch_id, a.state.in_(FAILED))
        ).scalars()
    )
    shortfall = dict(
        conn.execute(
            select(v.site_id, v.commitment_kw - v.delivered_kw).where(v.dispatch_id == dispatch_id)
        ).all()
    )
    its_sites = conn.execute(
        select(ds.site_id, ds.commitment_kw).where(ds.dispatch_id == dispatch_id)
    ).all()

    def need(site: Any) -> tuple[bool, bool, float, str]:
        short = shortfall.get(site.site_id)
        return site.site_id not in failed, short is None, -(short or 0.0), site.site_id

    ranked = sorted(its_sites, key=need)[:MOST_PANELS]
    return [(site.site_id, site.commitment_kw) for site in ranked]


Load = tuple[list[tuple[datetime, float]], int]  # (interval end, kW) in time order; sites read


def _load(
    conn: Connection, site_ids: Sites, first: datetime, last: datetime
) -> tuple[list[tuple[datetime, float]], bool, int]:
    """The summed load of these sites, (interval end, kW) in time order, by Voltus's readings;
    else by their readings queued for Voltus, if any (live: True); and how many of the sites
    those readings are of."""
    metered, read = _metered_load(conn, site_ids, first, last)
    if metered:
        return metered, False, read
    queued, read = _queued_load(conn, site_ids, first, last)
    return queued, bool(queued), read


def _summed(conn: Connection, at: Any, kw: Any, site_id: Any, where: list[Any]) -> Load:
    """The sum of `kw` per interval end `at` of the rows `where` picks, and how many sites."""
    rows = conn.execute(select(at, func.sum(kw)).where(*where).group_by(at).order_by(at)).all()
    read = conn.execute(select(func.count(site_id.distinct())).where(*where)).scalar_one()
    return [(end, total) for end, total in rows], read


def _metered_load(conn: Connection, site_ids: Sites, first: datetime, last: datetime) -> Load:
    t = meter_readings.c  # a site's load: its POI meter, or its load meters (migration 0017)
    where = [
        t.site_id.in_(site_ids),
        t.role == "load",
        t.interval_seconds == TELEMETRY_INTERVAL,
        t.interval_end > first,
        t.interval_end <= last,
    ]
    return _summed(conn, t.interval_end, t.kw, t.site_id, where)


def _queued_load(conn: Connection, site_ids: Sites, first: datetime, last: datetime) -> Load:
    """The load by the sites' readings queued for Voltus (sent or not), by the rule of the view
    meter_readings: a site's POI meter alone if it has one, else every meter of it but its
    generators and batteries (a reading of meter '' is its only meter's)."""
    m, o = site_meters.c, telemetry_outbox.c
    has_poi = exists().where(m.site_id == o.site_id, m.asset_type == "poi")

    def its_meter_is(*kinds: str) -> ColumnElement[bool]:
        return exists().where(
            m.site_id == o.site_id, m.meter_id == o.meter_id, m.asset_type.in_(kinds)
        )

    counted = or_(
        and_(has_poi, or_(o.meter_id == "", its_meter_is("poi"))),
        and_(~has_poi, ~its_meter_is("generator", "battery")),
    )
    where = [
        o.site_id.in_(site_ids),
        o.endpoint == OutboxEndpoint.TELEMETRY,
        o.units == ReadingUnits.KW,
        o.interval_end > first,
        o.interval_end <= last,
        counted,
    ]
    return _summed(conn, o.interval_end, o.value, o.site_id, where)


def _site_commands(conn: Connection, dispatch_id: str, site_id: str) -> list[Command]:
    """Each curtail and restore that succeeded, failed or was missed, at the time it did."""
    a = actions.c
    rows = conn.execute(
        select(a.kind, a.state, func.coalesce(a.finished_at, a.created_at))
        .where(a.dispatch_id == dispatch_id, a.site_id == site_id, a.state.in_(list(COLORS)))
        .order_by(a.id)
    ).all()
    return [Command(kind, state, at) for kind, state, at in rows]


def render(chart: DispatchChart) -> str:
    """The SVG document: a header, then one panel per site drawn."""
    height = HEADER + len(chart.panels) * (PANEL_HEIGHT + MARGIN_TOP) + 10
    local = chart.start.astimezone(chart.zone)
    title = (
        f"Dispatch {chart.dispatch_id} ({chart.program_name}): "
        f"{local:%Y-%m-%d %H:%M} to {chart.end.astimezone(chart.zone):%H:%M} "
        f"({local:%Z}, UTC{local:%z})"
    )
    plot_width = WIDTH - MARGIN_LEFT - MARGIN_RIGHT
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'font-family="sans-serif" font-size="11">',
        f"<title>{escape(title)}</title>",
        # the load and the markers are drawn whole, and shown within the view only
        f'<defs><clipPath id="{CLIP}"><rect x="{MARGIN_LEFT}" y="0" width="{plot_width}" '
        f'height="{height}"/></clipPath></defs>',
        '<rect width="100%" height="100%" fill="white"/>',
        f'<text x="{MARGIN_LEFT}" y="22" font-size="14">{escape(title)}</text>',
        *_legend(40),
    ]
    if chart.more:
        parts.append(
            f'<text class="more" x="{WIDTH - MARGIN_RIGHT}" y="44" text-anchor="end">'
            f"and {counted(chart.more, 'more site')}</text>"
        )
    for index, panel in enumerate(chart.panels):
        top = HEADER + index * (PANEL_HEIGHT + MARGIN_TOP)
        parts += _panel(chart, panel, top)
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def _panel(chart: DispatchChart, panel: SitePanel, top: float) -> list[str]:
    first, last = chart.view
    span = (last - first).total_seconds()
    plot_width = WIDTH - MARGIN_LEFT - MARGIN_RIGHT
    baseline = chart.baseline(panel)
    target = None
    if baseline is not None and panel.commitment_kw is not None:
        target = baseline - panel.commitment_kw
    values = [kw for _, kw in panel.load] + [v for v in (baseline, target) if v is not None]
    low, high = min([0.0, *values]), max([1.0, *values]) * 1.1

    def x(moment: datetime) -> float:
        return MARGIN_LEFT + (moment - first).total_seconds() / span * plot_width

    def y(kw: float) -> float:
        return top + MARGIN_TOP + (high - kw) / (high - low) * (PANEL_HEIGHT - MARGIN_TOP)

    label = _label(panel, baseline)
    bottom = y(low)
    group = (
        'class="panel fleet"'
        if panel.summed
        else f'class="panel" data-site="{escape(panel.site_id, QUOTE)}"'
    )
    parts = [
        f"<g {group}>",
        f'<text x="{MARGIN_LEFT}" y="{top + 18}" font-size="12">{escape(label)}</text>',
        f'<rect class="window" x="{x(chart.start):.1f}" y="{y(high):.1f}" '
        f'width="{x(chart.end) - x(chart.start):.1f}" height="{bottom - y(high):.1f}" '
        'fill="#1565c0" fill-opacity="0.08"/>',
        f'<line x1="{MARGIN_LEFT}" y1="{bottom:.1f}" x2="{WIDTH - MARGIN_RIGHT}" '
        f'y2="{bottom:.1f}" stroke="#999"/>',
    ]
    parts += _axes(chart, x, y, low, high, bottom)
    for value, name, dash in ((baseline, "baseline", "6 4"), (target, "target", "2 3")):
        if value is not None:
            parts.append(
                f'<line class="{name}" x1="{MARGIN_LEFT}" y1="{y(value):.1f}" '
                f'x2="{WIDTH - MARGIN_RIGHT}" y2="{y(value):.1f}" stroke="#555" '
                f'stroke-dasharray="{dash}"><title>{name} {value:.1f} kW</title></line>'
            )
    if panel.load:
        drawn = downsample(panel.load, first, span)
        points = " ".join(f"{x(at):.1f},{y(kw):.1f}" for at, kw in drawn)
        parts.append(
            f'<polyline class="load" points="{points}" fill="none" stroke="#1565c0" '
            f'clip-path="url(#{CLIP})"/>'
        )
    for command in panel.commands:
        parts.append(_marker(command, x(command.at), top + MARGIN_TOP, bottom, chart.zone))
    parts.append("</g>")
    return parts


def _label(panel: SitePanel, baseline: float | None) -> str:
    """`site a: commitment 10 kW, baseline 98.2 kW`, and what the reader must know of its load."""
    commitment = f"{panel.commitment_kw:g} kW" if panel.commitment_kw is not None else "unknown"
    what = f"site {panel.site_id}"
    if panel.summed:
        what = f"all {panel.summed:,} sites, summed"
        if panel.load and panel.read < panel.summed:  # its sum is short of the others' load
            what = f"{panel.summed:,} sites, summed: {panel.read:,} of them with readings"
    label = f"{what}: commitment {commitment}"
    if baseline is not None:
        label += f", baseline {baseline:.1f} kW"
    if panel.live:
        label += " (live: its readings queued for Voltus)"
    if not panel.load:
        label += " (no telemetry stored: etl fetch --telemetry)"
    return label


def _axes(
    chart: DispatchChart,
    x: Callable[[datetime], float],
    y: Callable[[float], float],
    low: float,
    high: float,
    bottom: float,
) -> list[str]:
    """Time ticks at a step that gives at most MOST_TICKS of them, in the chart's zone (a date
    for steps of a day or more); kW at the bottom and the top."""
    parts = []
    first, last = chart.view
    step = next((s for s in TICK_STEPS if (last - first) / s <= MOST_TICKS), TICK_STEPS[-1])
    shown = "%H:%M" if step < DAY else "%Y-%m-%d"
    for tick in _ticks(first.astimezone(chart.zone), last, step):
        parts.append(
            f'<text x="{x(tick):.1f}" y="{bottom + 14:.1f}" text-anchor="middle">'
            f"{tick:{shown}}</text>"
        )
    for kw in (low, high):
        parts.append(
            f'<text x="{MARGIN_LEFT - 6}" y="{y(kw) + 4:.1f}" text-anchor="end">{kw:.0f} kW</text>'
        )
    return parts


def _ticks(first: datetime, last: datetime, step: timedelta) -> list[datetime]:
    """The round times from `first` to `last` every `step`: minutes and hours on their multiples
    of the step, days from midnight."""
    if step < DAY:
        minutes = int(step / MINUTE)
        of_day = first.hour * 60 + first.minute
        tick = first.replace(hour=0, minute=0, second=0, microsecond=0)
        tick += MINUTE * (of_day - of_day % minutes)
    else:
        tick = first.replace(hour=0, minute=0, second=0, microsecond=0)
    ticks = []
    while tick <= last:
        if tick >= first:
            ticks.append(tick)
        try:
            tick += step
        except OverflowError:  # past the year 9999
            break
    return ticks


def downsample(
    load: list[tuple[datetime, float]], first: datetime, span: float
) -> list[tuple[datetime, float]]:
    """At most two readings per bucket of the span, its lowest and its highest, in time order:
    the shape of the load, drops included, in a bounded number of points."""
    if len(load) <= 2 * BUCKETS:
        return load
    buckets: dict[int, list[tuple[datetime, float]]] = {}
    for at, kw in load:
        buckets.setdefault(int((at - first).total_seconds() / span * BUCKETS), []).append((at, kw))
    drawn = []
    for readings in buckets.values():
        low, high = min(readings, key=lambda r: r[1]), max(readings, key=lambda r: r[1])
        drawn += sorted({low, high})
    return drawn


def _legend(y: float) -> list[str]:
    """What the lines and markers are: metered load, baseline, target, curtail and restore."""
    parts, at = [], MARGIN_LEFT
    for name, mark in (
        ("metered load", '<line x1="0" y1="0" x2="18" y2="0" stroke="#1565c0"/>'),
        ("baseline", '<line x1="0" y1="0" x2="18" y2="0" stroke="#555" stroke-dasharray="6 4"/>'),
        ("target", '<line x1="0" y1="0" x2="18" y2="0" stroke="#555" stroke-dasharray="2 3"/>'),
        ("curtail sent", f'<polygon points="4,-4 14,-4 9,4" fill="{COLORS["succeeded"]}"/>'),
        ("restore sent", f'<polygon points="4,4 14,4 9,-4" fill="{COLORS["succeeded"]}"/>'),
    ):
        parts.append(
            f'<g class="legend" transform="translate({at},{y})">{mark}'
            f'<text x="24" y="4">{name}</text></g>'
        )
        at += 130
    return parts


def _marker(command: Command, at_x: float, top: float, bottom: float, zone: tzinfo) -> str:
    """A vertical line at the command's time; a triangle down for a curtail, up for a restore."""
    color = COLORS[command.state]
    tip = f"{bottom - 8:.1f}" if command.kind == "curtail" else f"{bottom - 16:.1f}"
    base = f"{bottom - 16:.1f}" if command.kind == "curtail" else f"{bottom - 8:.1f}"
    when = command.at.astimezone(zone)
    return (
        f'<g class="command {command.kind} {command.state}" clip-path="url(#{CLIP})">'
        f"<title>{command.kind} {command.state} at {when:%H:%M:%S}</title>"
        f'<line x1="{at_x:.1f}" y1="{top:.1f}" x2="{at_x:.1f}" y2="{bottom:.1f}" '
        f'stroke="{color}" stroke-dasharray="3 2"/>'
        f'<polygon points="{at_x - 5:.1f},{base} {at_x + 5:.1f},{base} {at_x:.1f},{tip}" '
        f'fill="{color}"/></g>'
    )
