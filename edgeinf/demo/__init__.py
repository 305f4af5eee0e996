"""The built-in demo behind ``edgeinf demo``: the public pipeline run in order on a zoo workload.

``run`` holds the sequence (:func:`run_demo`), ``steps`` the pipeline calls, ``analysis`` the
numbers the report shows and ``report`` the sections of ``report.md``.

Example:
    >>> from edgeinf.demo import DemoConfig, run_demo
    >>> result = run_demo(DemoConfig(out_dir="demo-out", models=("mnist-resnet18",)))  # doctest: +SKIP
    >>> result.timings_s["total"]  # doctest: +SKIP
"""
from edgeinf.demo.config import DemoConfig
from edgeinf.demo.report import summary_lines
from edgeinf.demo.run import DemoResult, run_demo

__all__ = ["DemoConfig", "DemoResult", "run_demo", "summary_lines"]
