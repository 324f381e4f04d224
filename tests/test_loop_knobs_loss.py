"""Backprop depth k and loss weights (docs/loop_knobs.md): which iterations get gradient, which
enter the loss with what weight; and that the defaults are the code before them, bit for bit."""
import pytest
import torch

from trainables.config import ConfigError
from trainables.model import build_model
from trainables.tasks import interleave
from trainables.training import loss_fn, loss_weights, make_optimizer, train_step


@pytest.fixture
def setup(tiny_config):
    def make(*overrides):
        config = tiny_config("curriculum.loops.start=12", *overrides)
        torch.manual_seed(0)
        model = build_model(config.model)
        with torch.no_grad():  # larger weights keep iterations distinct (no early fixed point)
            for p in model.backbone.blocks.parameters():
                p.mul_(8.0)
        gen = torch.Generator().manual_seed(1)
        return config, model, torch.randn(3, 6, 4, generator=gen), torch.randn(3, 6, generator=gen)
    return make


def traced(model, config, xs, ys, n):
    """(loss, every iteration's state, the predictions the loss read)."""
    trace, seen, original = [], {}, model.forward

    def forward(*a, **k):
        seen.update(original(*a, **k, trace=trace))
        return seen
    model.forward = forward
    try:
        return loss_fn(model, config, xs, ys, n), trace, seen
    finally:
        del model.forward


@pytest.mark.parametrize("overrides, differentiated", [
    ([], range(8, 13)),                                               # the reference: from min(S) = b-T+1
    (["training.backprop_depth=8"], range(5, 13)),                    # last T supervised, gradient through 8
    (["training.n_loop_window=1", "training.backprop_depth=8"], range(5, 13)),   # last prediction only, 8 deep
    (["training.backprop_depth=12"], range(1, 13)),                   # full backpropagation
])
def test_gradient_flows_through_exactly_the_last_k_iterations(setup, overrides, differentiated):
    config, model, xs, ys = setup(*overrides)
    loss, trace, _ = traced(model, config, xs, ys, 12)
    for state in trace:
        if state.requires_grad:
            state.retain_grad()
    loss.backward()
    with_grad = [t for t, state in enumerate(trace, 1) if state.requires_grad and state.grad is not None
                 and state.grad.abs().sum() > 0]
    assert with_grad == list(differentiated)
    assert [t for t, s in enumerate(trace, 1) if not s.requires_grad] == list(range(1, differentiated[0]))


@pytest.mark.parametrize("rule, decay, expected", [
    ("uniform", 0.5, [0.2] * 5),
    ("last", 0.5, [0, 0, 0, 0, 1]),
    ("geometric", 0.5, [1 / 31, 2 / 31, 4 / 31, 8 / 31, 16 / 31]),
    ("geometric", 1.0, [0.2] * 5),
])
def test_loss_weights_by_hand(rule, decay, expected):
    assert loss_weights(5, rule, decay) == pytest.approx(expected)


@pytest.mark.parametrize("rule, dilation, entered", [
    ("uniform", 1, {8: 0.2, 9: 0.2, 10: 0.2, 11: 0.2, 12: 0.2}),
    ("last", 1, {12: 1.0}),
    ("geometric", 1, {8: 1 / 31, 9: 2 / 31, 10: 4 / 31, 11: 8 / 31, 12: 16 / 31}),
    ("geometric", 2, {4: 1 / 31, 6: 2 / 31, 8: 4 / 31, 10: 8 / 31, 12: 16 / 31}),   # by supervised index
])
def test_the_loss_is_the_weighted_mean_of_the_entered_iterations(setup, rule, dilation, entered):
    config, model, xs, ys = setup(f"training.loss_weights={rule}", f"training.loop_dilation={dilation}")
    loss, _, predictions = traced(model, config, xs, ys, 12)
    assert sorted(predictions) == sorted(entered)
    by_hand = sum(w * torch.mean((predictions[t] - ys) ** 2).item() for t, w in entered.items())
    assert loss.item() == pytest.approx(by_hand, rel=1e-6)


def test_last_only_still_differentiates_the_window(setup):
    config, model, xs, ys = setup("training.loss_weights=last")       # gradient from b-T+1 = 8
    loss, trace, _ = traced(model, config, xs, ys, 12)
    assert [t for t, s in enumerate(trace, 1) if s.requires_grad] == list(range(8, 13))


def pre_change_loss(model, config, xs, ys, n):
    """The loss exactly as trainables computed it before the loop knobs (frozen copy)."""
    tr = config.training
    span = (tr.n_loop_window - 1) * tr.loop_dilation + 1
    keep = [t for t in range(n - span + 1, n + 1, tr.loop_dilation) if t >= 1]
    p = model.read_in(interleave(xs, ys))
    y, first, predictions = None, min(keep), {}
    if first > 1:
        with torch.inference_mode():
            for _ in range(1, first):
                y = model.backbone(p if y is None else y + p)
        y = y.clone()
    for t in range(first, n + 1):
        y = model.backbone(p if y is None else y + p)
        if t in keep:
            predictions[t] = model.predict(y)
    return torch.stack([torch.mean((predictions[t] - ys) ** 2) for t in keep]).mean()


@pytest.mark.parametrize("overrides", [[], ["training.loop_dilation=2"], ["training.n_loop_window=3"]])
def test_defaults_train_bit_for_bit_as_before(setup, overrides):
    config, model, xs, ys = setup(*overrides)
    before = build_model(config.model)
    before.load_state_dict(model.state_dict())
    opt_now, opt_before = make_optimizer(model, config), make_optimizer(before, config)
    for _ in range(3):
        now = train_step(model, opt_now, config, xs, ys, 12)
        loss = pre_change_loss(before, config, xs, ys, 12)
        opt_before.zero_grad(set_to_none=True)
        loss.backward()
        opt_before.step()
        assert torch.equal(now, loss.detach())
    for (name, a), b in zip(model.named_parameters(), before.parameters()):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("overrides, message", [
    (["training.backprop_depth=4"], r"'training.backprop_depth' \(k=4\) is below the loss window's span "
                                    r"\(T-1\)\*s\+1 = 5 \(T=5, s=1\)"),
    (["training.backprop_depth=13"],
     r"'training.backprop_depth' \(k=13\) exceeds 'curriculum.loops.start' \(12\)"),
    (["training.backprop_depth=-2"], r"'training.backprop_depth' must be >= 0"),
    (["training.loss_weights=geometric", "training.loss_weight_decay=0"],
     r"'training.loss_weight_decay' must be in \(0, 1\]"),
    (["training.loss_weight_decay=1.5"], r"'training.loss_weight_decay' must be in \(0, 1\]"),
    (["training.loss_weights=exp"], r"training.loss_weights"),
    (["model.family=standard", "training.backprop_depth=8"], r"'training.backprop_depth' applies to looped models only"),
    (["model.family=standard", "training.loss_weights=last"], r"'training.loss_weights' applies to looped models only"),
])
def test_impossible_backprop_and_weight_configs_name_the_field(tiny_config, overrides, message):
    with pytest.raises(ConfigError, match=message):
        tiny_config("curriculum.loops.start=12", *overrides)
