"""Runs searches on Ray: the base model goes into the object store once, candidate
evaluations fan out to workers."""
