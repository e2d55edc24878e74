"""API keys made outside a running server, in the SQLite file it reads: for the client's
auto-started local platform (targets.py), which needs no store, table or SQL of its own."""

from __future__ import annotations

from pathlib import Path

from kaio_spec.errors import InvalidInput
from kaio_spec.server.store import Store


def add_key(data_dir: Path, user_name: str) -> str:
    """A new API key of `user_name` on the platform whose data is in `data_dir`, the user made
    first where it does not exist. Returns the key (only its hash is stored)."""
    store = Store(data_dir)
    try:
        try:
            _, key = store.add_user(user_name)
        except InvalidInput:  # the user exists (its key was lost): give it another key
            key = store.create_key(user_name)
    finally:
        store.close()
    return key
