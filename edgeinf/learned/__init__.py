"""Learned schedulers: QuEE's error-probability gates and AdaInf's content-aware scheduler.

Both decide between block artifacts at run time with numpy only; training
(:mod:`edgeinf.learned.train_gates`, :func:`edgeinf.learned.content.train_content`) uses torch
and scikit-learn on the build host.
"""
from edgeinf.learned.content import ContentAware, ContentScheduler
from edgeinf.learned.gates import ErrorGates, GatesScheduler
from edgeinf.learned.paths import PathSet, gate_features
from edgeinf.learned.store import attach_scheduler, load_scheduler

__all__ = ["ContentAware", "ContentScheduler", "ErrorGates", "GatesScheduler", "PathSet", "attach_scheduler",
           "gate_features", "load_scheduler"]
