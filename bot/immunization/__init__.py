"""Immunization knowledge: the vaccines, the national schedule and the next-dose forecaster."""
