"""Learned schedulers: QuEE's error-probability gates (and their next-step variant) and AdaInf's
content-aware scheduler.

All decide between block artifacts at run time with numpy only; training
(:mod:`edgeinf.learned.train_gates`, :mod:`edgeinf.learned.train_next_step`,
:mod:`edgeinf.learned.train_content`) uses torch and scikit-learn on the build host.
Importing :mod:`edgeinf.learned.store` registers the kinds (``gates``, ``gates-next``, ``content``)
with the runtime's scheduler registry; the runtime imports it only when such a name is asked for.
"""
from edgeinf.learned.content import ContentAware, ContentScheduler
from edgeinf.learned.gates import ErrorGates, GatesScheduler
from edgeinf.learned.next_step import NextStepGates, NextStepScheduler
from edgeinf.learned.paths import PathSet, gate_features
from edgeinf.learned.store import attach_scheduler, load_scheduler

__all__ = ["ContentAware", "ContentScheduler", "ErrorGates", "GatesScheduler", "NextStepGates", "NextStepScheduler",
           "PathSet", "attach_scheduler", "gate_features", "load_scheduler"]
