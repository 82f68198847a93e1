"""Clinic staff: accounts, argon2 passwords, sign-in with lock-out, console sessions, CSRF and roles."""
