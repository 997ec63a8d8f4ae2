"""VPT: deep visual prompts tuned with cross-entropy on the zero-shot logits (RVPT's baseline).

The image encoder and the hand-crafted class text features stay frozen; only prompts
p^d in R^{b x width} at the prompted blocks are learned (see clipbd.models.visual_prompt).
Logits = exp(logit_scale) * cos(prompted image features, class text features).

Recipe (RVPT = VPT plus a repulsion term, docs/methods.md, "Defense: RVPT"): SGD lr 0.002,
momentum 0.9, cosine decay, batch 32, 50 epochs, b = 50, 9 prompted blocks counted from the
output, Gaussian init.
Weight decay 5e-4 and one constant warm-up epoch at 1e-5 are the CoOp/Dassl defaults the RVPT
code appears to build on (INFERRED; the paper states neither); the schedule is CoOp's here.
Without image augmentation (the default) the frozen lower blocks' tokens of the few-shot set
are computed once and reused every epoch (`cache_lower`), and so are the original per-layer
CLS tokens. `augment: true` trains on a random resized crop (area 8-100%, Dassl's
RRCROP_SCALE) + horizontal flip of every batch, as CoOp/Dassl do (clipbd.train.augment,
its own generator, seed + 1); the lower blocks and the original CLS are then computed per batch.

The delta holds the prompts [n_prompted, b, width] and their block indices, nothing else.
"""
from __future__ import annotations

import logging
import math

import torch
import torch.nn.functional as F
from tqdm import tqdm

from clipbd import accel
from clipbd.data.store import to_float
from clipbd.defenses import register
from clipbd.defenses.base import Defense
from clipbd.models.text_prompt import frozen
from clipbd.models.visual_prompt import VisualPrompts, init_prompts, prompted_blocks
from clipbd.models.zeroshot import Classifier, Normalize
from clipbd.train.augment import crop_flip
from clipbd.train.schedule import set_lr, warmup_cosine

log = logging.getLogger(__name__)
FEATURE_BATCH = 256  # images per forward when caching the frozen parts
CROP_SCALE = (0.08, 1.0)  # Dassl's INPUT.RRCROP_SCALE default (CoOp's configs)


class FloatRows:
    """uint8 images [N,H,W,3] seen as floats [N,3,H,W] in [0,1], converted per indexed batch
    (16-shot ImageNet held as float would be 9.6 GB); with `(norm, dev)`, normalized on `dev`.
    Elementwise per image, so a batch's values equal the whole set's converted at once."""

    def __init__(self, images: torch.Tensor, normalize=None):
        self.images, self.normalize = images, normalize
        self.device = normalize[1] if normalize else torch.device("cpu")

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, key) -> torch.Tensor:
        if torch.is_tensor(key):
            key = key.cpu()
        raw = to_float(self.images[key])
        return self.normalize[0](raw.to(self.device)) if self.normalize else raw


class PromptedClassifier(Classifier):
    """images in [0,1] -> logits through the prompted image encoder and a zero-shot head."""

    def __init__(self, model, head: torch.nn.Module, prompter: VisualPrompts):
        super().__init__(model, head)
        self.prompter = prompter

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.prompter(self.normalize(x))


