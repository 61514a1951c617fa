"""Generated stubs of the kubelet pod-resources API v1 (`scripts/gen-podresources`; do not edit).

`api.proto` is vendored from Kubernetes with its provenance and license notice in its header.
"""
