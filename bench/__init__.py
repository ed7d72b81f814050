"""Benchmarks, run by hand (not part of the test suite): `python -m bench.<name> --help` for each.
Shared set-up in `bench.common`; peer methods in `bench.peers`."""
