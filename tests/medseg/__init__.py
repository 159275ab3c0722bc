"""Tests of the medseg package, one folder per layer."""
