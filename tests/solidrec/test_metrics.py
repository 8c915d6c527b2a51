"""Metrics against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
from solidrec.metrics import auc, ranking_metrics, user_auc, variance_summary


def test_auc_hand_computed_with_ties() -> None:
    # positives 0.8, 0.4; negatives 0.4, 0.1, 0.9 → pairs: (0.8>0.4, 0.8>0.1, 0.8<0.9)
    # = 2, (0.4=0.4 → 0.5, 0.4>0.1, 0.4<0.9) = 1.5 → 3.5 / 6
    s = np.array([0.8, 0.4, 0.4, 0.1, 0.9])
    y = np.array([1, 1, 0, 0, 0])
    assert auc(s, y) == pytest.approx(3.5 / 6)
    assert math.isnan(auc(s, np.zeros(5)))


def test_ranking_metrics_hand_computed() -> None:
    # user 0: positive ranked 1st; user 1: positive ranked 3rd of 4; user 2: positive tied
    # with one negative at the top → pessimistic rank 2.
    s = np.array([[0.9, 0.1, 0.2, 0.3], [0.5, 0.9, 0.8, 0.1], [0.7, 0.7, 0.1, 0.2]])
    y = np.zeros_like(s)
    y[:, 0] = 1
    m = ranking_metrics(s, y, ks=(1, 2))
    assert m["uauc"] == pytest.approx((1.0 + 1 / 3 + 2.5 / 3) / 3)
    assert m["recall@1"] == pytest.approx(1 / 3)
    assert m["recall@2"] == pytest.approx(2 / 3)
    assert m["ndcg@1"] == pytest.approx(1 / 3)
    assert m["ndcg@2"] == pytest.approx((1 + 1 / math.log2(3)) / 3)
    # pooled, 3 positives x 9 negatives {.1 .2 .3 .9 .8 .1 .7 .1 .2}: p=0.9 beats 8, ties
    # 1; p=0.5 beats 6; p=0.7 beats 6, ties 1 → (8.5 + 6 + 6.5) / 27
    assert m["auc"] == pytest.approx(21 / 27)
    assert m["uauc_users"] == 3


def test_uauc_skips_single_class_users() -> None:
    s = np.array([[0.9, 0.1, 0.2], [0.3, 0.2, 0.1], [0.1, 0.5, 0.9]])
    y = np.array([[1, 0, 0], [0, 0, 0], [1, 1, 0]])
    ua = user_auc(s, y)
    assert math.isnan(ua[1]) and ua[0] == 1.0 and ua[2] == 0.0
    m = ranking_metrics(s, y, ks=(2,))
    assert m["uauc_users"] == 2 and m["uauc"] == pytest.approx(0.5)
    # user 2: positives at ranks 2 and 3 → recall@2 = 1/2, ndcg@2 = (1/log2 3) / ideal
    ideal = 1 + 1 / math.log2(3)
    assert m["recall@2"] == pytest.approx((1 + 0.5) / 2)
    assert m["ndcg@2"] == pytest.approx((1 + (1 / math.log2(3)) / ideal) / 2)


def test_variance_summary() -> None:
    v = variance_summary(np.array([0.1, np.nan, 0.3, 0.2]))
    assert v == pytest.approx({"median": 0.2, "mean": 0.2, "min": 0.1, "max": 0.3})
