"""Thin kopf wiring: parse, call the reconcile core, map errors to kopf's."""
