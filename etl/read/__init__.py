"""For people and monitoring: reports, the audit trail, the status check, metrics, and charts."""
