"""The provincial registry import: validate, stage and apply on the effective date."""
