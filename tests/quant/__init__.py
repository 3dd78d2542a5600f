"""Tests of tfq.quant."""
