"""Tether's pure protocol core: no I/O, no clocks, no Tether imports."""
