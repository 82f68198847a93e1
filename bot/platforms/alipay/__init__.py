"""Alipay: the inbound gateway protocol (forms, RSA2, signed acks), the API client and its sender, RSA2 signing."""
