"""The live runtime: sources, ring buffers, sync, streaming engine, ZMQ publishing (DESIGN.md).

Built in the live issue; this package exists so the project installs as one unit.
"""
