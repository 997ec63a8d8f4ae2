"""Deep visual prompts (VPT-deep) for an open_clip ViT image encoder (VPT, RVPT).

Token layout at a prompted block d: [cls, p^d (b tokens), patches]. The first prompted block
inserts its prompts after the CLS token; every later prompted block replaces the b prompt
outputs of the block below with its own prompts. Blocks above the last prompted one (only
when depth is counted from the input) carry the prompt outputs along unchanged. Pooling is
the CLS token through ln_post and proj, exactly as `model.encode_image`; with no prompts this
path equals it.

The blocks below the first prompted block are frozen and prompt-free, so their output
(`VisualPrompts.lower`) does not depend on the prompts: compute it once, then run only the
prompted part (`VisualPrompts.upper`) every step.
"""
from __future__ import annotations

from typing import Sequence

import torch


def prompted_blocks(n_layers: int, depth: int, depth_from: str = "output",
                    key: str = "defenses.rvpt.depth") -> list[int]:
    """Indices of the prompted blocks: the last `depth` (from the output) or the first `depth`."""
    if depth_from not in ("output", "input"):
        raise ValueError(f"depth_from must be 'output' or 'input', got {depth_from!r}")
    if not 0 <= depth <= n_layers:
        raise ValueError(f"`{key}` = {depth} but the image encoder has {n_layers} transformer "
                         f"blocks; use 0..{n_layers}")
    return list(range(n_layers - depth, n_layers)) if depth_from == "output" else list(range(depth))


def init_prompts(n_blocks: int, length: int, width: int, std: float, seed: int) -> torch.Tensor:
    """Zero-mean Gaussian prompts [n_blocks, length, width] from their own seeded generator."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n_blocks, length, width, generator=g) * std


def _check_vit(visual) -> None:
    if not hasattr(visual, "transformer") or not hasattr(visual, "class_embedding"):
        raise TypeError(f"visual prompts need an open_clip ViT image encoder, got "
                        f"{type(visual).__name__}")
    pool_type = getattr(visual, "pool_type", "tok")
    if getattr(visual, "attn_pool", None) is not None or pool_type != "tok":
        raise ValueError("visual prompts support CLS-token pooling only (pool_type 'tok', "
                         "no attentional pooler)")


def embed(visual, x: torch.Tensor) -> torch.Tensor:
    """Normalized pixels [N,3,H,W] -> tokens [N, 1+P, W] entering block 0 (open_clip's _embeds)."""
    x = visual.conv1(x)
    x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)
    cls = visual.class_embedding.view(1, 1, -1).expand(x.shape[0], -1, -1).to(x.dtype)
    x = torch.cat([cls, x], dim=1) + visual.positional_embedding.to(x.dtype)
    x = visual.patch_dropout(x)
    return visual.ln_pre(x)


def run_blocks(visual, x: torch.Tensor, start: int = 0, stop: int | None = None,
               prompts: dict[int, torch.Tensor] | None = None,
               cls_layers: Sequence[int] = ()) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Blocks start..stop-1 on prompt-free tokens x [N, L, W] (batch first, whatever the
    installed open_clip runs internally). prompts: {block: [b, W]}; cls_layers: blocks whose
    output CLS token [N, W] is returned, in block order."""
    resblocks = visual.transformer.resblocks
    stop = len(resblocks) if stop is None else stop
    prompts = prompts or {}
    if prompts and min(prompts) < start:
        raise ValueError(f"prompted block {min(prompts)} lies below the first block run ({start})")
    batch_first = getattr(visual.transformer, "batch_first", True)
    n_prompt, cls = 0, []
    for i in range(start, stop):
        if i in prompts:
            p = prompts[i].to(x.dtype).unsqueeze(0).expand(x.shape[0], -1, -1)
            x = torch.cat([x[:, :1], p, x[:, 1 + n_prompt:]], dim=1)
            n_prompt = p.shape[1]
        blk = resblocks[i]
        x = blk(x) if batch_first else blk(x.transpose(0, 1)).transpose(0, 1)
        if i in cls_layers:
            cls.append(x[:, 0])
    return x, cls


def pool(visual, x: torch.Tensor) -> torch.Tensor:
    """Final image features from the last block's tokens: ln_post(CLS) @ proj."""
    pooled = visual.ln_post(x[:, 0])
    return pooled @ visual.proj if visual.proj is not None else pooled


def frozen_cls(visual, x: torch.Tensor, layers: Sequence[int]) -> tuple[torch.Tensor, list]:
    """The unprompted encoder: (image features, CLS token after each block in `layers`)."""
    _check_vit(visual)
    out, cls = run_blocks(visual, embed(visual, x), cls_layers=layers)
    return pool(visual, out), cls


class VisualPrompts(torch.nn.Module):
    """A frozen ViT image encoder plus deep prompts [n_blocks, b, W] at `blocks` (the one
    parameter meant to be trained)."""

    def __init__(self, visual, blocks: Sequence[int], prompts: torch.Tensor):
        super().__init__()
        _check_vit(visual)
        n_layers = len(visual.transformer.resblocks)
        self.blocks = tuple(int(b) for b in blocks)
        if list(self.blocks) != sorted(set(self.blocks)) or any(not 0 <= b < n_layers
                                                                 for b in self.blocks):
            raise ValueError(f"prompted blocks {list(self.blocks)} must be increasing and within "
                             f"0..{n_layers - 1}")
        width = visual.class_embedding.shape[-1]
        if prompts.ndim != 3 or prompts.shape[0] != len(self.blocks) or prompts.shape[2] != width:
            raise ValueError(f"prompts must be [{len(self.blocks)}, b, {width}], got "
                             f"{tuple(prompts.shape)}")
        self.visual = visual
        ref = visual.class_embedding
        self.prompts = torch.nn.Parameter(prompts.detach().to(ref.device, ref.dtype).clone())
        # blocks below the first prompted one are prompt-free (all of them when none is prompted)
        self.first = self.blocks[0] if self.blocks else n_layers

    def _prompt_map(self) -> dict[int, torch.Tensor]:
        return {b: self.prompts[i] for i, b in enumerate(self.blocks)}

    def lower(self, x: torch.Tensor) -> torch.Tensor:
        """Normalized pixels -> tokens entering the first prompted block (prompt-independent)."""
        return run_blocks(self.visual, embed(self.visual, x), stop=self.first)[0]

    def upper(self, tokens: torch.Tensor, cls_layers: Sequence[int] = (),
              prompted: bool = True) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Tokens from `lower` -> (image features, CLS after each block in cls_layers).
        prompted=False runs the same blocks without prompts (the original encoder)."""
        bad = [d for d in cls_layers if d < self.first]
        if bad:
            raise ValueError(f"CLS of blocks {bad} lie below the cached part (first prompted "
                             f"block {self.first}); use frozen_cls")
        prompts = self._prompt_map() if prompted else None
        out, cls = run_blocks(self.visual, tokens, start=self.first, prompts=prompts,
                              cls_layers=cls_layers)
        return pool(self.visual, out), cls

    def forward(self, x: torch.Tensor, cls_layers: Sequence[int] = ()):
        """Normalized pixels -> image features, or (features, per-layer CLS) if cls_layers."""
        tokens = embed(self.visual, x)
        out, cls = run_blocks(self.visual, tokens, prompts=self._prompt_map(),
                              cls_layers=cls_layers)
        feats = pool(self.visual, out)
        return (feats, cls) if cls_layers else feats

