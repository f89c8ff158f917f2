"""From the API into the store: what changed (diff, pure), the fetch of dispatches, programs and
sites (dispatches), and the metered load around dispatches (telemetry)."""
