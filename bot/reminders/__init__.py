"""Dose reminders: planned from the forecast, sent as template messages to the family."""
