"""Tests of tfq.models."""
