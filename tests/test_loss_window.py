"""The loss window and its dilation (SPEC section 4), pinned by autograd and by the worked
example's literal lists, never by re-reading the implementation's own list."""
import pytest
import torch

from trainables import supervised_iterations
from trainables.config import ModelConfig
from trainables.model import LoopedTransformer
from trainables.tasks import interleave
from trainables.training import loss_fn

# SPEC section 4's worked example, b = 60, T = 15
WORKED = {1: (list(range(46, 61)), 46), 2: (list(range(32, 61, 2)), 32), 4: (list(range(4, 61, 4)), 4)}


@pytest.mark.parametrize("dilation", [1, 2, 4])
def test_supervised_iterations_match_the_worked_example(dilation):
    assert supervised_iterations(60, 15, dilation) == WORKED[dilation][0]


def test_supervised_iterations_keep_only_positive():
    assert supervised_iterations(5, 4, 2) == [1, 3, 5]
    assert supervised_iterations(3, 5, 1) == [1, 2, 3]


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    model = LoopedTransformer(ModelConfig(family="looped", n_layer=1, n_embd=8, n_head=2, n_dims=3))
    with torch.no_grad():  # larger weights keep iterations distinct (no early fixed point)
        for p in model.backbone.blocks.parameters():
            p.mul_(8.0)
    return model, torch.randn(2, 4, 3), torch.randn(2, 4)


def window_config(tiny_config, dilation):
    """b = 60 from the first step, T = 15: SPEC's worked example."""
    return tiny_config("training.n_loop_window=15", f"training.loop_dilation={dilation}",
                       "curriculum.loops.start=60", "curriculum.loops.end=60", "model.n_embd=8")


def traced_loss(model, config, xs, ys, trace: list) -> torch.Tensor:
    """The training loss, with every iteration's state appended to `trace`."""
    original = model.forward
    model.forward = lambda *a, **k: original(*a, **k, trace=trace)
    try:
        return loss_fn(model, config, xs, ys, 60)
    finally:
        del model.forward


@pytest.mark.parametrize("dilation", [1, 2, 4])
def test_gradient_reaches_exactly_the_differentiated_span(setup, tiny_config, dilation):
    model, xs, ys = setup
    config = window_config(tiny_config, dilation)
    trace: list[torch.Tensor] = []
    loss = traced_loss(model, config, xs, ys, trace)
    for state in trace:
        if state.requires_grad:
            state.retain_grad()
    loss.backward()
    first = WORKED[dilation][1]
    grads = [s.grad.abs().sum().item() if s.grad is not None else 0.0 for s in trace]
    assert all(g == 0.0 for g in grads[: first - 1]), "iterations before the window must get no gradient"
    assert all(g > 0.0 for g in grads[first - 1:]), "every iteration of the span must get gradient"


@pytest.mark.parametrize("dilation", [1, 2, 4])
def test_loss_equals_independent_mean_over_worked_iterations(setup, tiny_config, dilation):
    """The loss equals the mean squared error at the worked example's iterations, computed by
    a plain loop; and its parameter gradient equals that of the same loss with the state
    detached where the span starts."""
    model, xs, ys = setup
    config = window_config(tiny_config, dilation)
    model.zero_grad()
    loss = loss_fn(model, config, xs, ys, 60)
    loss.backward()
    ours = [p.grad.clone() for p in model.parameters()]

    model.zero_grad()
    iterations, first = WORKED[dilation]
    predictions = model(xs, ys, 60, keep=range(1, 61))  # no_grad not involved: keep starts at 1
    per_iteration = {t: ((predictions[t] - ys) ** 2).mean() for t in range(1, 61)}
    expected = torch.stack([per_iteration[t] for t in iterations]).mean()
    assert torch.allclose(loss, expected, rtol=1e-6)
    shifted = torch.stack([per_iteration[t - 1] for t in iterations]).mean()
    assert not torch.allclose(loss, shifted, rtol=1e-6)  # the check can tell iterations apart
    # the same loss with the state detached at the start of the span, by hand
    trace: list[torch.Tensor] = []
    with torch.no_grad():
        model(xs, ys, first - 1, trace=trace) if first > 1 else None
    p = model.read_in(interleave(xs, ys))
    y = trace[-1].detach() if trace else torch.zeros_like(p)
    hand = []
    for t in range(first, 61):
        y = model.backbone(y + p)
        if t in iterations:
            hand.append(((model.read_out(y)[:, 0::2, 0] - ys) ** 2).mean())
    torch.stack(hand).mean().backward()
    for a, p_ in zip(ours, model.parameters()):
        assert torch.allclose(a, p_.grad, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("dilation", [1, 2, 4])
def test_predictions_enter_the_loss_at_exactly_b_minus_js(setup, tiny_config, dilation):
    """Every read_out call is tagged with its iteration; autograd says which ones reach the loss."""
    model, xs, ys = setup
    config = window_config(tiny_config, dilation)
    trace: list[torch.Tensor] = []
    calls: list[tuple[int, torch.Tensor]] = []

    def tag(module, inputs, output):
        output.retain_grad()
        calls.append((len(trace), output))

    hook = model.read_out.register_forward_hook(tag)
    try:
        traced_loss(model, config, xs, ys, trace).backward()
    finally:
        hook.remove()
    entered = [t for t, out in calls if out.grad is not None and out.grad.abs().sum() > 0]
    assert entered == WORKED[dilation][0]
    assert 60 in entered  # the fork's inverted mask never supervised the last iteration
