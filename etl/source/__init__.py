"""What Voltus sends: the HTTP client, and the typed, validated records made of its answers."""
