"""The distribution's version, alone in a module so that reading it imports nothing else
(pyproject.toml's dynamic version, `kaio --version`, the server's /healthz)."""

__version__ = "0.1.0"
