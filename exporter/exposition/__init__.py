"""Exposition: the accounting's figures as Prometheus metrics over HTTP."""