@register("vpt")
class VPT(Defense):
    title = "VPT"
    order = 4
    vit_only = True  # deep visual prompts sit between the CLS and patch tokens
    prompt_depth = "depth"
    probe = True
    transfers = True  # the delta does not depend on the classes

    def blocks(self, visual) -> list[int]:
        n_layers = len(visual.transformer.resblocks)
        return prompted_blocks(n_layers, self.cfg["depth"], self.cfg["depth_from"],
                               key=f"defenses.{self.name}.depth")

    def repels(self) -> bool:
        """Whether the loss needs the original encoder's per-layer CLS (RVPT with alpha != 0)."""
        return False

    def penalty(self, prompted: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
        """Extra loss on the prompted vs original CLS tokens [K, B, W] (none for VPT)."""
        raise NotImplementedError

    def fit(self, ctx, fewshot):
        c = self.cfg
        model = ctx.model
        dev = accel.device_of(model)
        blocks = self.blocks(model.visual)
        width = model.visual.class_embedding.shape[-1]
        prompter = VisualPrompts(model.visual, blocks,
                                 init_prompts(len(blocks), c["length"], width, c["init_std"],
                                              ctx.seed))
        labels = fewshot.labels.to(dev)
        bs = c["batch_size"]
        augment = c.get("augment", False)
        norm = Normalize(model).to(dev)
        with frozen(model), torch.no_grad():
            head = ctx.zero_shot_head()
            x = FloatRows(fewshot.images, None if augment else (norm, dev))
            fb = FEATURE_BATCH
            with accel.autocast(dev):  # the encoder in bf16 with accelerator.amp
                low = torch.cat([prompter.lower(x[i:i + fb]) for i in range(0, len(x), fb)]) \
                    if c["cache_lower"] and not augment else None
            # the original encoder's CLS at the prompted blocks is constant: computed once
            sigma = self._original_cls(prompter, x, low, fb) \
                if self.repels() and not augment else None
        g_aug = torch.Generator().manual_seed(ctx.seed + 1)
        opt = torch.optim.SGD([prompter.prompts], lr=c["lr"], momentum=c["momentum"],
                              weight_decay=c["weight_decay"])
        steps = math.ceil(len(x) / bs)
        total, warm = c["epochs"] * steps, c["warmup_epochs"] * steps
        g = torch.Generator().manual_seed(ctx.seed)
        layers = blocks if self.repels() else ()
        self.losses: list[float] = []
        with frozen(model), torch.enable_grad():
            for _ in tqdm(range(c["epochs"]), desc=self.name, mininterval=5):
                for idx in torch.randperm(len(x), generator=g).split(bs):
                    step = len(self.losses)
                    if step < warm:
                        set_lr(opt, c["warmup_lr"], 1.0)
                    else:
                        set_lr(opt, c["lr"], warmup_cosine(step, total, 0))
                    if augment:  # a fresh crop + flip of the batch: its own frozen parts
                        with torch.no_grad():
                            xb = norm(crop_flip(x[idx], g_aug, scale=CROP_SCALE).to(dev))
                            with accel.autocast(dev):
                                tokens = prompter.lower(xb)
                            orig = self._original_cls(prompter, xb, tokens, len(xb)) \
                                if layers else None
                        idx = idx.to(dev)
                    else:
                        idx = idx.to(dev)
                        orig = sigma[:, idx] if layers else None
                        if low is not None:
                            tokens = low[idx]
                        else:
                            with torch.no_grad(), accel.autocast(dev):
                                tokens = prompter.lower(x[idx])
                    with accel.autocast(dev):  # forward in bf16 with amp; losses in float32
                        feats, cls = prompter.upper(tokens, cls_layers=layers)
                    loss = F.cross_entropy(head(feats.float()), labels[idx])
                    if layers:
                        loss = loss + self.penalty(torch.stack(cls).float(), orig)
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                    self.losses.append(loss.item())
        log.info("%s: loss %.4f -> %.4f", self.name, self.losses[0], self.losses[-1])
        return {"prompts": prompter.prompts.detach().cpu().clone(),
                "blocks": torch.tensor(blocks, dtype=torch.int64)}

    @staticmethod
    def _original_cls(prompter: VisualPrompts, x, low, bs: int) -> torch.Tensor:
        """[K, N, W]: the frozen encoder's CLS after each prompted block, for every image."""
        out = []
        for i in range(0, len(x), bs):
            with accel.autocast(x.device):
                tokens = low[i:i + bs] if low is not None else prompter.lower(x[i:i + bs])
                cls = prompter.upper(tokens, prompter.blocks, prompted=False)[1]
            out.append(torch.stack(cls).float())
        return torch.cat(out, dim=1)

    def classifier(self, ctx, delta, text_prefix=""):
        blocks = delta["blocks"].tolist()
        expected = self.blocks(ctx.model.visual)
        if blocks != expected:
            raise ValueError(f"delta prompts blocks {blocks}, but `defenses.{self.name}` "
                             f"(depth, depth_from) gives {expected}")
        prompter = VisualPrompts(ctx.model.visual, blocks, delta["prompts"])
        return PromptedClassifier(ctx.model, ctx.zero_shot_head(text_prefix), prompter).eval()
