"""Tools around the cnnlab library, not part of it: the benchmark and the project sandbox tests use."""
