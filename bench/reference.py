"""A reference-style training step: what the paper's code (HF GPT2Model backbone, eager
attention) does per step, rebuilt here with the weights of one of our models so that both
compute the same function and their speed can be compared in one process.

Faithful to the reference code path, not to our optimisations:
- GPT-2 Conv1D layers (x @ W + b through addmm, W stored [in, out]); one c_attn projection
  split into q, k, v, heads split by view + permute;
- attention as explicit matmul, division by sqrt(head_dim), a boolean causal-mask buffer with
  torch.where(mask, w, finfo.min), softmax, dropout(0), matmul, merge heads with contiguous();
- GELU as HF's NewGELUActivation: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) in separate ops;
- position embeddings through nn.Embedding on an arange of position ids;
- the looped model runs idx < b - T under no_grad, then stacks the window's predictions with
  torch.cat and compares them with ys repeated by torch.cat;
- every step ends with loss.item() and a gradient norm summed on the host parameter by parameter.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from trainables.config import Config


class Conv1D(nn.Module):
    def __init__(self, nf: int, nx: int):
        super().__init__()
        self.nf = nf
        self.weight = nn.Parameter(torch.empty(nx, nf))
        self.bias = nn.Parameter(torch.zeros(nf))

    def forward(self, x):
        size_out = x.size()[:-1] + (self.nf,)
        x = torch.addmm(self.bias, x.view(-1, x.size(-1)), self.weight)
        return x.view(size_out)


class NewGELU(nn.Module):
    def forward(self, x):
        return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))


class Attention(nn.Module):
    def __init__(self, n_embd: int, n_head: int, max_positions: int):
        super().__init__()
        self.register_buffer("bias", torch.tril(torch.ones((max_positions, max_positions), dtype=torch.bool))
                             .view(1, 1, max_positions, max_positions), persistent=False)
        self.n_head, self.head_dim, self.split_size = n_head, n_embd // n_head, n_embd
        self.c_attn = Conv1D(3 * n_embd, n_embd)
        self.c_proj = Conv1D(n_embd, n_embd)
        self.attn_dropout = nn.Dropout(0.0)
        self.resid_dropout = nn.Dropout(0.0)

    def _split_heads(self, tensor):
        tensor = tensor.view(tensor.size()[:-1] + (self.n_head, self.head_dim))
        return tensor.permute(0, 2, 1, 3)

    def _attn(self, query, key, value):
        attn_weights = torch.matmul(query, key.transpose(-1, -2))
        attn_weights = attn_weights / torch.full([], value.size(-1) ** 0.5, dtype=attn_weights.dtype,
                                                 device=attn_weights.device)
        query_length, key_length = query.size(-2), key.size(-2)
        causal_mask = self.bias[:, :, key_length - query_length: key_length, :key_length]
        mask_value = torch.full([], torch.finfo(attn_weights.dtype).min, dtype=attn_weights.dtype,
                                device=attn_weights.device)
        attn_weights = torch.where(causal_mask, attn_weights.to(attn_weights.dtype), mask_value)
        attn_weights = nn.functional.softmax(attn_weights, dim=-1)
        attn_weights = attn_weights.type(value.dtype)
        attn_weights = self.attn_dropout(attn_weights)
        return torch.matmul(attn_weights, value)

    def forward(self, hidden_states):
        query, key, value = self.c_attn(hidden_states).split(self.split_size, dim=2)
        query, key, value = self._split_heads(query), self._split_heads(key), self._split_heads(value)
        attn_output = self._attn(query, key, value)
        attn_output = attn_output.permute(0, 2, 1, 3).contiguous()
        attn_output = attn_output.view(attn_output.size()[:-2] + (self.n_head * self.head_dim,))
        return self.resid_dropout(self.c_proj(attn_output))


class MLP(nn.Module):
    def __init__(self, n_embd: int):
        super().__init__()
        self.c_fc = Conv1D(4 * n_embd, n_embd)
        self.c_proj = Conv1D(n_embd, 4 * n_embd)
        self.act = NewGELU()
        self.dropout = nn.Dropout(0.0)

    def forward(self, x):
        return self.dropout(self.c_proj(self.act(self.c_fc(x))))


class Block(nn.Module):
    def __init__(self, n_embd: int, n_head: int, max_positions: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(n_embd, eps=1e-5)
        self.attn = Attention(n_embd, n_head, max_positions)
        self.ln_2 = nn.LayerNorm(n_embd, eps=1e-5)
        self.mlp = MLP(n_embd)

    def forward(self, hidden_states):
        residual = hidden_states
        hidden_states = self.attn(self.ln_1(hidden_states))
        hidden_states = hidden_states + residual
        residual = hidden_states
        hidden_states = self.mlp(self.ln_2(hidden_states))
        return residual + hidden_states


class GPT2Backbone(nn.Module):
    def __init__(self, n_embd: int, n_head: int, n_layer: int, max_positions: int):
        super().__init__()
        self.wpe = nn.Embedding(max_positions, n_embd)
        self.drop = nn.Dropout(0.0)
        self.h = nn.ModuleList(Block(n_embd, n_head, max_positions) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(n_embd, eps=1e-5)

    def forward(self, inputs_embeds):
        input_shape = inputs_embeds.size()[:-1]
        position_ids = torch.arange(0, input_shape[-1], dtype=torch.long, device=inputs_embeds.device).unsqueeze(0)
        hidden_states = self.drop(inputs_embeds + self.wpe(position_ids))
        for block in self.h:
            hidden_states = block(hidden_states)
        return self.ln_f(hidden_states).view(input_shape + (hidden_states.size(-1),))


class ReferenceModel(nn.Module):
    """The paper's TransformerModel / TransformerModelLooped (loop_func z = f(x + z))."""

    def __init__(self, config: Config):
        super().__init__()
        m = config.model
        self.looped = m.family == "looped"
        self._read_in = nn.Linear(m.n_dims, m.n_embd)
        self._backbone = GPT2Backbone(m.n_embd, m.n_head, m.n_layer, 2 * m.n_positions + 1)
        self._read_out = nn.Linear(m.n_embd, 1)

    @staticmethod
    def _combine(xs_b, ys_b):
        bsize, points, dim = xs_b.shape
        ys_b_wide = torch.cat((ys_b.view(bsize, points, 1),
                               torch.zeros(bsize, points, dim - 1, device=ys_b.device)), axis=2)
        zs = torch.stack((xs_b, ys_b_wide), dim=2)
        return zs.view(bsize, 2 * points, dim)

    def forward(self, xs, ys, n_loop_start=0, n_loops=1):
        embeds = self._read_in(self._combine(xs, ys))
        if not self.looped:
            return self._read_out(self._backbone(embeds))[:, ::2, 0]
        output = torch.zeros_like(embeds)
        pred_list = []
        for idx in range(n_loops):
            if idx < n_loop_start:
                with torch.no_grad():
                    output = self._backbone(output + embeds)
            else:
                output = self._backbone(output + embeds)
                pred_list.append(self._read_out(output)[:, ::2, 0])
        return pred_list

    @torch.no_grad()
    def load_from(self, ours: nn.Module) -> "ReferenceModel":
        """Copy the weights of one of our models (Linear [out, in] -> Conv1D [in, out])."""
        self._read_in.load_state_dict(ours.read_in.state_dict())
        self._read_out.load_state_dict(ours.read_out.state_dict())
        self._backbone.wpe.weight.copy_(ours.backbone.wpe)
        self._backbone.ln_f.load_state_dict(ours.backbone.ln_f.state_dict())
        for mine, theirs in zip(self._backbone.h, ours.backbone.blocks):
            mine.ln_1.load_state_dict(theirs.ln_1.state_dict())
            mine.ln_2.load_state_dict(theirs.ln_2.state_dict())
            for conv, linear in ((mine.attn.c_attn, theirs.attn.c_attn), (mine.attn.c_proj, theirs.attn.c_proj),
                                 (mine.mlp.c_fc, theirs.mlp.c_fc), (mine.mlp.c_proj, theirs.mlp.c_proj)):
                conv.weight.copy_(linear.weight.t())
                conv.bias.copy_(linear.bias)
        return self


def reference_loss(model: ReferenceModel, config: Config, xs, ys, n_loops: int):
    if not model.looped:
        return (ys - model(xs, ys)).square().mean()
    horizon_start = max(0, n_loops - config.training.n_loop_window)
    y_pred_list = model(xs, ys, horizon_start, n_loops)
    y_pred_arr = torch.cat(y_pred_list, dim=0)
    y_star_arr = torch.cat([ys] * len(y_pred_list), dim=0)
    return (y_star_arr - y_pred_arr).square().mean()


def reference_step(model, optimizer, config: Config, xs, ys, n_loops: int, autocast) -> tuple[float, float]:
    """One step as the reference trains: forward, backward, Adam, then host-side logging."""
    with autocast():
        loss = reference_loss(model, config, xs, ys, n_loops)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    total_norm = 0.0
    for p in model.parameters():
        if p.grad is not None:
            total_norm += p.grad.detach().data.norm(2).item() ** 2
    return loss.item(), total_norm ** 0.5
