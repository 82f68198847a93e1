"""Certificates: what may be claimed, claiming, family grants, who may see what."""
