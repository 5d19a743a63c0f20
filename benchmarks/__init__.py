"""Benchmarks writing JSON to benchmarks/results/ (run as scripts); `harness` is what they share with the tests."""
