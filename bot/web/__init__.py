"""The web edge: webhook routes and the typed keys of what the application holds."""
