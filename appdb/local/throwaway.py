"""The one place a temporary PostgreSQL cluster is made: started, Supabase-shaped, stopped and removed.

``appdb schema`` and ``baseline`` (appdb/schema/fresh.py), the tests (tests/conftest.py),
CI's throwaway databases (ci/throwaway.py) and the benchmarks (bench/) all start theirs
here, so they share one Supabase shape, one set of settings and one major version (the
project's, appdb/local/postgres.py) with ``appdb local up``:

- a new folder under the system's temp folder that the server's OS user can enter;
- the same :class:`~appdb.local.cluster.Cluster` as the local database: random passwords
  in a 0600 password file, the superuser through the socket only;
- reachable over its Unix socket only, unless ``tcp`` asks for a free loopback port;
- durability off (:data:`DURABILITY_OFF`): nothing in it outlives it, and initdb and the
  migrations are quicker without fsync;
- the shape applied to its ``postgres`` database, which also gives the ``postgres`` login its password.
"""

from __future__ import annotations

import random
import shutil
import socket
from collections.abc import Iterator
from contextlib import contextmanager

from appdb.local.cluster import Cluster, temporary_home

# A throwaway cluster needs no durability: fsync, synchronous commit and full-page writes off.
DURABILITY_OFF = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}
# The port that names a socket-only cluster's socket file, in its own folder: nothing listens on it.
SOCKET_ONLY_PORT = 5432


def free_port() -> int:
    """A loopback TCP port nothing listens on right now, below the kernel's ephemeral range.

    Why not the kernel's own pick (bind to port 0): that comes from the ephemeral range, from
    which every outgoing connection also takes its local port, so between this probe and the
    server's bind a client (the tests make thousands) could take it ("is port N in use?", seen
    once in CI on the PostgreSQL 17 run). A port below the range is never handed out that way.
    """
    low, high = _PORTS_BELOW_EPHEMERAL
    for _ in range(100 if 1024 <= low < high else 0):
        port = random.randint(low, high)
        if not port_in_use(port):
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:  # a crowded machine: the kernel's pick
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def port_in_use(port: int) -> bool:
    """Whether something holds loopback TCP ``port`` now: it cannot be bound."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def _ephemeral_start() -> int:
    """The first port of the kernel's ephemeral range (Linux's default 32768 where it does not say)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range", encoding="ascii") as ports:
            return int(ports.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


# Ports the kernel never gives an outgoing connection; above the well-known and most registered services'.
_PORTS_BELOW_EPHEMERAL = (min(20000, _ephemeral_start() - 1000), _ephemeral_start() - 1)


@contextmanager
def throwaway_cluster(
    prefix: str = "appdb-throwaway-",
    *,
    tcp: bool = False,
    port: int | None = None,
    settings: dict[str, str] | None = None,
    major: int | None = None,
) -> Iterator[Cluster]:
    """A new, started, Supabase-shaped cluster in a temporary folder; stopped and removed after.

    ``tcp``: also listen on loopback, on ``port`` or a free one. ``settings`` add to (or
    override) the durability-off ones in postgresql.conf; ``major`` defaults to the project's.
    """
    home = temporary_home(prefix)
    cluster = Cluster(
        home=home,
        port=(port or free_port()) if tcp else SOCKET_ONLY_PORT,
        listen="127.0.0.1" if tcp else "",
        settings={**DURABILITY_OFF, **(settings or {})},
        major=major,
    )
    try:
        cluster.init()
        cluster.start()
        cluster.shape("postgres")
        yield cluster
    finally:
        try:
            cluster.down()
        finally:
            shutil.rmtree(home, ignore_errors=True)
