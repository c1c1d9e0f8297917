"""Shared by every test suite. Suite-specific fixtures live in that suite's conftest.py."""
