import json

import pytest
import torch
from torch import nn

from study.cli import main
from trainables import probe, train
from trainables.config import ConfigError, load_config
from trainables.probe_heads import (StackedProbes, apply_probes, evaluate, fit_step, grad_targets,
                               probe_prompts, wols_targets)
from trainables.probing import is_probe_checkpoint
from trainables.run_folder import read_metrics


@pytest.fixture(autouse=True)
def one_thread():
    """Toy-sized ops are far faster on one thread than contending for two."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_wols_is_min_norm_least_squares_and_recovers_w():
    gen = torch.Generator().manual_seed(0)
    xs = torch.randn(64, 7, 4, generator=gen)
    w = torch.randn(64, 4, 1, generator=gen)
    ys = (xs @ w).squeeze(2)
    targets = wols_targets(xs, ys)
    assert targets.shape == (4, 64, 4)
    torch.testing.assert_close(targets[3], w.squeeze(2), atol=1e-4, rtol=1e-4)  # i = d examples
    for i in range(1, 4):
        x, t = xs[:, :i], targets[i - 1].unsqueeze(2)
        torch.testing.assert_close((x @ t).squeeze(2), ys[:, :i], atol=1e-4, rtol=1e-4)  # fits
        in_row_space = x.transpose(1, 2) @ torch.linalg.pinv(x.transpose(1, 2)) @ t
        torch.testing.assert_close(in_row_space, t, atol=1e-4, rtol=1e-4)  # minimum norm


def test_grad_target_by_hand_and_control_prompts():
    xs, ys = probe_prompts(3, 5, 8, torch.Generator().manual_seed(1))
    targets = grad_targets(xs, ys)
    assert targets.shape == (5, 8, 3)
    for i in range(1, 6):
        by_hand = [sum(xs[b, j] * ys[b, j] for j in range(i)) / 5 for b in range(8)]
        torch.testing.assert_close(targets[i - 1], torch.stack(by_hand))
    xs, ys = probe_prompts(3, 5, 8, torch.Generator().manual_seed(1), ones_w=True)
    torch.testing.assert_close(wols_targets(xs, ys)[2], torch.ones(8, 3), atol=1e-4, rtol=1e-4)


def one_probe(probes, row, k):
    """Probe (row, k) as its own pooling vector and nn.Module, the stacked weights copied in."""
    mlp = nn.Sequential(nn.Linear(*probes.w1.shape[2:]), nn.ReLU(), nn.Linear(*probes.w2.shape[2:]))
    with torch.no_grad():
        for linear, w, b in ((mlp[0], probes.w1, probes.b1), (mlp[2], probes.w2, probes.b2)):
            linear.weight.copy_(w[row, k].T)
            linear.bias.copy_(b[row, k])
    return nn.Parameter(probes.alpha[row, k].detach().clone()), mlp


def test_batched_probes_equal_per_probe_modules():
    torch.manual_seed(0)
    sets, n_states, n_targets, positions, width, batch = 2, 3, 4, 6, 8, 10
    probes = StackedProbes(sets, n_states, n_targets, positions, width, hidden=5, out=3)
    states = [torch.randn(batch, positions, width) for _ in range(n_states)]
    targets = torch.randn(n_targets, batch, 3)
    fit_step(probes, iter(states), targets, set_index=1, chunk=2)  # gradients of set 1 only
    batched = evaluate(probes, iter(states), targets, chunk=2)
    predictions = apply_probes(probes.rows(1, 0, n_states), torch.stack([s.transpose(0, 1) for s in states]))

    one_by_one = torch.zeros(sets, n_states)
    for set_index in range(sets):
        for s in range(n_states):
            for k in range(n_targets):
                row = set_index * n_states + s
                alpha, mlp = one_probe(probes, row, k)
                pred = mlp((states[s] * alpha.softmax(0)[None, :, None]).sum(1))
                err = ((pred - targets[k]) ** 2).mean(1)
                one_by_one[set_index, s] += err.mean().item() / n_targets
                if set_index == 1:
                    torch.testing.assert_close(predictions[s, k], pred.detach())
                    (err.sum() / (batch * n_states * n_targets)).backward()
                    for stacked, single in ((probes.alpha, alpha.grad), (probes.w1, mlp[0].weight.grad.T),
                                            (probes.b1, mlp[0].bias.grad), (probes.w2, mlp[2].weight.grad.T),
                                            (probes.b2, mlp[2].bias.grad)):
                        torch.testing.assert_close(stacked.grad[row, k], single)
    torch.testing.assert_close(batched, one_by_one)
    assert probes.alpha.grad[:n_states].abs().sum() == 0


def test_planted_signal_is_decoded_and_noise_is_not():
    torch.manual_seed(0)
    n_targets, out, positions, width = 2, 3, 4, 16
    mixing = torch.randn(positions, n_targets * out, width)  # a fixed linear map per position
    probes = StackedProbes(1, 2, n_targets, positions, width, 32, out)
    optimizer = torch.optim.Adam(probes.parameters(), lr=1e-2)

    def batch_of_states(batch=128):
        targets = torch.randn(n_targets, batch, out)
        flat = targets.transpose(0, 1).reshape(batch, 1, 1, -1)
        planted = (flat @ mixing).squeeze(2) + 0.01 * torch.randn(batch, positions, width)
        return [planted, torch.randn(batch, positions, width)], targets

    for _ in range(100):
        states, targets = batch_of_states()
        fit_step(probes, iter(states), targets)
        optimizer.step()
    states, targets = batch_of_states(2048)
    planted, noise = evaluate(probes, iter(states), targets)[0].tolist()
    assert planted < 0.01, planted   # predicting 0 scores about 1
    assert noise > 0.9, noise


@pytest.fixture
def trained(tiny_config, tmp_path):
    def make(*overrides, preset="paper_linear_regression_looped_cpu"):
        config = tiny_config("training.train_steps=4", "training.eval_every=4",
                             "training.checkpoint_every=4", *overrides, preset=preset)
        run = tmp_path / f"trained_{config.model.family}"
        train(config, out_dir=run, num_threads=1)
        return run
    return make


def probe_config(run, *overrides):
    return load_config(run / "config.yaml", ["probe.batch_size=32", "probe.chunk=5", *overrides])


def test_probe_run_folder_end_to_end(trained, tmp_path):
    run = trained()
    config = probe_config(run, "probe.steps=6", "probe.eval_every=3", "probe.control=true")
    reports = []
    summary = probe(config, lambda m, c: reports.append((m, c)), run_dir=run, num_threads=1)
    out = run / "probe_wols"
    assert {p.name for p in out.iterdir()} == {"config.yaml", "metrics.jsonl", "checkpoints",
                                               "summary.json", "probe.png"}
    assert [m["step"] for m, _ in reports] == [3, 6] and all(c for _, c in reports)
    assert all(isinstance(v, (int, float)) for m, _ in reports for v in m.values())
    assert {"probe/err_min", "probe/err_last_state", "probe/control_err_min"} <= reports[-1][0].keys()
    events = read_metrics(out)
    assert [e["step"] for e in events] == [3, 6]
    b = config.loop_budget
    assert all(len(events[-1][key]) == b + 1 for key in ("err", "train_err", "control_err", "control_train_err"))
    assert json.loads((out / "summary.json").read_text())["err"] == events[-1]["err"] == summary["err"]
    assert summary["probe/err_min"] == min(summary["err"])
    assert 0.5 < summary["err_predicting_zero"] < 1   # about (d+1)/2d

    # the control probes are extra: the task probes are those of a run without control
    alone = probe(probe_config(run, "probe.steps=6", "probe.eval_every=3"), run_dir=run,
                  out_dir=tmp_path / "alone", num_threads=1)
    assert alone["err"] == summary["err"] and alone["control_err"] is None

    with pytest.raises(ConfigError, match="model.n_embd"):
        probe(probe_config(run, "model.n_embd=32"), run_dir=run, out_dir=tmp_path / "bad")


def test_probe_exact_resume(trained, tmp_path):
    run = trained()
    config = probe_config(run, "probe.steps=4", "probe.eval_every=2", "probe.control=true",
                          "probe.target=grad", "probe.loop_iterations=7")
    straight = probe(config, run_dir=run, out_dir=tmp_path / "straight", num_threads=1)
    half = probe_config(run, "probe.steps=2", "probe.eval_every=2", "probe.control=true",
                        "probe.target=grad", "probe.loop_iterations=7")
    probe(half, run_dir=run, out_dir=tmp_path / "split", num_threads=1)
    split = probe(config, run_dir=run, out_dir=tmp_path / "split", num_threads=1,
                  resume_from=tmp_path / "split" / "checkpoints" / "step_00000002")
    assert len(straight["err"]) == 8
    assert split["err"] == straight["err"] and split["control_err"] == straight["control_err"]
    assert read_metrics(tmp_path / "split") == read_metrics(tmp_path / "straight")
    a = torch.load(tmp_path / "straight/checkpoints/step_00000004/state.pt", weights_only=True)
    b = torch.load(tmp_path / "split/checkpoints/step_00000004/state.pt", weights_only=True)
    assert all(torch.equal(a["probes"][k], b["probes"][k]) for k in a["probes"])
    # how a probe study trial knows which phase its checkpoint resumes
    assert is_probe_checkpoint(tmp_path / "split/checkpoints/step_00000002")
    assert not is_probe_checkpoint(run / "checkpoints" / "step_00000004")


def test_cli_probes_standard_and_looped_on_one_figure(trained, tmp_path, capsys):
    looped = trained()
    standard = trained("model.n_layer=2", preset="paper_linear_regression_standard_cpu")
    code = main(["probe", str(standard), str(looped), "--target", "grad", "--control", "--threads", "1",
                 "--set", "probe.steps=2", "--set", "probe.batch_size=16", "--out", str(tmp_path / "both")])
    assert code == 0
    assert (tmp_path / "both" / "probe.png").is_file()
    standard_summary = json.loads((tmp_path / "both" / standard.name / "summary.json").read_text())
    assert len(standard_summary["err"]) == 3 and standard_summary["target"] == "grad"
    printed = capsys.readouterr().out
    assert "standard L=2" in printed and "control" in printed


@pytest.mark.parametrize("err, rise, tail, depth", [
    ([1.0, 0.5, 0.2, 0.3, 0.4], 1.0, 0.75, 0.5),              # a rising tail: last 0.4 = 2x the minimum
    ([1.0, 0.5, 0.2, 0.2, 0.2], 0.0, 0.0, 0.5),               # a flat tail after the minimum
    ([1.0, 0.8, 0.6, 0.4, 0.2], 0.0, 0.5, 1.0),               # the minimum at the last state (tail 0.4, 0.2)
    ([0.9, 0.6, 0.3, 0.35, 0.6, 0.45, 0.3, 0.6], 1.0, 0.5, 2 / 7),   # tail: the last 2 of 8; first minimum
])
def test_late_rise_of_hand_made_probe_curves(err, rise, tail, depth):
    from trainables.probing import late_rise, scalars

    got = scalars({"step": 10, "err": err})
    assert got["probe/late_rise"] == pytest.approx(rise)
    assert got["probe/late_rise_tail"] == pytest.approx(tail)
    assert got["probe/argmin_depth"] == pytest.approx(depth)
    assert late_rise(err) == {k: got[k] for k in ("probe/late_rise", "probe/late_rise_tail", "probe/argmin_depth")}
