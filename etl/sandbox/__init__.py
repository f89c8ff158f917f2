"""An emulator of the Voltus API on loopback, with its scenarios (the built-in one and Voltus's
certification tests)."""
