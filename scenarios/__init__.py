"""Scenario files (TOML), shipped with the package so `slofsim demo` works
from any directory."""
