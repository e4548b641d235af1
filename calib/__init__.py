"""Calibration tools (CIM threshold, A/V offset, latency budget); built in a later issue."""
