"""Helpers for the cluster tests: real servers started on this machine (no mocks)."""
