"""Pieces shared by the webhook, the sidecar and the certs tool."""

__version__ = "0.1.0"
