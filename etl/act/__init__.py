"""From the store to the sites: plan the due actions, claim them, run the handler once per
action, and record each outcome."""
