"""Tests of the explain package."""
