"""Accounting: pure functions and small classes that turn readings into figures (no I/O, clock passed in)."""
