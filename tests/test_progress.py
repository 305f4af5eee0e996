"""Progress lines: done/total, elapsed and the ETA at the average rate so far."""
import logging

from edgeinf.progress import Progress


def test_eta_is_the_average_rate_times_what_is_left(monkeypatch, capsys):
    clock = iter([0.0, 0.0, 10.0, 10.0, 10.0, 10.0, 10.0, 40.0, 40.0, 40.0, 40.0])
    monkeypatch.setattr("edgeinf.progress.time.perf_counter", lambda: next(clock))
    logging.getLogger("edgeinf").setLevel(logging.INFO)
    bar = Progress("stage", total=4, interval_s=0.0)
    assert bar.eta_s() is None  # nothing done yet
    bar.update(1)  # 1 of 4 after 10 s: 30 s left
    line = capsys.readouterr().err
    assert "stage [1/4] 10.0s eta 30s" in line
    bar.update(3)  # done: no ETA
    assert bar.eta_s() is None and "eta" not in capsys.readouterr().err
