"""Faithful fakes of the platforms, for development and tests (refused in production)."""
