"""Tests of traditional_models/."""
