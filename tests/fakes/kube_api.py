"""A Kubernetes API server for tests: real HTTP on loopback (aiohttp), generic over resources.

What it imitates, from the API server's REST conventions (API concepts, "Efficient detection of
changes", "Resource versions"; meta/v1 Status and WatchEvent):
- Paths `/api/v1/...` for the core group and `/apis/GROUP/VERSION/...` for the others; namespaced
  resources at `namespaces/NS/PLURAL[/NAME]` and, for list and watch, across namespaces at `PLURAL`;
  cluster-scoped resources at `PLURAL[/NAME]`.
- One resource version counter for the whole store (as etcd's revision): every write takes the next
  one, and it is the object's `metadata.resourceVersion`; a list answers `KIND` + `List` with the
  current one in `metadata.resourceVersion`, and its items without `kind` and `apiVersion`.
- `labelSelector` (`k=v`, `k==v`, `k!=v`, `k`, `!k`, `k in (a,b)`, `k notin (a,b)`) and `fieldSelector`
  (`metadata.name`, `metadata.namespace`, `spec.nodeName`, `status.phase`, and ResourceSlices'
  `spec.driver`, with `=`, `==`, `!=`) on list
  and watch; another field answers 400 BadRequest.
- `?watch=true`: newline-delimited JSON events `{"type": ..., "object": ...}`. Without a resource
  version (or "0") it starts with an ADDED event per matching object; with one, it sends the changes
  after it, and for a version older than the last compaction an `ERROR` event carrying a 410 `Expired`
  Status, then ends (as the API server does: the HTTP status is still 200). An object that stops
  matching the selectors is a DELETED event, one that starts matching an ADDED. `allowWatchBookmarks=true`
  gets a BOOKMARK (an object of the kind with only `metadata.resourceVersion`) on `bookmark()`.
  `timeoutSeconds` ends the watch after that long; `drop_watches()` ends every open one.
- Bearer tokens, each with the verbs it may use per resource (RBAC's `PLURAL` or `PLURAL.GROUP`): an
  unknown or missing token answers 401 `Unauthorized`, a missing permission 403 `Forbidden` with the
  API server's message; an unknown object 404 `NotFound`. `fail_next(code)` makes the next requests
  answer a 5xx Status; `stop()` then `start()` on the same port is an API server that went away.
"""

from __future__ import annotations

import asyncio
import copy
import json
import re
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import web

from tests.conftest import free_port

Obj = dict[str, Any]


@dataclass(frozen=True)
class Kind:
    group: str
    """"" for the core group."""
    version: str
    plural: str
    kind: str
    namespaced: bool

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def rbac_resource(self) -> str:
        """The name RBAC rules and this fake's permissions use: `pods`, `replicasets.apps`."""
        return f"{self.plural}.{self.group}" if self.group else self.plural


PODS = Kind("", "v1", "pods", "Pod", True)
REPLICASETS = Kind("apps", "v1", "replicasets", "ReplicaSet", True)
DEPLOYMENTS = Kind("apps", "v1", "deployments", "Deployment", True)
STATEFULSETS = Kind("apps", "v1", "statefulsets", "StatefulSet", True)
JOBS = Kind("batch", "v1", "jobs", "Job", True)
RESOURCESLICES = Kind("resource.k8s.io", "v1", "resourceslices", "ResourceSlice", False)
RESOURCESLICES_V1BETA1 = Kind("resource.k8s.io", "v1beta1", "resourceslices", "ResourceSlice", False)
KINDS = (PODS, REPLICASETS, DEPLOYMENTS, STATEFULSETS, JOBS, RESOURCESLICES, RESOURCESLICES_V1BETA1)

