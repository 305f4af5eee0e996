"""The parts of benchmarks/bench_kernels.py that need no GPU: the goal check and the random packed weights."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from edgeinf.kernels import packing as P
from edgeinf.kernels.layout import repack, unpack_kernel_codes

_spec = importlib.util.spec_from_file_location("bench_kernels", Path(__file__).resolve().parents[1] / "benchmarks" / "bench_kernels.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def _row(k, n, m, bits, speedup, frac):
    return {"K": k, "N": n, "M": m, "bits": bits, "kernels": {"stream": {"us": 1.0, "speedup": speedup, "frac_floor": frac}}}


def test_goals_are_the_roofline_targets_on_large_shapes_only():
    assert bench.GOALS == {(1, 8): 1.9, (1, 4): 3.5, (1, 2): 6.0, (16, 4): 3.0} and bench.FLOOR_FRAC == 0.85
    rows = [_row(8192, 8192, 1, 4, 3.6, 0.5), _row(8192, 28672, 1, 4, 3.0, 0.86),  # met: by speed, by the floor
            _row(4096, 4096, 1, 4, 1.0, 0.1),                                     # small: not judged
            _row(8192, 8192, 1, 2, 5.9, 0.84), _row(8192, 8192, 16, 4, 3.0, None)]
    g = {x["goal"].split(" >=")[0]: x for x in bench.goals(rows, "stream")}
    assert g["M=1 W4"]["met"] and set(g["M=1 W4"]["shapes"]) == {"8192x8192", "8192x28672"}
    assert not g["M=1 W2"]["met"] and g["M=16 W4"]["met"] and "M=1 W8" not in g


def test_random_packed_weights_are_valid_codes():
    rng = np.random.default_rng(0)
    for bits in P.SUPPORTED_BITS:
        pw = bench.random_packed(P, 40, 300, bits, 128, rng)
        q = unpack_kernel_codes(repack(pw))  # asserts the codes lie in the bits' range
        lo, hi = P.qrange(bits)
        assert q.shape == (40, 300) and q.min() == lo and q.max() == hi
        np.testing.assert_array_equal(q, pw.codes())


def test_kernel_specs():
    assert bench.parse_kernel("stream") == ("stream", None, None)
    assert bench.parse_kernel("stream@slab65536") == ("stream", 65536, None)
    assert bench.parse_kernel("classic+EDGEINF_MIN_BLOCKS=2+EDGEINF_LOP3_DEQUANT") == \
        ("classic", None, ("EDGEINF_MIN_BLOCKS=2", "EDGEINF_LOP3_DEQUANT"))
