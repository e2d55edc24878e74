"""The one error a route raises: answered `{"error": message}` with its status (app.py's
handlers). No web framework here, so that the rules of uploads.py can raise it too."""

from __future__ import annotations


class ApiError(Exception):
    def __init__(self, status: int, message: str):
        self.status = status
        self.message = message
