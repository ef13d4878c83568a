"""Moved to `helmrelease.adapters.kopf_decoding` (it adapts kopf's HTTP client); this name stays only for
`handlers/wiring.py`, which imports it from here until it imports the adapter itself (then delete this module)."""

from helmrelease.adapters.kopf_decoding import install, installed

__all__ = ["install", "installed"]
