"""A small CNI client (stdlib only): config loading, plugin invocation, result cache."""
