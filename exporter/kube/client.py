"""The Kubernetes API client: credentials, deadlines, and the one error type its callers handle.

The client is lightkube's `AsyncClient` (typed models, list and watch with resource versions). Its
credentials come, in this order, from the kubeconfig file that `discovery.kubernetes.kubeconfig` names,
from the pod's service account when `KUBERNETES_SERVICE_HOST` is set (in-cluster), and from the file
that `$KUBECONFIG` names. Every request has a deadline (`timeout_s` for connecting, sending, each read
and the wait for a pooled connection); a watch has no read deadline of its own, so its callers bound it.

`api_error()` turns whatever a call raised into a `KubeError` whose `reason` is a short, fixed label
value (`forbidden`, `unauthorized`, `expired`, `not_found`, `timeout`, `unavailable`, `server_error`,
`bad_response`): the callers count and log it without knowing the client library.
"""

from __future__ import annotations

import os
from pathlib import Path

import httpx2
import msgspec
from lightkube import ApiError, AsyncClient, ConfigError, KubeConfig

SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")


class KubeError(Exception):
    """A Kubernetes API call failed; `reason` becomes the `reason` label of an error counter, `code` is
    the HTTP status where the API server answered one."""

    def __init__(self, reason: str, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.code = code


class KubeConfigError(Exception):
    """No usable credentials: the message says which source was tried and why it failed."""


def kube_config(kubeconfig: Path | None, service_account: Path = SERVICE_ACCOUNT) -> KubeConfig:
    """The credentials to reach the API server: the named kubeconfig, else in-cluster, else $KUBECONFIG."""
    try:
        if kubeconfig is not None:
            return KubeConfig.from_file(kubeconfig)
        if os.environ.get("KUBERNETES_SERVICE_HOST"):
            if not os.environ.get("KUBERNETES_SERVICE_PORT"):
                raise KubeConfigError("KUBERNETES_SERVICE_HOST is set but KUBERNETES_SERVICE_PORT is not")
            return KubeConfig.from_service_account(service_account)
        env = os.environ.get("KUBECONFIG", "")
        if not env:
            raise KubeConfigError(
                "no Kubernetes credentials: not in a cluster (KUBERNETES_SERVICE_HOST is not set), "
                "discovery.kubernetes.kubeconfig is null and KUBECONFIG is not set"
            )
        return KubeConfig.from_file(env.split(os.pathsep)[0])
    except (ConfigError, OSError, ValueError, KeyError, TypeError) as e:
        # ConfigError: a missing file or context; the others: a file that is not a kubeconfig
        raise KubeConfigError(f"cannot load Kubernetes credentials: {e}") from None


def open_client(kubeconfig: Path | None, timeout_s: float) -> AsyncClient:
    """A client of the API server with a deadline of `timeout_s` on every request (a watch's reads
    excepted). Raises `KubeConfigError` when no credentials can be loaded."""
    config = kube_config(kubeconfig)
    try:
        # trust_env=False: no proxy or CA bundle from the environment; the kubeconfig says how to connect
        return AsyncClient(config, timeout=httpx2.Timeout(timeout_s), trust_env=False)
    except (ConfigError, OSError, ValueError) as e:  # e.g. a certificate file that cannot be read
        raise KubeConfigError(f"cannot set up the Kubernetes client: {e}") from None


API_ERRORS = (ApiError, httpx2.HTTPError, TimeoutError, msgspec.DecodeError)
"""What a client call (or a deadline around one) raises when the API server fails; `api_error()` maps it."""

_REASONS = {401: "unauthorized", 403: "forbidden", 404: "not_found", 410: "expired", 429: "throttled"}


def api_error(e: Exception) -> KubeError:
    """The `KubeError` for one of `API_ERRORS`."""
    if isinstance(e, ApiError):
        code = e.status.code or e.response.status_code
        reason = _REASONS.get(code, "server_error" if code >= 500 else "api_error")
        return KubeError(reason, f"API server answered {code}: {e.status.message}"[:300], code)
    if isinstance(e, TimeoutError | httpx2.TimeoutException):
        return KubeError("timeout", "the API server did not answer in time")
    if isinstance(e, httpx2.HTTPStatusError):  # a watch's refusal: lightkube does not read its Status
        code = e.response.status_code
        reason = _REASONS.get(code, "server_error" if code >= 500 else "api_error")
        request = f"{e.request.method} {e.request.url.path}"
        return KubeError(reason, f"API server answered {code} to {request}", code)
    if isinstance(e, httpx2.TransportError):
        return KubeError("unavailable", f"cannot reach the API server: {type(e).__name__}: {e}"[:300])
    return KubeError("bad_response", f"the API server sent what is not a Kubernetes object: {e}"[:300])
