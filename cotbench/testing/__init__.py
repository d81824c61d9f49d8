"""Test and benchmark aids that are real programs (a fault-injecting proxy, server launchers)."""
