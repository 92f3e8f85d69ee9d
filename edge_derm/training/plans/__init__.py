"""Shipped sequential training plans (the paper's strategies o, x, a, b, c) as TOML files."""
