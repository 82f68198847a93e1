"""The clinic desk: taking a queue number (取号) for a scanned code."""
