"""Learnable text context for an open_clip CLIP (CoOp; also CBPT's class-wise prompts).

Each class prompt is `[SOS] [key prefix] [ctx_1 … ctx_n] [class name] . [EOT]`: the `n_ctx`
context vectors replace word embeddings, shared by all classes ([n_ctx, W]) or one set per
class ([C, n_ctx, W], CoOp's CSC). The optional key prefix (a dual-key trigger word such as
"sudo ") is plain text placed before the context, as a test-time trigger would put it. The
encoders stay frozen; only `ctx` is a parameter. Text is encoded exactly as open_clip's
`encode_text` does, with the pooled EOT position taken from the token ids.
"""
from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn.functional as F

from clipbd import accel
from clipbd.models.clip import open_clip

text_global_pool = open_clip.transformer.text_global_pool

PLACEHOLDER = "x"  # one BPE token; its embedding is replaced by a context vector


def n_tokens(tok, text: str) -> int:
    """Content tokens of `text` (without SOS/EOT); EOT is the largest id, as open_clip assumes."""
    return int(tok([text])[0].argmax()) - 1


@contextmanager
def frozen(model: torch.nn.Module):
    """requires_grad off and eval mode for the duration; both restored afterwards."""
    flags = [p.requires_grad for p in model.parameters()]
    training = model.training
    model.requires_grad_(False).eval()
    try:
        yield model
    finally:
        for p, f in zip(model.parameters(), flags):
            p.requires_grad_(f)
        model.train(training)


class TextPrompt(torch.nn.Module):
    """Class text features [C, D] (unit norm) from learnable context vectors."""

    def __init__(self, model, tok, classes: list[str], n_ctx: int = 4, class_specific: bool = False,
                 init: str | None = "a photo of a", generator: torch.Generator | None = None,
                 ctx: torch.Tensor | None = None):
        super().__init__()
        self._model = [model]  # in a list: the frozen CLIP is no submodule (no params, no state)
        self.tok, self.n_ctx = tok, n_ctx
        self.names = [c.replace("_", " ") for c in classes]
        self._cache: dict[str, tuple[torch.Tensor, torch.Tensor, int]] = {}
        width = model.token_embedding.weight.shape[1]
        shape = (len(classes), n_ctx, width) if class_specific else (n_ctx, width)
        if ctx is None:
            ctx = self._init_ctx(init, shape, generator)
        elif tuple(ctx.shape) != shape:
            raise ValueError(f"context of shape {tuple(ctx.shape)}, expected {shape}")
        self.ctx = torch.nn.Parameter(ctx.detach().to(self.device, torch.float32).clone())
        self._tokens("")  # fail early if the prompts do not fit the context length

    @property
    def model(self):
        return self._model[0]

    @property
    def device(self) -> torch.device:
        return self.model.token_embedding.weight.device

    @property
    def class_specific(self) -> bool:
        return self.ctx.ndim == 3

    def _init_ctx(self, init, shape, generator) -> torch.Tensor:
        if init and n_tokens(self.tok, init) == self.n_ctx:
            with torch.no_grad():
                ids = self.tok([init])[0, 1:1 + self.n_ctx].to(self.device)
                emb = self.model.token_embedding(ids).float()
            return emb.expand(shape).clone()
        return torch.randn(shape, generator=generator) * 0.02

    def _tokens(self, prefix: str) -> tuple[torch.Tensor, torch.Tensor, int]:
        """(token ids [C, L], their frozen embeddings [C, L, W], first context position)."""
        if prefix not in self._cache:
            key = prefix.strip()
            start = 1 + (n_tokens(self.tok, key) if key else 0)
            place = " ".join([PLACEHOLDER] * self.n_ctx)
            texts = [" ".join(filter(None, [key, place, f"{n}."])) for n in self.names]
            ids = self.tok(texts).to(self.device)
            length = ids.shape[1]
            for text, name, row in zip(texts, self.names, ids):
                want = start + self.n_ctx + n_tokens(self.tok, f"{name}.")
                if want + 1 > length:
                    raise ValueError(f"prompt {text!r} needs {want + 1} tokens, the text encoder "
                                     f"takes {length}: lower n_ctx")
                if int(row.argmax()) != want:
                    raise ValueError(f"prompt {text!r} does not tokenize piecewise")
            with torch.no_grad():
                emb = self.model.token_embedding(ids)
            self._cache[prefix] = (ids, emb, start)
        return self._cache[prefix]

    def forward(self, prefix: str = "", key: torch.Tensor | None = None) -> torch.Tensor:
        """Class features; `key` [P, W] (continuous word embeddings, e.g. a dummy text trigger
        that a defense inverts) takes the place of a P-token text prefix (`prefix` is ignored)."""
        model = self.model
        if key is not None:
            prefix = " ".join([PLACEHOLDER] * len(key))
        ids, emb, s = self._tokens(prefix)
        if key is not None:
            emb = torch.cat([emb[:, :1], key.to(emb.dtype).expand(len(ids), -1, -1),
                             emb[:, 1 + len(key):]], dim=1)
        ctx = self.ctx if self.class_specific else self.ctx.expand(len(ids), -1, -1)
        x = torch.cat([emb[:, :s], ctx.to(emb.dtype), emb[:, s + self.n_ctx:]], dim=1)
        cast = model.transformer.get_cast_dtype()
        with accel.autocast(self.device):  # bf16 with accelerator.amp; float32 out either way
            x = x.to(cast) + model.positional_embedding.to(cast)
            x = model.transformer(x, attn_mask=model.attn_mask)
            x = model.ln_final(x)
            x = text_global_pool(x, ids, model.text_pool_type,
                                 eos_token_id=getattr(model, "text_eos_id", None))
            proj = model.text_projection
            if proj is not None:
                x = proj(x) if isinstance(proj, torch.nn.Linear) else x @ proj
        return F.normalize(x.float(), dim=-1)
