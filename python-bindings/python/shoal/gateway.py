"""A client of ``shoal gateway serve``: clusters as a service.

::

    import shoal
    gw = shoal.Gateway("http://localhost:8686", token="...")   # or SHOAL_GATEWAY / SHOAL_GATEWAY_TOKEN
                                                           # (or JUPYTERHUB_API_TOKEN); ca="ca.pem"
                                                           # (or SHOAL_GATEWAY_CA) for https
    cluster = gw.create("cluster.toml")                   # a spec file, a spec dict, or profile="small"
    with cluster.session() as s:                          # a shoal.Session on it
        s.sql("select 1").to_pandas()
    cluster.scale("cpu", 4)
    cluster.stop()

A refused request raises :class:`shoal.InputError` with the gateway's one-line message
(a limit, a bad spec, another user's cluster); an unreachable gateway or a cluster that
failed to start raises :class:`shoal.ShoalIOError`.
"""

from __future__ import annotations

import json
import os
import ssl
import tempfile
import tomllib
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._session import Session
from .errors import InputError, ShoalIOError


@dataclass
class GatewayCluster:
    """One cluster as the gateway describes it."""

    gateway: Gateway = field(repr=False)
    name: str
    state: str
    reason: str
    scheduler: str
    dashboard: str
    token: str = field(repr=False)
    #: Per group: ``workers`` asked for, ``slots``, ``memory``, ``resources`` and, for a
    #: running cluster fetched on its own, ``alive``.
    groups: dict[str, dict[str, Any]]
    #: The PEM certificate of the cluster's own authority, when it speaks TLS.
    tls_ca: str | None = field(default=None, repr=False)

    def session(self, **options: Any) -> Session:
        """A :class:`shoal.Session` on this cluster (``options`` as for ``Session``)."""
        if self.state != "running":
            raise InputError(f"cluster {self.name} is {self.state}: {self.reason}")
        if self.tls_ca and "tls_ca" not in options:
            # The session reads the authority from a file: one per cluster, in a
            # directory private to this user, written again on each call.
            folder = Path(tempfile.gettempdir()) / f"shoal-{os.getuid()}"
            folder.mkdir(mode=0o700, exist_ok=True)
            path = folder / f"{self.name}-ca.pem"
            path.write_text(self.tls_ca)
            options["tls_ca"] = str(path)
        return Session(self.scheduler, token=self.token, **options)

    def scale(self, group: str, workers: int) -> GatewayCluster:
        """Sets the number of workers of ``group``."""
        return self.gateway.scale(self.name, group, workers)

    def stop(self) -> GatewayCluster:
        """Stops the cluster."""
        return self.gateway.stop(self.name)


class Gateway:
    """The gateway at ``address``, called as the user whose token is ``token``."""

    def __init__(
        self, address: str | None = None, *, token: str | None = None, ca: str | None = None
    ) -> None:
        address = address or os.environ.get("SHOAL_GATEWAY")
        # In a JupyterHub notebook the server's own API token will do, for a gateway
        # that accepts the hub's tokens.
        token = (
            token
            or os.environ.get("SHOAL_GATEWAY_TOKEN")
            or os.environ.get("JUPYTERHUB_API_TOKEN")
        )
        if not address or not token:
            raise InputError(
                "a gateway address and token are needed (or SHOAL_GATEWAY and "
                "SHOAL_GATEWAY_TOKEN, or JUPYTERHUB_API_TOKEN)"
            )
        self.address = address.rstrip("/")
        self._token = token
        # An https:// gateway whose certificate comes from an authority of its own.
        ca = ca or os.environ.get("SHOAL_GATEWAY_CA")
        self._tls = ssl.create_default_context(cafile=ca) if ca else None

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"{self.address}/api/v1/{path}", data=data, method=method)
        request.add_header("Authorization", f"Bearer {self._token}")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=300, context=self._tls) as response:
                reply: dict[str, Any] = json.loads(response.read())
                return reply
        except urllib.error.HTTPError as e:
            try:
                message = json.loads(e.read())["error"]
            except (ValueError, KeyError):
                message = e.reason
            error = InputError if 400 <= e.code < 500 else ShoalIOError
            raise error(f"the gateway refused ({e.code}): {message}") from None
        except urllib.error.URLError as e:
            raise ShoalIOError(f"cannot reach the gateway at {self.address}: {e.reason}") from None

    def _cluster(self, reply: dict[str, Any]) -> GatewayCluster:
        keys = ("name", "state", "reason", "scheduler", "dashboard", "token", "groups")
        return GatewayCluster(self, **{k: reply[k] for k in keys}, tls_ca=reply.get("tls_ca"))

    def create(
        self,
        spec: str | os.PathLike[str] | dict[str, Any] | None = None,
        *,
        profile: str | None = None,
    ) -> GatewayCluster:
        """Creates a cluster from a spec (a TOML file's path, or the spec as a dict of
        the same shape) or one of the gateway's profiles; returns once its workers joined."""
        if profile is not None:
            if spec is not None:
                raise InputError("give either a spec or a profile")
            return self._cluster(self._call("POST", "clusters", {"profile": profile}))
        if spec is None:
            raise InputError("give either a spec or a profile")
        if not isinstance(spec, dict):
            path = Path(spec)
            try:
                spec = tomllib.loads(path.read_text())
            except (OSError, tomllib.TOMLDecodeError) as e:
                raise InputError(f"{path}: {e}") from None
        return self._cluster(self._call("POST", "clusters", {"spec": spec}))

    def list(self) -> list[GatewayCluster]:
        """My clusters, oldest first."""
        return [self._cluster(c) for c in self._call("GET", "clusters")["clusters"]]

    def get(self, name: str) -> GatewayCluster:
        """One of my clusters, with its workers alive per group."""
        return self._cluster(self._call("GET", f"clusters/{name}"))

    def scale(self, name: str, group: str, workers: int) -> GatewayCluster:
        """Sets the number of workers of ``group`` of cluster ``name``."""
        body = {"group": group, "workers": workers}
        return self._cluster(self._call("POST", f"clusters/{name}/scale", body))

    def stop(self, name: str) -> GatewayCluster:
        """Stops cluster ``name``."""
        return self._cluster(self._call("DELETE", f"clusters/{name}"))

    def connect(self, name: str, **options: Any) -> Session:
        """A :class:`shoal.Session` on running cluster ``name``."""
        return self.get(name).session(**options)
