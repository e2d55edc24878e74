"""A real multi-node Ray cluster on 127.0.0.1 (ray.cluster_utils.Cluster: a head and workers, each
its own raylet), for the Ray backend's tests and benchmarks/ray.py. Tiny nodes (1 CPU, an 80 MB
object store): this machine's cores are shared.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass

# Before ray is imported: on loopback only, and no usage reports.
LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}
NODE_MEMORY = 4 * 2**30  # what each node offers as Ray's `memory` resource
OBJECT_STORE = 80 * 2**20
AGENT_TIMEOUT_S = 90.0
NODE_ARGS = {
    "num_cpus": 1,
    "memory": NODE_MEMORY,
    "object_store_memory": OBJECT_STORE,
    "node_ip_address": "127.0.0.1",
}
LOOPBACK = ("127.0.0.1", "::1", "::ffff:127.0.0.1")  # the last: IPv4's loopback on a v6 socket


@dataclass
class RayCluster:
    cluster: object  # ray.cluster_utils.Cluster
    address: str  # the job API: http://127.0.0.1:PORT
    nodes: int
    start_s: float

    def pids(self) -> set[int]:
        """Every process of the cluster (its nodes' processes and their children)."""
        import psutil

        roots = {p.pid for node in self.cluster.list_all_nodes() for p in _node_processes(node)}
        found = set(roots)
        for pid in roots:
            try:
                found |= {c.pid for c in psutil.Process(pid).children(recursive=True)}
            except psutil.Error:
                continue
        return found

    def worker_node_of(self, pid: int):
        """The worker node (not the head) whose raylet `pid` descends from; None if none."""
        import psutil

        try:
            ancestors = {p.pid for p in psutil.Process(pid).parents()}
        except psutil.Error:
            return None
        for node in self.cluster.worker_nodes:
            if {p.pid for p in _node_processes(node)} & ancestors:
                return node
        return None

    def replace_node(self, node) -> None:
        """Kill `node` at once (as a machine lost), then add a new one in its place."""
        self.cluster.remove_node(node, allow_graceful=False)
        self.cluster.add_node(**NODE_ARGS)

    def shutdown(self) -> None:
        self.cluster.shutdown()


def _node_processes(node) -> list:
    processes = []
    for infos in node.all_processes.values():
        processes += [info.process for info in infos if info.process is not None]
    return processes


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(nodes: int = 3) -> RayCluster:
    """A cluster of `nodes` nodes on 127.0.0.1, once its job API answers."""
    os.environ.update(LOOPBACK_ENV)
    from ray.cluster_utils import Cluster
    from ray.job_submission import JobSubmissionClient

    t0 = time.monotonic()
    node_args = NODE_ARGS
    port = _free_port()
    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            **node_args,
            "include_dashboard": True,
            "dashboard_host": "127.0.0.1",
            "dashboard_port": port,
        },
    )
    for _ in range(nodes - 1):
        cluster.add_node(**node_args)
    address = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + AGENT_TIMEOUT_S
    while True:  # the job agent comes up some seconds after the head
        try:
            JobSubmissionClient(address).list_jobs()
            break
        except Exception:
            if time.monotonic() > deadline:
                cluster.shutdown()
                raise
            time.sleep(0.5)
    return RayCluster(cluster, address, nodes, time.monotonic() - t0)


def listening_beyond_loopback(pids: set[int]) -> list[str]:
    """The TCP/UDP sockets these processes listen on at an address other than loopback."""
    import psutil

    wide = []
    for conn in psutil.net_connections(kind="inet"):
        if conn.pid not in pids or not conn.laddr:
            continue
        listening = conn.status == psutil.CONN_LISTEN or conn.type == socket.SOCK_DGRAM
        if listening and conn.laddr.ip not in LOOPBACK:
            wide.append(f"pid {conn.pid} on {conn.laddr.ip}:{conn.laddr.port}")
    return wide
