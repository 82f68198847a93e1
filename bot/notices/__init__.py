"""Clinic notices: a closure, a rescheduling, stock arriving or free text, told once to each family, with a report."""
