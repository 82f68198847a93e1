"""Core services and vocabulary every other package may use.

Settings, the database, keys and the vault, audit, logs, metrics, China time, the job scheduler,
validators, the platform-neutral update and reply types, and the message catalogue.
"""
