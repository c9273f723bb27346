"""Invariant checks: plain functions over plain data (plan JSON, state, describe results)."""
