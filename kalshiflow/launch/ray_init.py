"""Join a running Ray cluster or start a local one (``ray.address``, ``--address``).

- ``""`` (default): the cluster ``ray start --head`` made on this machine (``RAY_ADDRESS`` or Ray's
  address file), else a new local one with ``ray.num_cpus`` CPUs. An address file left behind by a
  cluster that is gone falls back to a local one, with a warning.
- ``"auto"``: join a running cluster or fail. ``"local"``: always start one.
- ``HOST:PORT`` (GCS) or ``ray://HOST:PORT`` (Ray Client): that cluster.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import msgspec
import ray

from kalshiflow.config import RayConfig

__all__ = ["RayInfo", "init_ray"]

log = logging.getLogger("kalshiflow.launch")


class RayInfo(msgspec.Struct, frozen=True, kw_only=True):
    started_here: bool  # this process started the cluster: shutting Ray down stops it
    address: str
    dashboard_url: str | None  # http://HOST:PORT of Ray's own dashboard (None when it is off)


def _running_cluster() -> str | None:
    """The address `ray start` recorded (or RAY_ADDRESS), without joining it yet."""
    env = os.environ.get("RAY_ADDRESS", "").strip()
    if env:
        return env
    try:  # Ray's own lookup of the address file; private, so tolerate its absence
        from ray._private.services import find_bootstrap_address

        found: str | None = find_bootstrap_address(None)
        return found or None
    except Exception:  # noqa: BLE001
        return None


def _token_auth_if_available() -> None:
    """Ray >= 2.5x clusters use token auth (~/.ray/auth_token); Ray picks the token up by itself
    only for clusters it finds on its own, not for an explicit address. Do what it does then."""
    try:
        from ray._private.authentication.authentication_token_setup import (
            maybe_enable_token_auth_if_token_available,
        )
    except ImportError:  # a Ray without token auth
        return
    maybe_enable_token_auth_if_token_available(warn_if_disabled=False)


def _common(config: RayConfig) -> dict[str, Any]:
    # log_to_driver: actor errors show up in the launcher's terminal as well as in Ray's logs.
    return {"namespace": config.namespace, "log_to_driver": True, "configure_logging": False}


def _local(config: RayConfig) -> Any:
    return ray.init(
        address="local",
        num_cpus=config.num_cpus,
        include_dashboard=config.include_dashboard,
        dashboard_host="127.0.0.1",
        dashboard_port=config.dashboard_port,
        **_common(config),
    )


def _url(context: Any) -> str | None:
    url = getattr(context, "dashboard_url", None) or None
    if url and "://" not in url:
        url = f"http://{url}"
    return url


def init_ray(config: RayConfig) -> RayInfo:
    address = config.address.strip()
    if address == "local":
        return RayInfo(started_here=True, address="local", dashboard_url=_url(_local(config)))
    if address in ("", "auto"):
        found = _running_cluster()
        if found is None:
            if address == "auto":
                raise ConnectionError(
                    "--address auto: no running Ray cluster found (start one with `ray start --head`)"
                )
            return RayInfo(started_here=True, address="local", dashboard_url=_url(_local(config)))
        try:
            # address=None: Ray resolves the same address again and, being its own lookup, also
            # enables the token auth a `ray start` cluster uses.
            context = ray.init(address=None, **_common(config))
        except ConnectionError as err:
            if address == "auto":
                raise
            log.warning(
                "the Ray cluster recorded at %s is not reachable (%s); starting a local one", found, err
            )
            return RayInfo(started_here=True, address="local", dashboard_url=_url(_local(config)))
        return RayInfo(started_here=False, address=found, dashboard_url=_url(context))
    if not address.startswith("ray://"):
        _token_auth_if_available()
    context = ray.init(address=address, **_common(config))
    return RayInfo(started_here=False, address=address, dashboard_url=_url(context))
