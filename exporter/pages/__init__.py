"""Prometheus text pages read over HTTP: one fetcher and one parser for every page tokenwatt reads.

Both the inference servers' pages (the tokens layer) and a scraped dcgm-exporter (the energy layer)
go through this package, so a page fails the same way, with the same reasons, wherever it comes from.
"""
