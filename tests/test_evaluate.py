"""trainer/evaluate.py: per-class IoU, mIoU and pixel accuracy, printed and written."""

import json

import numpy as np
import pytest

from trainer import evaluate


def test_evaluate_prints_per_class_iou_and_writes_json(run_dir, records, capsys):
    result = evaluate.run(["--model_dir", run_dir, "--data_dir", records])
    assert 0.0 <= result["miou"] <= 1.0 and result["pixels"] > 0
    assert "background" in result["per_class"] and "mIoU" in capsys.readouterr().out
    assert json.load(open(f"{run_dir}/eval-val.json"))["miou"] == result["miou"]


def test_scores_on_a_known_confusion_matrix():
    cm = np.array([[8, 2, 0], [1, 3, 0], [0, 0, 0]])
    s = evaluate.scores(cm, ["a", "b", "c"])
    assert s["per_class"]["a"]["iou"] == pytest.approx(8 / 11) and s["per_class"]["b"]["iou"] == pytest.approx(3 / 6)
    assert s["miou"] == pytest.approx((8 / 11 + 3 / 6) / 2) and s["pixel_accuracy"] == pytest.approx(11 / 14)
    assert "c" not in s["per_class"]
