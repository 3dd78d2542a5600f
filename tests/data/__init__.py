"""Tests of tfq.data."""