FIELDS: Mapping[str, Callable[[Obj], str]] = {
    "metadata.name": lambda o: str(o["metadata"].get("name", "")),
    "metadata.namespace": lambda o: str(o["metadata"].get("namespace", "")),
    "spec.nodeName": lambda o: str(o.get("spec", {}).get("nodeName", "")),
    "spec.driver": lambda o: str(o.get("spec", {}).get("driver", "")),  # ResourceSlices
    "status.phase": lambda o: str(o.get("status", {}).get("phase", "")),
}


class ApiStatus(Exception):
    """A request that ends in a meta/v1 Status, as the API server answers failures."""

    def __init__(self, code: int, reason: str, message: str, details: Obj | None = None) -> None:
        super().__init__(message)
        self.code, self.reason, self.details = code, reason, details

    def body(self) -> Obj:
        status: Obj = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": str(self),
            "reason": self.reason,
            "code": self.code,
        }
        if self.details is not None:
            status["details"] = self.details
        return status

    def response(self) -> web.Response:
        return _json(self.body(), self.code)


# --- selectors ---------------------------------------------------------------------------------------

_SET_TERM = re.compile(r"^\s*([\w./-]+)\s+(in|notin)\s+\(([^)]*)\)\s*$")
_EQ_TERM = re.compile(r"^\s*([\w./-]+)\s*(==|=|!=)\s*([\w.-]*)\s*$")
_EXISTS_TERM = re.compile(r"^\s*(!?)\s*([\w./-]+)\s*$")

Match = Callable[[Mapping[str, str]], bool]


def _split_terms(selector: str) -> list[str]:
    """Terms separated by commas outside parentheses."""
    terms, depth, start = [], 0, 0
    for i, ch in enumerate(selector):
        depth += ch == "("
        depth -= ch == ")"
        if ch == "," and depth == 0:
            terms.append(selector[start:i])
            start = i + 1
    terms.append(selector[start:])
    return [t for t in terms if t.strip()]


def _label_term(term: str) -> Match:
    if m := _SET_TERM.match(term):
        key, op, values = m.group(1), m.group(2), {v.strip() for v in m.group(3).split(",")}
        if op == "in":
            return lambda labels: labels.get(key) in values
        return lambda labels: labels.get(key) not in values
    if m := _EQ_TERM.match(term):
        key, op, value = m.groups()
        if op == "!=":
            return lambda labels: labels.get(key) != value
        return lambda labels: labels.get(key) == value
    if m := _EXISTS_TERM.match(term):
        negated, key = m.group(1) == "!", m.group(2)
        return lambda labels: (key in labels) != negated
    raise ApiStatus(400, "BadRequest", f"unable to parse requirement: {term!r}")


def _field_term(term: str) -> Callable[[Obj], bool]:
    m = _EQ_TERM.match(term)
    if m is None:
        raise ApiStatus(400, "BadRequest", f"invalid field selector: {term!r}")
    name, op, value = m.groups()
    read = FIELDS.get(name)
    if read is None:
        raise ApiStatus(400, "BadRequest", f'field label not supported: "{name}"')
    if op == "!=":
        return lambda o: read(o) != value
    return lambda o: read(o) == value


def selector(query: Mapping[str, str]) -> Callable[[Obj], bool]:
    """The objects a request's `labelSelector` and `fieldSelector` select."""
    labels = [_label_term(t) for t in _split_terms(query.get("labelSelector", ""))]
    fields = [_field_term(t) for t in _split_terms(query.get("fieldSelector", ""))]

    def matches(o: Obj) -> bool:
        obj_labels = o["metadata"].get("labels") or {}
        return all(t(obj_labels) for t in labels) and all(t(o) for t in fields)

    return matches


# --- the store and the server ---------------------------------------------------------------------------


@dataclass
class _Event:
    rv: int
    type: str
    obj: Obj
    previous: Obj | None


@dataclass
class _Watcher:
    kind: Kind
    namespace: str | None
    matches: Callable[[Obj], bool]
    bookmarks: bool
    request: web.Request
    queue: asyncio.Queue[_Event | None] = field(default_factory=asyncio.Queue)


