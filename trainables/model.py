"""GPT-2 style decoders without token embeddings (SPEC section 3): standard and looped.

Both read d-wide tokens x_1, y_1, x_2, ... through `read_in`, run a backbone (learned
positions, pre-LN blocks, final LayerNorm) and predict y_i from the x_i token via `read_out`.
The looped model applies one backbone b times with input injection: Y_t = backbone(Y_{t-1} + P)
(`model.injection`, docs/loop_knobs.md: `add`, the reference; `none`; or a learned `linear` map).
"""
from __future__ import annotations

import functools
import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig
from .tasks import interleave


class CausalSelfAttention(nn.Module):
    def __init__(self, n_embd: int, n_head: int):
        super().__init__()
        self.n_head = n_head
        self.c_attn = nn.Linear(n_embd, 3 * n_embd)
        self.c_proj = nn.Linear(n_embd, n_embd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, seq, width = x.shape
        q, k, v = self.c_attn(x).view(batch, seq, 3, self.n_head, width // self.n_head).unbind(2)
        y = causal_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        return self.c_proj(y.transpose(1, 2).reshape(batch, seq, width))


@functools.lru_cache(maxsize=32)
def _causal_bias(seq: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """[seq, seq] additive mask: 0 on and below the diagonal, -inf above."""
    return torch.full((seq, seq), float("-inf"), dtype=dtype, device=device).triu(1)


def causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(head_dim) + causal mask) v for [batch, heads, seq, head_dim] inputs.

    On CPU the fastest form depends on dtype and threads (measured by bench/ablation.py, runs
    in bench/results/): PyTorch's fused kernel is far slower in bfloat16, and in float32 its
    backward parallelises worse than explicit baddbmm + softmax + bmm beyond one thread. So
    CPU bfloat16 always, and CPU float32 attention that autograd differentiates at more than
    one thread, run explicitly; everything else (and every GPU) uses the fused kernel.
    """
    explicit = q.dtype == torch.bfloat16 or (torch.get_num_threads() > 1 and torch.is_grad_enabled()
                                             and q.requires_grad)
    if q.device.type == "cpu" and explicit:
        batch, heads, seq, head_dim = q.shape
        q, k, v = (t.reshape(batch * heads, seq, head_dim) for t in (q, k, v))
        scores = torch.baddbmm(_causal_bias(seq, q.dtype, q.device), q, k.transpose(1, 2),
                               alpha=head_dim ** -0.5)
        return torch.bmm(torch.softmax(scores, dim=-1), v).view(batch, heads, seq, head_dim)
    return F.scaled_dot_product_attention(q, k, v, is_causal=True)


class MLP(nn.Module):
    def __init__(self, n_embd: int):
        super().__init__()
        self.c_fc = nn.Linear(n_embd, 4 * n_embd)
        self.c_proj = nn.Linear(4 * n_embd, n_embd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(F.gelu(self.c_fc(x), approximate="tanh"))


class Block(nn.Module):
    def __init__(self, n_embd: int, n_head: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(n_embd, eps=1e-5)
        self.attn = CausalSelfAttention(n_embd, n_head)
        self.ln_2 = nn.LayerNorm(n_embd, eps=1e-5)
        self.mlp = MLP(n_embd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class Backbone(nn.Module):
    """inputs + wpe -> blocks -> ln_f, with GPT-2's initialisation."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.wpe = nn.Parameter(torch.empty(2 * config.n_positions + 1, config.n_embd))
        self.blocks = nn.ModuleList(Block(config.n_embd, config.n_head) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd, eps=1e-5)
        nn.init.normal_(self.wpe, std=0.02)
        for name, module in self.named_modules():
            if isinstance(module, nn.Linear):
                # residual output projections are scaled down by depth, as in GPT-2
                std = 0.02 / math.sqrt(2 * config.n_layer) if name.endswith("c_proj") else 0.02
                nn.init.normal_(module.weight, std=std)
                nn.init.zeros_(module.bias)

    def residual(self, h: torch.Tensor) -> Iterator[torch.Tensor]:
        """The residual stream after each block (before ln_f)."""
        h = h + self.wpe[: h.shape[1]]
        for block in self.blocks:
            h = block(h)
            yield h

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        for h in self.residual(h):
            pass
        return self.ln_f(h)


class _Transformer(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.read_in = nn.Linear(config.n_dims, config.n_embd)
        self.backbone = Backbone(config)
        self.read_out = nn.Linear(config.n_embd, 1)

    def predict(self, hidden: torch.Tensor) -> torch.Tensor:
        """Predictions for y_1..y_n, read at the x tokens (even positions): [batch, n]."""
        return self.read_out(hidden[:, 0::2]).squeeze(2)


class StandardTransformer(_Transformer):
    def forward(self, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        return self.predict(self.backbone(self.read_in(interleave(xs, ys))))

    @torch.no_grad()
    def states(self, xs: torch.Tensor, ys: torch.Tensor) -> Iterator[torch.Tensor]:
        """Probe states: index 0 the read_in embedding, then the residual after each layer."""
        p = self.read_in(interleave(xs, ys))
        yield p
        yield from self.backbone.residual(p)


class LoopedTransformer(_Transformer):
    def __init__(self, config: ModelConfig):
        super().__init__(config)
        if config.injection == "linear":
            # Huginn's adapter: a learned map of [Y_{t-1}, P]; [I I] and no bias start it as `add`
            self.inject = nn.Linear(2 * config.n_embd, config.n_embd)
            with torch.no_grad():
                self.inject.weight.copy_(torch.eye(config.n_embd).repeat(1, 2))
                self.inject.bias.zero_()

    def injected(self, y: torch.Tensor | None, p: torch.Tensor) -> torch.Tensor:
        """An iteration's input from the previous state y (None at t = 1: Y_0 = 0) and P."""
        injection = self.config.injection
        if injection == "add":
            return p if y is None else y + p
        if injection == "none":                      # P enters once, at the first iteration
            return p if y is None else y
        return self.inject(torch.cat([torch.zeros_like(p) if y is None else y, p], dim=-1))

    def forward(self, xs: torch.Tensor, ys: torch.Tensor, n_iterations: int,
                keep: list[int] | None = None, trace: list[torch.Tensor] | None = None,
                grad_from: int | None = None) -> dict[int, torch.Tensor]:
        """Predictions at the 1-based iterations in `keep` (default: only the last).

        Iterations before `grad_from` (default min(keep)) run without gradient, so the state
        entering it is detached; every iteration from there to n_iterations is differentiated.
        `trace`, if given, receives every iteration's state Y_t (anything with `append`: tests
        keep them, the evaluation measures how much they change).
        """
        keep = set(keep or [n_iterations])
        # without autograd (evaluation) nothing needs separating: every iteration is "in the window"
        first = (grad_from or min(keep)) if torch.is_grad_enabled() else 1
        if first > min(keep):
            raise ValueError(f"iteration {min(keep)} is predicted but gradient starts at {first}")
        p = self.read_in(interleave(xs, ys))
        y = None  # Y_0 = 0
        if first > 1:
            # the iterations before the window need no autograd bookkeeping at all
            with torch.inference_mode():
                for _ in range(1, first):
                    y = self.backbone(self.injected(y, p))
                    if trace is not None:
                        trace.append(y)
            y = y.clone()  # an inference tensor cannot be saved for backward; a plain copy can
        predictions = {}
        for t in range(first, n_iterations + 1):
            y = self.backbone(self.injected(y, p))
            if trace is not None:
                trace.append(y)
            if t in keep:
                predictions[t] = self.predict(y)
        return predictions

    @torch.no_grad()
    def states(self, xs: torch.Tensor, ys: torch.Tensor, n_iterations: int) -> Iterator[torch.Tensor]:
        """Probe states: index 0 the read_in embedding, then each iteration's residual (pre-ln_f)."""
        p = self.read_in(interleave(xs, ys))
        yield p
        y = None
        for _ in range(n_iterations):
            for h in self.backbone.residual(self.injected(y, p)):
                pass
            yield h
            y = self.backbone.ln_f(h)


def build_model(config: ModelConfig) -> StandardTransformer | LoopedTransformer:
    return (LoopedTransformer if config.family == "looped" else StandardTransformer)(config)


def backbone_parameter_count(model: _Transformer) -> int:
    """Parameters of the blocks and ln_f, and of a learned input injection (`model.injection:
    linear`, 2D^2 + D), excluding position embeddings, read_in and read_out."""
    injection = model.inject.parameters() if hasattr(model, "inject") else ()
    return (sum(p.numel() for name, p in model.backbone.named_parameters() if name != "wpe")
            + sum(p.numel() for p in injection))
