"""What every room uses: settings, errors, logging, redaction of secrets, and time."""
