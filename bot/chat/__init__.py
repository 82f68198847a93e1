"""The chat engine: conversations and routing, the account behind an update, the engine that runs one update
per transaction, and the menu."""
