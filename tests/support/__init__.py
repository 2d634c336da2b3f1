"""Real parts for tests: SMTP relays, databases and mailgate servers on loopback."""