@dataclass
class Request:
    """A request the fake answered: for tests that count lists, watches and gets."""

    verb: str
    resource: str
    namespace: str | None
    name: str | None
    query: dict[str, str]
    code: int


def _json(body: Obj, status: int = 200) -> web.Response:
    """A JSON answer with the API server's bare `Content-Type: application/json` (no charset)."""
    return web.Response(body=json.dumps(body).encode(), status=status, content_type="application/json")


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class FakeKubeApi:
    """The API server. `put`, `delete` and the other methods change it as controllers would."""

    def __init__(self, kinds: Iterable[Kind] = KINDS) -> None:
        self.kinds = {(k.group, k.version, k.plural): k for k in kinds}
        self.objects: dict[Kind, dict[tuple[str, str], Obj]] = {k: {} for k in self.kinds.values()}
        self.events: dict[Kind, list[_Event]] = {k: [] for k in self.kinds.values()}
        self.revision = 100
        self.compacted = 0
        """Watches from a resource version below this one are answered 410 Expired."""
        self.tokens: dict[str, tuple[str, dict[str, set[str]]]] = {}
        self.requests: list[Request] = []
        self.failures: list[int] = []
        self.watchers: list[_Watcher] = []
        self.port = free_port()
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/api/{version}/{rest:.*}", self._handle)
        app.router.add_get("/apis/{group}/{version}/{rest:.*}", self._handle)
        self._runner = web.AppRunner(app, shutdown_timeout=0.5)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        """The API server goes away: open watches end, new connections are refused."""
        self.drop_watches()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # --- credentials ---

    def grant(self, token: str, permissions: Mapping[str, Iterable[str]], user: str = "") -> None:
        """Let `token` use these verbs per resource (`{"pods": ["get", "list", "watch"]}`)."""
        name = user or "system:serviceaccount:monitoring:tokenwatt"
        self.tokens[token] = (name, {r: set(v) for r, v in permissions.items()})

    def revoke(self, token: str, resource: str, verb: str) -> None:
        self.tokens[token][1].get(resource, set()).discard(verb)

    def kubeconfig(self, path: Path, token: str) -> Path:
        """A kubeconfig file for this server and `token`, as `kubectl config view --raw` writes one."""
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "tokenwatt", "user": {"token": token}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "tokenwatt"}}],
            "current-context": "fake",
        }
        path.write_text(json.dumps(config))  # JSON is YAML
        return path

    # --- the store, as controllers change it ---

    def put(self, kind: Kind, obj: Obj) -> Obj:
        """Create or update an object; returns what is stored (with uid and resource version)."""
        obj = copy.deepcopy(obj)
        meta = obj.setdefault("metadata", {})
        key = (meta.get("namespace", "") if kind.namespaced else "", meta["name"])
        previous = self.objects[kind].get(key)
        self.revision += 1
        obj["kind"], obj["apiVersion"] = kind.kind, kind.api_version
        meta["resourceVersion"] = str(self.revision)
        if previous is None:
            meta.setdefault("uid", str(uuid.uuid4()))
            meta.setdefault("creationTimestamp", _now())
        else:
            meta["uid"] = previous["metadata"]["uid"]
            meta["creationTimestamp"] = previous["metadata"]["creationTimestamp"]
        self.objects[kind][key] = obj
        self._publish(kind, _Event(self.revision, "MODIFIED" if previous else "ADDED", obj, previous))
        return copy.deepcopy(obj)

    def delete(self, kind: Kind, name: str, namespace: str = "") -> None:
        previous = self.objects[kind].pop((namespace if kind.namespaced else "", name))
        self.revision += 1
        gone = copy.deepcopy(previous)
        gone["metadata"]["resourceVersion"] = str(self.revision)
        self._publish(kind, _Event(self.revision, "DELETED", gone, previous))

    def get(self, kind: Kind, name: str, namespace: str = "") -> Obj:
        return copy.deepcopy(self.objects[kind][(namespace if kind.namespaced else "", name)])

    def compact(self) -> None:
        """Forget the history so far: a watch from an older resource version gets 410 Expired."""
        self.compacted = self.revision + 1
        for events in self.events.values():
            events.clear()

    def bookmark(self) -> None:
        """Send a BOOKMARK with the current resource version to every watch that allows them."""
        for w in self.watchers:
            if w.bookmarks:
                stub = {"kind": w.kind.kind, "apiVersion": w.kind.api_version,
                        "metadata": {"resourceVersion": str(self.revision)}}
                w.queue.put_nowait(_Event(self.revision, "BOOKMARK", stub, None))

    def drop_watches(self, abort: bool = False) -> None:
        """End every open watch: cleanly (the API server ends it, as at `timeoutSeconds`), or with
        `abort` by cutting the connection mid-stream (a load balancer or a crashed API server)."""
        for w in self.watchers:
            if abort and w.request.transport is not None:
                w.request.transport.abort()
            w.queue.put_nowait(None)

    def fail_next(self, code: int, times: int = 1) -> None:
        """The next `times` requests answer a Status with this code (500, 503, 429)."""
        self.failures.extend([code] * times)

    def _publish(self, kind: Kind, event: _Event) -> None:
        self.events[kind].append(event)
        for w in self.watchers:
            if w.kind == kind:
                w.queue.put_nowait(event)

    # --- HTTP ---

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        group = request.match_info.get("group", "")
        version = request.match_info["version"]
        parts = [p for p in request.match_info["rest"].split("/") if p]
        query = dict(request.query)
        namespace: str | None = None
        if len(parts) >= 3 and parts[0] == "namespaces":
            namespace, parts = parts[1], parts[2:]
        plural, name = parts[0] if parts else "", parts[1] if len(parts) > 1 else None
        watch = query.get("watch") in ("true", "1")
        verb = "get" if name is not None else "watch" if watch else "list"
        record = Request(verb, plural, namespace, name, query, 200)
        self.requests.append(record)
        try:
            kind = self.kinds.get((group, version, plural))
            if kind is None or len(parts) > 2 or (namespace is not None and not kind.namespaced):
                raise ApiStatus(404, "NotFound", "the server could not find the requested resource")
            self._authorize(request, kind, verb, namespace, name)
            if self.failures:
                code = self.failures.pop(0)
                raise ApiStatus(code, "InternalError" if code == 500 else "ServiceUnavailable",
                                "the server is currently unable to handle the request")
            if name is not None:
                return self._get(kind, namespace, name)
            if "limit" in query or "continue" in query:
                raise ApiStatus(400, "BadRequest", "this fake API server does not page lists")
            matches = selector(query)
            if watch:
                return await self._watch(request, kind, namespace, matches, query)
            return self._list(kind, namespace, matches)
        except ApiStatus as e:
            record.code = e.code
            return e.response()

    def _authorize(self, request: web.Request, kind: Kind, verb: str, namespace: str | None,
                   name: str | None) -> None:
        header = request.headers.get("Authorization", "")
        token = header.removeprefix("Bearer ") if header.startswith("Bearer ") else None
        if token is None or token not in self.tokens:
            raise ApiStatus(401, "Unauthorized", "Unauthorized")
        user, permissions = self.tokens[token]
        if verb in permissions.get(kind.rbac_resource, set()):
            return
        what = f'{kind.rbac_resource} "{name}"' if name else kind.rbac_resource
        where = f'in the namespace "{namespace}"' if namespace else "at the cluster scope"
        details: Obj = {"group": kind.group, "kind": kind.plural}
        if name:
            details["name"] = name
        raise ApiStatus(
            403, "Forbidden",
            f'{what} is forbidden: User "{user}" cannot {verb} resource "{kind.plural}" '
            f'in API group "{kind.group}" {where}',
            details,
        )

    def _get(self, kind: Kind, namespace: str | None, name: str) -> web.Response:
        obj = self.objects[kind].get((namespace or "", name))
        if obj is None:
            raise ApiStatus(404, "NotFound", f'{kind.rbac_resource} "{name}" not found',
                            {"name": name, "group": kind.group, "kind": kind.plural})
        return _json(obj)

    def _selected(self, kind: Kind, namespace: str | None, matches: Callable[[Obj], bool]) -> list[Obj]:
        return [
            o for (ns, _), o in sorted(self.objects[kind].items())
            if (namespace is None or ns == namespace) and matches(o)
        ]

    def _list(self, kind: Kind, namespace: str | None, matches: Callable[[Obj], bool]) -> web.Response:
        items = []
        for o in self._selected(kind, namespace, matches):
            item = copy.deepcopy(o)
            del item["kind"], item["apiVersion"]
            items.append(item)
        return _json({
            "kind": f"{kind.kind}List",
            "apiVersion": kind.api_version,
            "metadata": {"resourceVersion": str(self.revision)},
            "items": items,
        })

    async def _watch(self, request: web.Request, kind: Kind, namespace: str | None,
                     matches: Callable[[Obj], bool], query: Mapping[str, str]) -> web.StreamResponse:
        since = query.get("resourceVersion", "")
        if not since.isdigit() and since != "":
            raise ApiStatus(400, "BadRequest", f"invalid resource version: {since!r}")
        timeout_s = float(query["timeoutSeconds"]) if query.get("timeoutSeconds") else None
        watcher = _Watcher(kind, namespace, matches, query.get("allowWatchBookmarks") == "true", request)
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        if since not in ("", "0") and int(since) < self.compacted:
            expired = ApiStatus(410, "Expired", f"too old resource version: {since} ({self.compacted})")
            await self._send(response, "ERROR", expired.body())
            return response
        if since in ("", "0"):
            current = self._selected(kind, namespace, matches)
            backlog = [_Event(self.revision, "ADDED", o, None) for o in current]
        else:
            backlog = [e for e in self.events[kind] if e.rv > int(since)]
        for e in backlog:
            watcher.queue.put_nowait(e)
        self.watchers.append(watcher)
        try:
            async with asyncio.timeout(timeout_s):
                while (event := await watcher.queue.get()) is not None:
                    await self._deliver(response, watcher, event)
        except TimeoutError:
            pass
        except (ConnectionResetError, asyncio.CancelledError):
            return response
        finally:
            self.watchers.remove(watcher)
        return response

    async def _deliver(self, response: web.StreamResponse, w: _Watcher, e: _Event) -> None:
        if e.type == "BOOKMARK":
            await self._send(response, e.type, e.obj)
            return
        in_namespace = w.namespace is None or e.obj["metadata"].get("namespace") == w.namespace
        now = in_namespace and e.type != "DELETED" and w.matches(e.obj)
        before = in_namespace and e.previous is not None and w.matches(e.previous)
        if e.type == "ADDED" and now:
            await self._send(response, "ADDED", e.obj)
        elif e.type == "DELETED" and before:
            await self._send(response, "DELETED", e.obj)
        elif e.type == "MODIFIED" and (now or before):
            await self._send(response, "MODIFIED" if now and before else "ADDED" if now else "DELETED", e.obj)

    @staticmethod
    async def _send(response: web.StreamResponse, type_: str, obj: Obj) -> None:
        await response.write(json.dumps({"type": type_, "object": obj}).encode() + b"\n")


