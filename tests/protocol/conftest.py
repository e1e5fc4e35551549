"""Fixtures for the pure protocol tests.

Hypothesis settings are applied per test (``@settings(deadline=None)``), not by
loading a profile here: a profile is global and would change other folders' tests.
"""

from __future__ import annotations

import random

import pytest


@pytest.fixture
def rnd() -> random.Random:
    return random.Random(1234)
