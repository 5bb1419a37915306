"""nightflow benchmarks: run with `make bench`; results land in benchmarks/results/*.json."""
