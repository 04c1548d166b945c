"""Cross-Modal Temporal (CMT) adapter: HSA over space-time windows plus visual<->text attention."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def sine_time_embedding(clip_length: int, dim: int, device: torch.device) -> Tensor:
    """Normalised 1-D sine embedding of the frame position in the clip: [T, dim].

    Same arithmetic as the release (positions 1..T scaled to (0, 2*pi], sin/cos interleaved),
    kept in float32 so that the result matches it to round-off.
    """
    position = torch.ones(clip_length, device=device).cumsum(0, dtype=torch.float32)
    position = position / (position[-1:] + 1e-6) * (2 * math.pi)
    dim_t = torch.arange(dim, dtype=torch.float32, device=device)
    dim_t = 10000 ** (2 * (dim_t // 2) / dim)
    angles = position[:, None] / dim_t  # [T, dim]
    return torch.stack((angles[:, 0::2].sin(), angles[:, 1::2].cos()), dim=2).flatten(1)


class HierarchicalSelectiveAttention(nn.Module):
    """Self-attention among the tokens of all T frames inside one non-overlapping P x P window."""

    def __init__(self, dim: int, num_heads: int, patch_size: int, dropout: float = 0.1):
        super().__init__()
        self.patch_size = patch_size
        self.spatial_pos_embed = nn.Parameter(torch.zeros(1, 1, 1, patch_size * patch_size, dim))
        nn.init.trunc_normal_(self.spatial_pos_embed, std=0.02)
        self.norm = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, num_heads, dropout=dropout)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: Tensor, clip_length: int, num_queries: int | None = None) -> Tensor:
        """x: [B*T, C, H, W], the clips' frames -> [B*Q, C, H, W] for the last Q = `num_queries` frames of
        each clip (all T by default); every frame's tokens are keys and values."""
        bt, channels, height, width = x.shape
        p, t = self.patch_size, clip_length
        q = t if num_queries is None else num_queries
        b, rows, cols = bt // t, height // p, width // p
        if height % p or width % p:
            raise ValueError(f"feature map {height}x{width} is not divisible by the HSA patch size {p}")
        windows = x.view(b, t, channels, rows, p, cols, p).permute(0, 1, 3, 5, 4, 6, 2)
        windows = windows.reshape(b, t, rows * cols, p * p, channels)  # [B, T, N, P*P, C]
        windows = windows + sine_time_embedding(t, channels, x.device).to(x.dtype)[None, :, None, None, :]
        windows = windows + self.spatial_pos_embed
        # one sequence per window holding its T*P*P tokens, frame by frame: [(T P*P), (B N), C]
        seq = self.norm(windows.permute(1, 3, 0, 2, 4).reshape(t * p * p, b * rows * cols, channels))
        queries = seq if q == t else seq[(t - q) * p * p :]
        out = self.out(self.attn(queries, seq, seq, need_weights=False)[0])
        out = out.view(q, p, p, b, rows, cols, channels).permute(3, 0, 6, 4, 1, 5, 2)
        return out.reshape(b * q, channels, height, width)


class CrossModalAttention(nn.Module):
    """Cross-attention whose output gates the query elementwise (query * attn(query, memory))."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, num_heads, dropout=0.0)

    def forward(self, query: Tensor, memory: Tensor, memory_padding: Tensor | None = None) -> Tensor:
        # query: [Lq, N, C], memory: [Lk, N, C] (sequence-first, as nn.MultiheadAttention); memory_padding:
        # [N, Lk] bool, True where memory is padding (left out of the attention)
        return query * self.attn(query, memory, memory, key_padding_mask=memory_padding, need_weights=False)[0]


class CMTAdapter(nn.Module):
    """Adapter placed after a Hiera stage: returns residuals for the visual and the text states."""

    def __init__(self, vis_dim: int, text_dim: int, dim: int, num_heads: int, patch_size: int, use_hsa: bool = True):
        super().__init__()
        self.vis_down = nn.Sequential(nn.Conv2d(vis_dim, dim, 1, bias=False), nn.BatchNorm2d(dim), nn.ReLU(True))
        self.vis_up = nn.Sequential(
            nn.ConvTranspose2d(dim, vis_dim, 1, bias=False), nn.BatchNorm2d(vis_dim), nn.ReLU(True)
        )
        self.text_down = nn.Linear(text_dim, dim, bias=False)
        self.text_up = nn.Linear(dim, text_dim, bias=False)
        self.vis_to_text = CrossModalAttention(dim, num_heads)
        self.text_to_vis = CrossModalAttention(dim, num_heads)
        self.hsa = HierarchicalSelectiveAttention(dim, num_heads, patch_size) if use_hsa else None

    def forward(self, vis: Tensor, text: Tensor, clip_length: int,
                text_padding: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Clip mode. vis: [B*T, Cv, H, W], text: [B, L, Ct] -> residuals of the same shapes; text_padding:
        [B, L] bool, True at padded text positions (None: no padding)."""
        x = self.vis_down(vis)
        return self._residuals(x, x, text, clip_length, text_padding)

    def forward_newest(self, vis: Tensor, text: Tensor, past: Tensor | None,
                       text_padding: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """Frame mode: the residuals of one new frame of each of B rows (vis: [B, Cv, H, W]) whose clip is
        the window of `past` ([P, B, C, H, W], the earlier frames' down-projected features, oldest first) and
        itself. Returns the visual and text residuals and the new frame's down-projected features."""
        x = self.vis_down(vis)
        window = x[None] if past is None else torch.cat([past, x[None]])  # [P + 1, B, C, H, W]
        clips = window.transpose(0, 1).flatten(0, 1)  # each row's clip, frame by frame: [B*(P + 1), C, H, W]
        vis_residual, text_residual = self._residuals(clips, x, text, window.shape[0], text_padding)
        return vis_residual, text_residual, x

    def _residuals(self, window: Tensor, newest: Tensor, text: Tensor, clip_length: int,
                   text_padding: Tensor | None) -> tuple[Tensor, Tensor]:
        """window: [B*T, C, H, W] down-projected clips; newest: the last B*Q of their frames, which get a
        visual residual ([B*Q, Cv, H, W]); the text residual ([B, L, Ct]) reads the whole window. Padded
        text positions get residuals too, which later layers never read (their attention masks them)."""
        bt, _, height, width = window.shape
        b, t = bt // clip_length, clip_length
        q = newest.shape[0] // b
        txt = self.text_down(text).transpose(0, 1)  # [L, B, C]

        attended = newest if self.hsa is None else newest + self.hsa(window, t, q)
        attended = attended.flatten(2).permute(2, 0, 1)  # [H*W, B*Q, C]
        padding = None if text_padding is None else text_padding.repeat_interleave(q, dim=0)
        attended = self.vis_to_text(attended, txt.repeat_interleave(q, dim=1), padding)
        attended = attended.permute(1, 2, 0).reshape(b * q, -1, height, width)

        # text attends to the time-averaged projected visual tokens: [H*W, B, C]
        vis_mean = window.flatten(2).permute(2, 0, 1).reshape(height * width, b, t, -1).mean(2)
        txt = self.text_to_vis(txt, vis_mean)

        return self.vis_up(attended), self.text_up(txt.transpose(0, 1))
