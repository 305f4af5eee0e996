"""Benchmarking, one package: ``timing`` (numpy-only timing loops and ``*_ms`` statistics, shared
with the device profiler), ``targets`` (what ``edgeinf bench`` can time), ``run`` (whole runs),
``results`` (environment, ratios, results files) and ``report`` (the demo's latency section).

Import the submodule you need; this package imports nothing itself, so the device side can use
:mod:`edgeinf.benchmark.timing` without the rest.
"""
