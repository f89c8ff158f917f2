"""The web console: read-only pages for people (now and next, a dispatch, a site, the history,
the calendar), served by `etl serve` beside its webhook and by `etl console` alone. Only these
two commands import it (and so Jinja2)."""
