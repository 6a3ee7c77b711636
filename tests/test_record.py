"""What a study records: the regime checks on constructed runs (the over-fitting gate's four measurements, the
teachers' roles) and the last-quarter slope they rest on."""
import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from bnext_lib.config import TrainConfig
from bnext_lib.record import Record, last_quarter_rise


def test_the_last_quarter_rise_is_the_fitted_line_across_that_quarter():
    epochs = np.arange(1, 33)
    rising = 80 + 0.1 * epochs  # 0.1 a point an epoch: 0.8 over the last 8 of 32 epochs
    assert last_quarter_rise(epochs, rising, 32) == pytest.approx(0.8)
    flat_then_falling = np.where(epochs <= 24, 80 + epochs * 0.2, 84.8 - 0.05 * (epochs - 24))
    assert last_quarter_rise(epochs, flat_then_falling, 32) == pytest.approx(-0.4)
    assert math.isnan(last_quarter_rise([30], [80.0], 32))  # one evaluation in the last quarter


class _Runs:
    """The part of a RunSet the checks read: per-seed values and each run's config and history."""

    def __init__(self, rows, runs):
        self.df, self.runs = pd.DataFrame(rows), runs

    def values(self, label, metric="test_top1"):
        return self.df[self.df.label == label][metric].tolist()


def _overfitting_runs(val_curve, train_top1=98.0, test_top1=86.0, epochs=32, subset=2000):
    cfg = TrainConfig(train_subset=subset, epochs=epochs, batch_size=32)
    hist = pd.DataFrame({"epoch": np.arange(1, epochs + 1), "val_top1": val_curve})
    rows = [{"label": "CE", "seed": s, "gap": train_top1 - test_top1, "train_eval_top1": train_top1,
             "test_top1": test_top1, "val_top1": val_curve[-1]} for s in (0, 1)]
    runs = {("CE", s): SimpleNamespace(config=cfg, history=lambda: hist) for s in (0, 1)}
    return _Runs(rows, runs)


def test_the_overfitting_gate_measures_fit_gap_steps_and_the_last_quarter(tmp_path):
    t = dict(overfit_gap=8.0, overfit_train_top1=97.0, overfit_steps=1000, overfit_val_rise=0.5)
    rec = Record("02_x", tmp_path, t, regime="overfitting")
    plateau = np.r_[np.linspace(70, 86, 24), np.full(8, 86.0)]
    checks = rec.check_overfitting(_overfitting_runs(plateau), "CE")
    assert [c["passed"] for c in checks] == [True, True, True, True]
    assert [c["value"] for c in checks[:3]] == [12.0, 98.0, 32 * 62]
    still_rising = np.linspace(70, 86, 32)  # 0.52 a point an epoch: 4 points over the last quarter
    short = rec.check_overfitting(_overfitting_runs(still_rising, train_top1=92.0, epochs=32, subset=800), "CE")
    assert [c["passed"] for c in short] == [False, False, False, False]
    assert short[3]["value"] == pytest.approx(16 / 31 * 8)


def test_teacher_roles_are_checked_on_the_validation_split(tmp_path):
    t = dict(teacher_lead=4.0, assistant_lead=2.0, main_lead=2.0)
    rec = Record("03_x", tmp_path, t, regime="overfitting")
    runs = _Runs([{"label": "CE", "test_top1": 84.0, "val_top1": 85.0}] * 3, {})
    ladder = pd.DataFrame({"test_top1": [86.0, 88.5, 90.0], "val_top1": [87.5, 89.0, 90.5]},
                          index=["weak", "middle", "strong"])
    checks = rec.check_teachers(ladder, runs, "CE")
    assert [(c["value"], c["passed"]) for c in checks] == [(5.5, True), (2.5, True), (3.0, True)]
    assert all("val top-1" in c["check"] for c in checks)
    weak_assistant = ladder.assign(val_top1=[86.0, 89.0, 90.5])  # only 1 point above the student
    assert [c["passed"] for c in rec.check_teachers(weak_assistant, runs, "CE")] == [True, False, True]
    no_val = ladder.assign(val_top1=np.nan)
    assert "test top-1" in rec.check_teachers(no_val, runs, "CE")[0]["check"]


def test_teachers_must_learn_from_their_students_images(tmp_path):
    """A teacher of the full training set (55,000 images at a 5,000-image validation split) teaching a student of
    1,000 learned from 55 images per student image: a condition of the profile's design fails, whatever the runs
    measured; a teacher of the student's own subset passes (ratio 1)."""
    rec = Record("02_x", tmp_path, {}, regime="overfitting")
    student = dict(dataset="fashion_mnist", train_subset=1000, val_split=5000)

    def runs(**teacher):
        cfg = TrainConfig(**student, teachers=("timm:resnet10t@4",), **teacher)
        return _Runs([], {("KD", 0): SimpleNamespace(config=cfg), ("CE", 0): SimpleNamespace(
            config=TrainConfig(**student))})

    full = rec.check_same_images(runs())
    assert (full["value"], full["passed"], full["of"]) == (55.0, False, "the profile's design")
    same = rec.check_same_images(runs(teacher_subset=1000))
    assert (same["value"], same["passed"]) == (1.0, True)
    unknown = rec.check_same_images(_Runs([], {("KD", 0): SimpleNamespace(config=TrainConfig(
        dataset="synthetic", teachers=("timm:resnet10t",)))}))
    assert unknown["value"] != unknown["value"] and not unknown["passed"]  # NaN: not known, so not met


def test_a_figure_written_twice_is_byte_identical_and_leaves_the_random_state_alone(tmp_path):
    """A rebuild of the report from the ledger redraws every figure: the same data must give the same PNG and SVG
    bytes (the dots' jitter and the SVG's element ids are otherwise drawn at random), and drawing them must not move
    the caller's NumPy random state."""
    import matplotlib.pyplot as plt

    from bnext_lib import plots

    df = pd.DataFrame({"label": ["a"] * 5 + ["b"] * 5, "test_top1": [89.1, 88.8, 89.5, 89.0, 88.9,
                                                                      87.6, 88.1, 87.2, 87.9, 87.5]})
    written = []
    for attempt, seed in (("first", 7), ("second", 8)):  # whatever the caller's random state
        np.random.seed(seed)
        Record("01_x", tmp_path / attempt, {}).figure(plots.bars(df), "bars", "bars")
        plt.close("all")
        assert np.random.randint(1 << 30) == np.random.RandomState(seed).randint(1 << 30)
        written.append({p.name: p.read_bytes() for p in (tmp_path / attempt / "figures").iterdir()})
    assert sorted(written[0]) == ["01_bars.png", "01_bars.svg"] and written[0] == written[1]
