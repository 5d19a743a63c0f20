"""TransFace's Vision Transformer (ViT-S/B/L, 112x112 input, 9x9 patches: 144 tokens, no class token).

State-dict layout (the published `model.pt` is a plain state dict):
    patch_embed.proj (Conv2d 3->D, kernel = stride = 9; the last 4 pixel rows and columns fall outside the 12x12
        grid), pos_embed (1, 144, D), mask_token (1, 1, D; used only in training),
    blocks.{i}: norm1 (LayerNorm), attn.qkv (Linear D->3D, no bias), attn.proj (Linear D->D), norm2,
        mlp.fc1 (D->4D), mlp.fc2 (4D->D); activation ReLU6, pre-norm residuals,
    norm (LayerNorm), senet: [0] Linear(144*D -> 144, no bias), [1] ReLU, [2] Linear(144 -> 144, no bias), [3] Sigmoid
        (a per-patch gate applied to the tokens), feature: [0] Linear(144*D -> D, no bias), [1] BatchNorm1d(D, eps
        2e-5), [2] Linear(D -> 512, no bias), [3] BatchNorm1d(512, eps 2e-5).
LayerNorm eps is PyTorch's default (1e-5). forward returns (embedding, softmax of the patch gate, per-patch std of the
gated tokens), as the original does; the embedding is the first element.
"""

from __future__ import annotations

import torch
from torch import nn

SIZES = {"s": dict(embed_dim=512, depth=12), "b": dict(embed_dim=512, depth=24), "l": dict(embed_dim=768, depth=24)}


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int, tokens: int):
        super().__init__()
        self.num_heads, self.head_dim, self.tokens, self.dim = num_heads, dim // num_heads, tokens, dim
        self.scale = self.head_dim ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=False)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # sizes other than the batch are constants, so the exported graph has constant Reshape targets
        qkv = self.qkv(x).reshape(-1, self.tokens, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        weights = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
        return self.proj((weights @ v).transpose(1, 2).reshape(-1, self.tokens, self.dim))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.ReLU6()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, tokens: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)  # both norms first: the published state-dict order
        self.norm2 = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads, tokens)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    def __init__(self, img_size: int, patch_size: int, embed_dim: int):
        super().__init__()
        self.num_patches = (img_size // patch_size) ** 2
        self.embed_dim = embed_dim
        self.proj = nn.Conv2d(3, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).reshape(-1, self.embed_dim, self.num_patches).transpose(1, 2)


class TransFaceViT(nn.Module):
    def __init__(self, embed_dim: int = 512, depth: int = 12, num_heads: int = 8, mlp_ratio: float = 4.0,
                 num_features: int = 512, img_size: int = 112, patch_size: int = 9):
        super().__init__()
        self.patch_embed = PatchEmbed(img_size, patch_size, embed_dim)
        n = self.num_patches = self.patch_embed.num_patches
        self.embed_dim = embed_dim
        self.pos_embed = nn.Parameter(torch.zeros(1, n, embed_dim))
        self.blocks = nn.ModuleList(Block(embed_dim, num_heads, mlp_ratio, n) for _ in range(depth))
        self.norm = nn.LayerNorm(embed_dim)
        self.feature = nn.Sequential(
            nn.Linear(embed_dim * n, embed_dim, bias=False),
            nn.BatchNorm1d(embed_dim, eps=2e-5),
            nn.Linear(embed_dim, num_features, bias=False),
            nn.BatchNorm1d(num_features, eps=2e-5),
        )
        self.mask_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.senet = nn.Sequential(
            nn.Linear(embed_dim * n, n, bias=False),
            nn.ReLU(),
            nn.Linear(n, n, bias=False),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor):
        n, d = self.num_patches, self.embed_dim
        x = self.patch_embed(x) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        tokens = self.norm(x)
        gate = self.senet(tokens.reshape(-1, n * d))
        gated = gate.reshape(-1, n, 1) * tokens
        embedding = self.feature(gated.reshape(-1, n * d))
        return embedding, gate.softmax(dim=1), torch.std(gated, dim=2)