# --- objects shaped as the API server returns them -------------------------------------------------------

CONTAINER = {"name": "server", "image": "vllm/vllm-openai:v0.11.0"}


def owner(kind: str, name: str, uid: str, api_version: str = "apps/v1") -> Obj:
    """An owner reference of a controller (`metadata.ownerReferences[]`)."""
    return {"apiVersion": api_version, "kind": kind, "name": name, "uid": uid,
            "controller": True, "blockOwnerDeletion": True}


def pod(
    namespace: str,
    name: str,
    node: str,
    ip: str | None = "127.0.0.1",
    *,
    phase: str = "Running",
    annotations: Mapping[str, str] | None = None,
    labels: Mapping[str, str] | None = None,
    owners: Iterable[Obj] = (),
    ports: Iterable[tuple[str, int]] = (),
) -> Obj:
    """A Pod as the API server returns it once the kubelet has started it (`ip` None: not yet)."""
    status: Obj = {"phase": phase, "hostIP": "10.0.0.10", "hostIPs": [{"ip": "10.0.0.10"}],
                   "startTime": _now(), "qosClass": "Burstable"}
    if ip is not None:
        status |= {"podIP": ip, "podIPs": [{"ip": ip}]}
    if phase == "Running":
        status["conditions"] = [{"type": t, "status": "True", "lastProbeTime": None,
                                 "lastTransitionTime": _now()}
                                for t in ("PodReadyToStartContainers", "Initialized", "Ready",
                                          "ContainersReady", "PodScheduled")]
    metadata: Obj = {"name": name, "namespace": namespace, "labels": dict(labels or {})}
    if annotations:
        metadata["annotations"] = dict(annotations)
    if owners:
        metadata["ownerReferences"] = list(owners)
    return {
        "metadata": metadata,
        "spec": {
            "nodeName": node,
            "containers": [{
                "name": "server",
                "image": "vllm/vllm-openai:v0.11.0",
                "ports": [{"name": n, "containerPort": p, "protocol": "TCP"} for n, p in ports],
                "resources": {"limits": {"nvidia.com/gpu": "1"}, "requests": {"nvidia.com/gpu": "1"}},
                "terminationMessagePath": "/dev/termination-log",
                "terminationMessagePolicy": "File",
                "imagePullPolicy": "IfNotPresent",
            }],
            "restartPolicy": "Always",
            "terminationGracePeriodSeconds": 30,
            "dnsPolicy": "ClusterFirst",
            "serviceAccountName": "default",
            "schedulerName": "default-scheduler",
        },
        "status": status,
    }


