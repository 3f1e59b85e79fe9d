"""Benchmarks of spacy-fsner that are not part of the installed package: run from the repository root as
`python -m bench.<script> ...` (see bench/README.md); `bench.common` holds what the scripts share."""
