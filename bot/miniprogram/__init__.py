"""The mini programs' own rules: subscription consents, login sessions, and who is the same person across apps."""