def replicaset(namespace: str, name: str, deployment: Obj | None, template_hash: str) -> Obj:
    """A ReplicaSet, owned by `deployment` (a stored Deployment) where given."""
    metadata: Obj = {"name": name, "namespace": namespace, "labels": {"pod-template-hash": template_hash}}
    if deployment is not None:
        metadata["ownerReferences"] = [
            owner("Deployment", deployment["metadata"]["name"], deployment["metadata"]["uid"])
        ]
    return {
        "metadata": metadata,
        "spec": {"replicas": 1, "selector": {"matchLabels": {"pod-template-hash": template_hash}},
                 "template": {"metadata": {"labels": {"pod-template-hash": template_hash}},
                              "spec": {"containers": [CONTAINER]}}},
        "status": {"replicas": 1, "observedGeneration": 1},
    }


def deployment(namespace: str, name: str) -> Obj:
    return {
        "metadata": {"name": name, "namespace": namespace, "generation": 1},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}},
                              "spec": {"containers": [CONTAINER]}}},
        "status": {"replicas": 1, "observedGeneration": 1},
    }


def job(namespace: str, name: str, owners: Iterable[Obj] = ()) -> Obj:
    metadata: Obj = {"name": name, "namespace": namespace}
    if owners:
        metadata["ownerReferences"] = list(owners)
    return {
        "metadata": metadata,
        "spec": {"completions": 1, "parallelism": 1, "backoffLimit": 6,
                 "template": {"spec": {"containers": [CONTAINER],
                                       "restartPolicy": "Never"}}},
        "status": {"active": 1},
    }
