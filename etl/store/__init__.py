"""The database: its engine and transactions, the schema, migrations, and the modules that own
the queries of one table each (the event log, fetch runs, the store's binding to an account)."""
