"""The runners: ``condense()``, the in-memory pipeline, the sharded/streaming runner, its work folder and
the row sources.
"""
