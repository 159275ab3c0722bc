"""Tests of func_2d/."""
