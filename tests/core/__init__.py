"""Tests of tfq.core."""
