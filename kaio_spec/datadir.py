"""The files a local platform keeps in its data folder that the client reads too (core; no
imports): `kaio server` writes them, targets.py finds a running server by them. Here, not in
kaio_spec.server, so that the client reads their names without importing the server."""

SERVER_FILE = "server.json"  # where a running server says where it listens (and its pid)
LOCK_FILE = "server.lock"  # held by the one server using the folder
