"""Benchmarks that ship with nutq (`nutq bench`): latency of the streaming engine per stage."""
