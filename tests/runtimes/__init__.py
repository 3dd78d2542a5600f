"""Tests of tfq.runtimes."""
