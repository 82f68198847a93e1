"""The outbox: every message vaxbot sends is a row first, delivered by a worker with retries and per-platform rules."""
