"""The clinic console (``/clinic/…``): server-rendered pages for the desk, signed-in staff only."""
