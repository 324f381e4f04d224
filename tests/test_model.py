import pytest
import torch

from trainables.config import ModelConfig
from trainables.model import LoopedTransformer, StandardTransformer, backbone_parameter_count, build_model
from trainables.tasks import interleave


def test_parameter_counts_match_the_paper():
    one_block = build_model(ModelConfig(family="standard", n_layer=1, n_embd=256, n_head=8))
    assert sum(p.numel() for p in one_block.backbone.blocks.parameters()) == 789_760
    standard = build_model(ModelConfig(family="standard", n_layer=12, n_embd=256, n_head=8))
    assert backbone_parameter_count(standard) == 9_477_632
    looped = build_model(ModelConfig(family="looped", n_layer=1, n_embd=256, n_head=8))
    assert backbone_parameter_count(looped) == 790_272
    assert looped.backbone.wpe.shape == (203, 256)


def test_initialisation_follows_gpt2():
    torch.manual_seed(0)
    model = build_model(ModelConfig(family="standard", n_layer=8, n_embd=256, n_head=8))
    block = model.backbone.blocks[0]
    assert abs(block.attn.c_attn.weight.std().item() - 0.02) < 1e-3
    assert abs(block.mlp.c_proj.weight.std().item() - 0.02 / 4) < 3e-4  # 0.02 / sqrt(2 * 8)
    assert abs(model.backbone.wpe.std().item() - 0.02) < 1e-3
    assert block.attn.c_attn.bias.abs().max() == 0
    # read_in keeps PyTorch's default (uniform +-1/sqrt(fan_in)) init, not N(0, 0.02)
    assert model.read_in.weight.abs().max().item() > 0.1


def test_token_layout_alternates_x_and_wide_y():
    xs = torch.arange(2 * 3 * 4, dtype=torch.float32).view(2, 3, 4)
    ys = torch.tensor([[10.0, 11, 12], [20, 21, 22]])
    z = interleave(xs, ys)
    assert z.shape == (2, 6, 4)
    assert torch.equal(z[:, 0::2], xs)
    assert torch.equal(z[:, 1::2, 0], ys) and z[:, 1::2, 1:].abs().sum() == 0


@pytest.mark.parametrize("family", ["standard", "looped"])
def test_prediction_i_sees_exactly_x1_y1_to_xi(family):
    torch.manual_seed(0)
    model = build_model(ModelConfig(family=family, n_layer=2, n_embd=16, n_head=2, n_dims=3))
    run = (lambda x, y: model(x, y)) if family == "standard" else (lambda x, y: model(x, y, 4)[4])
    xs, ys = torch.randn(2, 5, 3), torch.randn(2, 5)
    base = run(xs, ys)
    assert base.shape == (2, 5)
    i = 2
    ys2 = ys.clone(); ys2[:, i] += 5.0          # y_i itself must not leak into prediction i
    xs2 = xs.clone(); xs2[:, i] += 5.0          # x_i must matter for prediction i
    xs3 = xs.clone(); xs3[:, i + 1:] += 5.0     # later points must not matter
    assert torch.allclose(run(xs, ys2)[:, : i + 1], base[:, : i + 1])
    assert not torch.allclose(run(xs2, ys)[:, i], base[:, i])
    assert torch.allclose(run(xs3, ys)[:, : i + 1], base[:, : i + 1])


def test_looped_forward_equals_hand_unrolled_block():
    torch.manual_seed(0)
    model = LoopedTransformer(ModelConfig(family="looped", n_layer=1, n_embd=16, n_head=2, n_dims=3))
    xs, ys = torch.randn(4, 5, 3), torch.randn(4, 5)
    b = 7
    out = model(xs, ys, b, keep=range(1, b + 1))
    block, wpe, ln_f = model.backbone.blocks[0], model.backbone.wpe, model.backbone.ln_f
    p = model.read_in(interleave(xs, ys))
    y = torch.zeros_like(p)
    for t in range(1, b + 1):
        y = ln_f(block(y + p + wpe[:10]))  # input injection, positions and ln_f every iteration
        assert torch.allclose(out[t], model.read_out(y)[:, 0::2, 0], atol=1e-6), t


def test_standard_forward_equals_explicit_layers():
    torch.manual_seed(0)
    model = StandardTransformer(ModelConfig(family="standard", n_layer=3, n_embd=16, n_head=2, n_dims=3))
    xs, ys = torch.randn(4, 5, 3), torch.randn(4, 5)
    h = model.read_in(interleave(xs, ys)) + model.backbone.wpe[:10]
    for block in model.backbone.blocks:
        h = block(h)
    expected = model.read_out(model.backbone.ln_f(h))[:, 0::2, 0]
    assert torch.allclose(model(xs, ys), expected, atol=1e-6)


def test_probe_states_are_pre_ln_f_residuals():
    torch.manual_seed(0)
    model = LoopedTransformer(ModelConfig(family="looped", n_layer=1, n_embd=16, n_head=2, n_dims=3))
    xs, ys = torch.randn(2, 5, 3), torch.randn(2, 5)
    states = list(model.states(xs, ys, 4))
    assert len(states) == 5 and not any(s.requires_grad for s in states)
    assert torch.allclose(states[0], model.read_in(interleave(xs, ys)))
    trace = []
    model(xs, ys, 4, trace=trace)
    for t in range(1, 5):  # the looped state fed back is ln_f of the probed residual
        assert torch.allclose(model.backbone.ln_f(states[t]), trace[t - 1], atol=1e-6)
    standard = StandardTransformer(ModelConfig(family="standard", n_layer=3, n_embd=16, n_head=2, n_dims=3))
    assert len(list(standard.states(xs, ys))) == 4


def test_every_cpu_attention_form_computes_causal_softmax_attention():
    """causal_attention picks the fused kernel or explicit matmuls by dtype and threads (for
    speed only): each form equals the formula, forward and backward."""
    from trainables.model import causal_attention

    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 4, 7, 8, dtype=torch.float64).requires_grad_() for _ in range(3))
    mask = torch.ones(7, 7, dtype=torch.bool).tril()
    scores = (q @ k.transpose(-1, -2) / 8 ** 0.5).masked_fill(~mask, float("-inf"))
    expected = torch.softmax(scores, -1) @ v
    grads = torch.autograd.grad(expected.square().sum(), (q, k, v))
    threads = torch.get_num_threads()
    try:
        for n in (1, 2):                         # 1: fused kernel; 2: explicit when differentiated
            torch.set_num_threads(n)
            for dtype, tol in ((torch.float32, 1e-5), (torch.bfloat16, 3e-2)):
                leaves = [t.detach().to(dtype).requires_grad_() for t in (q, k, v)]
                out = causal_attention(*leaves)
                assert torch.allclose(out.double(), expected, atol=tol), (n, dtype)
                got = torch.autograd.grad(out.float().square().sum(), leaves)
                assert all(torch.allclose(g.double(), e, atol=tol * 10) for g, e in zip(got, grads)), (n, dtype)
    finally:
        torch.set_num_threads(threads)
