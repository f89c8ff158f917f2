"""The jobs on top of every layer: the runner of the minutely job and of the loop of `etl run
--every` and `etl serve` (fetch, act, send, tell), and the notifier, which tells people of what
the event log and `etl status` find."""
