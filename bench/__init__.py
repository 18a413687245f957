"""Benchmarks (`make bench`): results are written to bench/results/ with the machine they ran on."""
