"""etl: a persistent ETL and event store for Voltus demand-response dispatches."""

__version__ = "0.1.0"
