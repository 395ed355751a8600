"""Shared helpers of the test modules (not collected as tests)."""
