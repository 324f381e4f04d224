import math

import pytest
import torch

from trainables.config import TaskConfig
from trainables.evaluation import averaging, bootstrap_band, least_squares, nearest_neighbours
from trainables.tasks import normaliser, sample_prompts


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_linear_regression_is_unscaled_and_truncated_by_the_curriculum():
    xs, ys = sample_prompts(TaskConfig("linear_regression"), 8, 4000, 6, 5, gen())
    assert xs.shape == (4000, 6, 8) and ys.shape == (4000, 6)
    assert xs[:, :, 5:].abs().sum() == 0
    assert abs(ys.var().item() - 5) < 0.4  # y = x.w with 5 active N(0,1) coords, no 1/sqrt(d)


def test_sparse_regression_keeps_sparsity_coordinates():
    task = TaskConfig("sparse_linear_regression", sparsity=3)
    xs, ys = sample_prompts(task, 10, 2000, 12, 10, gen())
    w = torch.linalg.lstsq(xs, ys.unsqueeze(2)).solution.squeeze(2)
    nonzero = (w.abs() > 1e-4).sum(dim=1)
    assert (nonzero == 3).float().mean() > 0.99
    assert normaliser(task, 10) == 3


def test_noisy_relu_and_tree_tasks():
    xs, ys = sample_prompts(TaskConfig("noisy_linear_regression", noise_std=0.1), 5, 500, 30, 5, gen())
    w = torch.linalg.lstsq(xs, ys.unsqueeze(2)).solution
    assert abs((xs @ w).squeeze(2).sub(ys).std().item() - 0.1) < 0.02
    xs, ys = sample_prompts(TaskConfig("relu_2nn_regression", hidden=50), 5, 2000, 4, 5, gen())
    assert (ys != 0).all() and abs(ys.var().item() - 5) < 1.0  # E[y^2] = (2/h) h E[relu(z)^2] |x|^2
    xs, ys = sample_prompts(TaskConfig("decision_tree", depth=2), 6, 300, 40, 2, gen())
    assert xs[:, :, 2:].abs().sum() > 0  # trees always see the full x
    assert all(len(set(row.tolist())) <= 4 for row in ys)  # at most 2^depth leaf values
    assert normaliser(TaskConfig("decision_tree"), 6) == 1


def test_least_squares_is_exact_once_k_reaches_d():
    d = 5
    xs, ys = sample_prompts(TaskConfig("linear_regression"), d, 64, 11, d, gen())
    err = ((least_squares(xs.double(), ys.double()) - ys.double()) ** 2).mean(dim=0) / d
    assert err[0] == pytest.approx(ys[:, 0].double().pow(2).mean().item() / d, rel=1e-9)  # predicts 0 at k = 0
    assert err[d:].max() < 1e-10
    assert err[2] > 0.1


def test_nearest_neighbours_and_averaging_by_hand():
    xs = torch.tensor([[[0.0], [1.0], [10.0], [1.2], [0.9]]])
    ys = torch.tensor([[1.0, 2.0, 3.0, 4.0, 5.0]])
    knn = nearest_neighbours(xs, ys)
    assert knn[0, 0] == 0 and knn[0, 1] == 1.0 and knn[0, 2] == 1.5  # k'=min(k,3) neighbours
    assert knn[0, 4] == pytest.approx((2.0 + 4.0 + 1.0) / 3)          # 3 nearest of x=0.9
    avg = averaging(xs, ys)
    assert avg[0, 0] == 0 and avg[0, 2] == pytest.approx(10.0 * (0 * 1 + 1 * 2) / 2)


def test_bootstrap_band_brackets_the_mean():
    errors = torch.rand(500, 3, generator=gen())
    lo, hi = bootstrap_band(errors, 1000, 0)
    mean = errors.mean(dim=0)
    se = errors.std(dim=0) / math.sqrt(500)
    for k in range(3):
        assert lo[k] < mean[k] < hi[k]
        assert (hi[k] - lo[k]) == pytest.approx(2 * 1.645 * se[k].item(), rel=0.15)
