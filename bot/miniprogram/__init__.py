"""The mini programs' login sessions, and who is the same person across a platform's apps."""
