"""The device edge: handlers and meter sources that speak to equipment (the optional extras)."""
