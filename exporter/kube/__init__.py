"""The Kubernetes API: the client (`client`) and label selectors (`selector`).

The package itself imports nothing, so that checking a config's label selector does not load the
client library.
"""
