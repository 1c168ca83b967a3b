"""Llama-style decoder (RMSNorm, RoPE, causal attention, SwiGLU) with weights drawn from a seed.

The sprint model is rebuilt by every validator from the block hash alone, so `build_seeded_decoder`
must give bit-identical weights on every rebuild.
"""

from __future__ import annotations

import hashlib

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gonka_pipelines.compute.profiles import ModelProfile

INIT_STD = 0.02  # PROTOCOL.md section 3: every weight tensor is drawn from N(0, 0.02)


class RMSNorm(nn.Module):
    """Root-mean-square normalisation with a learned gain (initialised to 1 by the seeded fill)."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.empty(dim))

    def forward(self, x: Tensor) -> Tensor:
        return F.rms_norm(x, self.weight.shape, self.weight, self.eps)


def rope_tables(profile: ModelProfile) -> tuple[Tensor, Tensor]:
    """cos and sin of the rotary angles, shape (seq_len, head_dim), in the rotate-half layout."""
    half = profile.head_dim // 2
    inv_freq = profile.rope_theta ** (-torch.arange(half, dtype=torch.float32) / half)
    angles = torch.outer(torch.arange(profile.seq_len, dtype=torch.float32), inv_freq)
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos(), angles.sin()


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate (B, heads, T, head_dim) queries or keys by their positions."""
    first, second = x.chunk(2, dim=-1)
    return x * cos + torch.cat([-second, first], dim=-1) * sin


class Attention(nn.Module):
    """Causal multi-head self-attention with rotary position embeddings."""

    def __init__(self, profile: ModelProfile) -> None:
        super().__init__()
        self.n_heads = profile.n_heads
        self.wq = nn.Linear(profile.dim, profile.dim, bias=False)
        self.wk = nn.Linear(profile.dim, profile.dim, bias=False)
        self.wv = nn.Linear(profile.dim, profile.dim, bias=False)
        self.wo = nn.Linear(profile.dim, profile.dim, bias=False)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        batch, length, dim = x.shape
        q, k, v = (w(x).view(batch, length, self.n_heads, -1).transpose(1, 2) for w in (self.wq, self.wk, self.wv))
        out = F.scaled_dot_product_attention(apply_rope(q, cos, sin), apply_rope(k, cos, sin), v, is_causal=True)
        return self.wo(out.transpose(1, 2).reshape(batch, length, dim))


class FeedForward(nn.Module):
    """SwiGLU: w2(silu(w1 x) * w3 x)."""

    def __init__(self, profile: ModelProfile) -> None:
        super().__init__()
        self.w1 = nn.Linear(profile.dim, profile.ffn_hidden, bias=False)
        self.w2 = nn.Linear(profile.ffn_hidden, profile.dim, bias=False)
        self.w3 = nn.Linear(profile.dim, profile.ffn_hidden, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class Block(nn.Module):
    """Pre-norm transformer block: attention then feed-forward, each with a residual connection."""

    def __init__(self, profile: ModelProfile) -> None:
        super().__init__()
        self.attention_norm = RMSNorm(profile.dim, profile.norm_eps)
        self.attention = Attention(profile)
        self.ffn_norm = RMSNorm(profile.dim, profile.norm_eps)
        self.feed_forward = FeedForward(profile)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        h = x + self.attention(self.attention_norm(x), cos, sin)
        return h + self.feed_forward(self.ffn_norm(h))


class Decoder(nn.Module):
    """The whole decoder: `poc` models take (B, T, dim) embeddings, `llm` models take (B, T) token ids."""

    rope_cos: Tensor
    rope_sin: Tensor

    def __init__(self, profile: ModelProfile) -> None:
        super().__init__()
        self.profile = profile
        self.tok_embeddings = nn.Embedding(profile.vocab, profile.dim) if profile.kind == "llm" else None
        self.layers = nn.ModuleList(Block(profile) for _ in range(profile.n_layers))
        self.norm = RMSNorm(profile.dim, profile.norm_eps)
        self.output = nn.Linear(profile.dim, profile.vocab, bias=False)
        self.register_buffer("rope_cos", torch.empty(profile.seq_len, profile.head_dim), persistent=False)
        self.register_buffer("rope_sin", torch.empty(profile.seq_len, profile.head_dim), persistent=False)

    def forward(self, inputs: Tensor, last_only: bool = False) -> Tensor:
        """Logits (B, T, vocab), or (B, vocab) at the last position only when `last_only` (the sprint's case)."""
        length = inputs.shape[1]
        if length > self.profile.seq_len:
            raise ValueError(f"{self.profile.name}: input of {length} positions exceeds seq_len {self.profile.seq_len}")
        h = self.tok_embeddings(inputs) if self.tok_embeddings is not None else inputs
        cos, sin = self.rope_cos[:length], self.rope_sin[:length]
        for layer in self.layers:
            h = layer(h, cos, sin)
        if last_only:
            h = h[:, -1]
        return self.output(self.norm(h))


def _param_seed(root: bytes, name: str) -> int:
    """64-bit generator seed of one parameter: SHA-256 of the root key and the parameter's name."""
    return int.from_bytes(hashlib.sha256(root + name.encode()).digest()[:8], "little")


def parameter_count(profile: ModelProfile) -> int:
    """How many parameters a profile's decoder has, counted on the meta device (nothing is allocated)."""
    with torch.device("meta"):
        return sum(param.numel() for param in Decoder(profile).parameters())


@torch.no_grad()
def build_seeded_decoder(profile: ModelProfile, seed: bytes) -> Decoder:
    """A float32 CPU decoder in eval mode whose weights depend only on (profile, seed), bit for bit.

    Parameters are filled in name order, each from N(0, INIT_STD) with its own generator keyed by
    SHA-256(SHA-256(seed) || name); norm gains are 1. Built on the meta device first, so no memory is
    spent on a default initialisation.
    """
    with torch.device("meta"):
        model = Decoder(profile)
    model.to_empty(device="cpu")
    root = hashlib.sha256(seed).digest()
    norm_gains = {f"{name}.weight" for name, module in model.named_modules() if isinstance(module, RMSNorm)}
    for name, param in sorted(model.named_parameters()):
        if name in norm_gains:
            param.fill_(1.0)
        else:
            param.normal_(0.0, INIT_STD, generator=torch.Generator().manual_seed(_param_seed(root, name)))
    model.rope_cos, model.rope_sin = rope_tables(profile)
    return model.eval().requires_grad_(False)
