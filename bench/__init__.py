"""Benchmarks of Nephelios on the real engine; `./run bench` runs them all."""
