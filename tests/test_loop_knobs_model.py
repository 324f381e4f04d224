"""Input injection and the test-time depth metrics (docs/loop_knobs.md)."""
import contextlib

import pytest
import torch

from trainables import train
from trainables.config import ConfigError, ModelConfig
from trainables.evaluation import Evaluator, StateChange, eval_metrics
from trainables.model import LoopedTransformer, backbone_parameter_count
from trainables.run_folder import latest_checkpoint
from trainables.tasks import interleave

TOY = dict(family="looped", n_layer=1, n_embd=8, n_head=2, n_dims=3)


def toy(injection):
    torch.manual_seed(0)
    model = LoopedTransformer(ModelConfig(**TOY, injection=injection))
    with torch.no_grad():
        for p in model.backbone.blocks.parameters():
            p.mul_(8.0)
    return model, torch.randn(2, 4, 3), torch.randn(2, 4)


def states(model, xs, ys, n):
    trace = []
    with torch.no_grad():
        model(xs, ys, n, trace=trace)
    return trace


def test_none_injects_the_input_once():
    model, xs, ys = toy("none")
    trace = states(model, xs, ys, 4)
    with torch.no_grad():
        p = model.read_in(interleave(xs, ys))
        assert torch.equal(trace[0], model.backbone(p))
        for t in range(1, 4):
            assert torch.equal(trace[t], model.backbone(trace[t - 1]))


def test_add_injects_the_input_at_every_iteration():
    model, xs, ys = toy("add")
    none, _, _ = toy("none")
    trace, without = states(model, xs, ys, 3), states(none, xs, ys, 3)
    assert torch.equal(trace[0], without[0]) and not torch.allclose(trace[2], without[2])


def test_linear_maps_state_and_input_and_starts_as_add():
    model, xs, ys = toy("linear")
    add, _, _ = toy("add")
    add.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("inject.")})
    for a, b in zip(states(model, xs, ys, 4), states(add, xs, ys, 4)):
        assert torch.allclose(a, b, atol=1e-5)                       # [I I], no bias: Y + P
    with torch.no_grad():
        model.inject.weight.normal_(std=0.3)
        model.inject.bias.normal_()
        trace = states(model, xs, ys, 3)
        p = add.read_in(interleave(xs, ys))
        W, c = model.inject.weight, model.inject.bias
        assert torch.allclose(trace[0], model.backbone(p @ W[:, 8:].T + c), atol=1e-6)
        assert torch.allclose(trace[2], model.backbone(trace[1] @ W[:, :8].T + p @ W[:, 8:].T + c), atol=1e-6)
    predictions = model(xs, ys, 3)
    predictions[3].sum().backward()
    assert model.inject.weight.grad.abs().sum() > 0


def test_parameter_counts_say_which_injection():
    counts = {i: backbone_parameter_count(LoopedTransformer(ModelConfig(**TOY, injection=i)))
              for i in ("add", "none", "linear")}
    assert counts["add"] == counts["none"] and counts["linear"] - counts["add"] == 2 * 8 * 8 + 8
    paper = ModelConfig(family="looped", n_layer=1, n_embd=256, n_head=8)
    assert backbone_parameter_count(LoopedTransformer(paper)) == 790_272            # SPEC, unchanged


def test_a_checkpoint_of_one_injection_refuses_another(tiny_config, tmp_path):
    config = tiny_config("model.injection=linear", "training.train_steps=2", "training.eval_every=2",
                         "training.checkpoint_every=2")
    train(config, out_dir=tmp_path / "run", num_threads=1)
    for other in ("add", "none"):
        with pytest.raises(ConfigError, match=f"model.injection: 'linear' -> '{other}'"):
            train(tiny_config(f"model.injection={other}", "training.train_steps=4"), out_dir=tmp_path / "run",
                  num_threads=1, resume_from=latest_checkpoint(tmp_path / "run"))
    with pytest.raises(ConfigError, match="'model.injection' applies to looped models only"):
        tiny_config("model.family=standard", "model.injection=linear")


def test_state_change_by_hand():
    recorder = StateChange()
    a = torch.tensor([[[3.0, 4.0]], [[1.0, 0.0]]])              # two prompts, one token, width 2
    for state in (a, a * 2, a * 2):
        recorder.append(state)
    assert [c.tolist() for c in recorder.changes] == [[1.0, 1.0], [0.0, 0.0]]


@pytest.fixture(scope="module")
def evaluated():
    from trainables.config import load_config
    config = load_config("paper_linear_regression_looped_cpu",
                         ["model.n_embd=16", "model.n_head=2", "eval.n_prompts=40", "eval.bootstrap=20",
                          "eval.iteration_counts=[3]", "eval.depth_multiples=[2, 4]"])
    torch.manual_seed(0)
    model = LoopedTransformer(config.model)
    evaluator = Evaluator(config, chunk=16)
    return config, model, evaluator, evaluator(model, contextlib.nullcontext)


def test_error_and_state_change_at_depths_past_b(evaluated):
    config, model, evaluator, result = evaluated
    b = config.loop_budget                                     # 12: scored at 3, 12, 24 and 48
    assert sorted(result["curves_at_iterations"]) == [3, b, 2 * b, 4 * b]
    assert len(result["last_point_vs_iteration"]) == 4 * b and len(result["state_change"]) == 4 * b
    for n, err in result["err_last_at_iterations"].items():
        assert err == pytest.approx(result["last_point_vs_iteration"][n - 1], rel=1e-12)
    trace = states(model, evaluator.xs, evaluator.ys, 4 * b)
    by_hand = [((trace[t] - trace[t - 1]).flatten(1).norm(dim=1) / trace[t - 1].flatten(1).norm(dim=1)).mean().item()
               for t in range(1, 4 * b)]
    assert result["state_change"][0] is None
    assert result["state_change"][1:] == pytest.approx(by_hand, rel=1e-5)


def test_the_summary_metrics_a_study_can_optimise(evaluated):
    config, _, _, result = evaluated
    metrics = eval_metrics(result, config)
    at = result["err_last_at_iterations"]
    assert metrics == {"eval/err_last": result["err_last"], "eval/err_mean": result["err_mean"],
                       "eval/err_last_at_2b": at[24], "eval/err_last_at_4b": at[48],
                       "eval/extrapolation_ratio": at[24] / at[12],
                       "eval/state_change_at_b": result["state_change"][11],
                       "eval/last_state_change": result["state_change"][47]}
    assert metrics["eval/err_last"] == pytest.approx(at[12], rel=1e-9)


def test_depth_multiples_must_be_positive(tiny_config):
    with pytest.raises(ConfigError, match=r"'eval.depth_multiples\[1\]' must be positive"):
        tiny_config("eval.depth_multiples=[2, 0]")
