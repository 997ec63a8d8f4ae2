"""CBPT (class-wise backdoor prompt tuning): a RECONSTRUCTION from the paper's abstract.

The CBPT body text was not reachable (docs/methods.md, "Defense: CBPT"); everything below beyond
"two stages, a contrastively inverted dummy trigger, class-wise prompts, three losses" is this
project's design, not the paper's.

Stage 1, trigger inversion from clean few-shot images only. The trigger is additive,
x' = (1 - m) * x + m * p, with mask m = sigmoid(a) [1,H,W] and pattern p = sigmoid(b) [3,H,W].
`inversion_loss`: supervised-contrastive over a batch, where the triggered images are each
other's positives (a real trigger collapses features toward one point) and the clean images
of the batch are the negatives, plus `mask_weight` * mean(m) (L1 per pixel). Adam on (a, b).
Several dummy triggers may be inverted (`trigger_specs`): `n_triggers` seeded restarts for each
entry of `mask_weight` (a number or a list: a small patch and a diffuse trigger need different
size priors), plus, with `global_mask_weight` set, one trigger whose mask is a single blend
ratio for all pixels (a = [1,1,1]), which can represent Blended/SIG-like full-image triggers
that a per-pixel mask under an L1 prior does not reach in a few hundred steps.

Dual-key backdoors (TrojVQA) fire only when the test-time prompt also carries a text key
(evaluation writes it before the context: "[SOS] key [ctx] class."), which the clean few-shot
data never show. With `text_key_tokens` = P set, stage 1 also inverts a dummy text key: P
continuous word embeddings e, initialized from random vocabulary tokens, that with the dummy
image triggers make the class predictions of the triggered images collapse onto one class while
the clean images stay correct: `key_loss` = H(batch mean of softmax(triggered, prompts with e))
+ CE(clean, prompts with e, true labels), Adam (`key_lr`) over `key_steps` steps on the cached
image features (text encoder only). The key is kept only if it lowers that entropy by at least
`key_gain` nats over the key-less prompts (a dual-key backdoor collapses much more with its text
key; on the embedded study TrojVQA gained 1.93, the others 0.02-1.14, and an always-on key cost
BadNet, Blended and BadCLIP ASR and CA); it has its own generator (seed + 1), so a gated-off
key leaves the run bit for bit the key-less one. Stage 2 then adds the trigger term once more
with the keyed prompts, so the context is tuned to undo the image trigger with and without a
text key.

Stage 2, class-specific context (CoOp CSC) with `prompt_loss`:
clean_weight * CE(clean) + trigger_weight * CE(images + dummy trigger, TRUE labels)
+ text_weight * mean_c (1 - cos(tuned_c, hand-crafted_c)), the hand-crafted features being the
zero-shot class features from the dataset templates. A weight of 0 switches its term off
(trigger_weight 0 also skips stage 1; the stored trigger is then all zeros). With K > 1 dummy
triggers the trigger term is the CE over all K triggered copies of each image. Clean and
triggered image features are computed once; stage 2 never re-encodes images.
Ablation `oracle_trigger`: stage 2 gets the attack's real trigger applied to the few-shot images
(and a dual-key attack's real text key) in place of the dummies; nothing is inverted and the
stored trigger is all zeros. It bounds what better inversion could give.
Delta: {"ctx": [C, n_ctx, W], "trigger.mask": [K,H,W], "trigger.pattern": [3,H,W] for K = 1,
else [K,3,H,W]} in [0,1], plus "text_key" [P, W] when a dummy text key was used.
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
from clipbd.defenses.coop import CoOp, image_features, tune, zero_shot_logits
from clipbd.models.text_prompt import frozen
from clipbd.models.zeroshot import Classifier

log = logging.getLogger(__name__)
WEIGHTS = ("clean_weight", "trigger_weight", "text_weight")


def apply_trigger(x: torch.Tensor, mask: torch.Tensor, pattern: torch.Tensor) -> torch.Tensor:
    """(1 - m) * x + m * p for images x [N,3,H,W] in [0,1]."""
    return (1 - mask) * x + mask * pattern


def inversion_loss(triggered: torch.Tensor, clean: torch.Tensor, mask: torch.Tensor,
                   temperature: float, mask_weight: float) -> torch.Tensor:
    """Contrastive trigger objective on features [N, D] (N >= 2) plus the mask-size penalty.

    For anchor i: positives are the other triggered features j != i, negatives the clean
    features of the batch; loss_i = -mean_j log(exp(s_ij) / (sum_{k != i} exp(s_ik)
    + sum_k exp(c_ik))) with s = cos(triggered, triggered) / T and c = cos(triggered, clean) / T.
    """
    n = len(triggered)
    if n < 2:
        raise ValueError("the inversion objective needs at least two images per batch")
    z = F.normalize(triggered, dim=-1)
    pos = z @ z.T / temperature
    neg = z @ F.normalize(clean, dim=-1).T / temperature
    eye = torch.eye(n, dtype=torch.bool, device=z.device)
    pos = pos.masked_fill(eye, float("-inf"))
    log_den = torch.logsumexp(torch.cat([pos, neg], dim=1), dim=1, keepdim=True)
    log_p = (pos - log_den).masked_fill(eye, 0.0)
    contrast = -(log_p.sum(1) / (n - 1)).mean()
    return contrast + mask_weight * mask.abs().mean()


def prompt_loss(text: torch.Tensor, clean: torch.Tensor, triggered: torch.Tensor | None,
                labels: torch.Tensor, hand: torch.Tensor, logit_scale: torch.Tensor,
                clean_weight: float, trigger_weight: float, text_weight: float):
    """Stage-2 objective on unit features; returns (total, {term: value}) for the active terms."""
    parts = {}
    if triggered is not None and triggered.ndim == 3:  # [B, V, D]: V triggered views per image
        v = triggered.shape[1]
        triggered, trig_labels = triggered.flatten(0, 1), labels.repeat_interleave(v)
    else:
        trig_labels = labels
    if clean_weight:
        parts["clean"] = (clean_weight,
                          F.cross_entropy(zero_shot_logits(clean, text, logit_scale), labels))
    if trigger_weight:
        parts["trigger"] = (trigger_weight,
                            F.cross_entropy(zero_shot_logits(triggered, text, logit_scale), trig_labels))
    if text_weight:
        parts["text"] = (text_weight, (1 - (text * hand).sum(-1)).mean())
    if not parts:
        raise ValueError("cbpt: all loss weights are 0")
    total = sum(w * v for w, v in parts.values())
    return total, {k: v.item() for k, (_, v) in parts.items()}


def trigger_specs(cfg: dict) -> list[tuple[float, bool]]:
    """(mask weight, global mask?) of every dummy trigger stage 1 inverts: n_triggers
    per-pixel-mask restarts per entry of mask_weight (a number or a list), then one
    global-mask (single blend ratio) trigger if global_mask_weight is set."""
    mw = cfg["mask_weight"]
    weights = [float(x) for x in mw] if isinstance(mw, (list, tuple)) else [float(mw)]
    specs = [(x, False) for x in weights for _ in range(cfg["n_triggers"])]
    if cfg["global_mask_weight"] is not None:
        specs.append((float(cfg["global_mask_weight"]), True))
    return specs


def invert_trigger(model, images: torch.Tensor, clean: torch.Tensor, cfg: dict,
                   gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, list[float]]:
    """Stage 1: (mask [1,H,W], pattern [3,H,W], losses) from uint8 images and their features."""
    h, w = images.shape[1:3]
    if cfg.get("global_mask"):  # one blend ratio for every pixel (Blended-like triggers)
        h = w = 1
    init = min(max(cfg["mask_init"], 1e-4), 1 - 1e-4)
    dev = clean.device
    a = torch.full((1, h, w), math.log(init / (1 - init)), device=dev, requires_grad=True)
    b = torch.randn((3,) + tuple(images.shape[1:3]), generator=gen).to(dev).requires_grad_(True)
    opt = torch.optim.Adam([a, b], lr=cfg["inversion_lr"])
    clf = Classifier(model, torch.nn.Identity()).eval()
    bs = min(cfg["inversion_batch_size"], len(images))
    losses = []
    for _ in tqdm(range(cfg["inversion_steps"]), desc="cbpt inversion", mininterval=5):
        idx = torch.randperm(len(images), generator=gen)[:bs]
        mask, pattern = torch.sigmoid(a), torch.sigmoid(b)
        with accel.autocast(dev):  # the encoder in bf16 with accelerator.amp; the loss in float32
            feats = clf.features(apply_trigger(to_float(images[idx]).to(dev), mask, pattern))
        loss = inversion_loss(feats.float(), clean[idx], mask, cfg["temperature"],
                              cfg["mask_weight"])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    mask = torch.sigmoid(a).detach().expand(1, *images.shape[1:3]).contiguous()
    return mask, torch.sigmoid(b).detach(), losses


def collapse_entropy(text: torch.Tensor, triggered: torch.Tensor,
                     logit_scale: torch.Tensor) -> torch.Tensor:
    """Entropy of the mean class distribution of triggered features [N, D] or [N, V, D]:
    0 when every triggered image lands in the same class."""
    mean = F.softmax(zero_shot_logits(triggered.flatten(0, -2), text, logit_scale), -1).mean(0)
    return -(mean * mean.clamp_min(1e-12).log()).sum()


def key_loss(text: torch.Tensor, clean: torch.Tensor, triggered: torch.Tensor,
             labels: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """Dummy text key objective on unit features: entropy of the batch-mean class distribution of
    the triggered images [N, D] or [N, V, D] (0 when all collapse onto one class) + CE of the
    clean ones."""
    return (collapse_entropy(text, triggered, logit_scale)
            + F.cross_entropy(zero_shot_logits(clean, text, logit_scale), labels))


def invert_text_key(model, prompt, clean: torch.Tensor, triggered: torch.Tensor,
                    labels: torch.Tensor, cfg: dict, gen: torch.Generator):
    """Stage 1, text side: (key [P, W], losses), triggered [N, V, D] or [N, D] cached features."""
    vocab = model.token_embedding.weight
    ids = torch.randint(1, len(vocab) - 2, (cfg["text_key_tokens"],), generator=gen)
    key = vocab[ids.to(vocab.device)].detach().clone().float().requires_grad_(True)
    opt = torch.optim.Adam([key], lr=cfg["key_lr"])
    bs = min(cfg["inversion_batch_size"], len(clean))
    losses = []
    prompt.ctx.requires_grad_(False)  # the initial context; only the key moves
    for _ in range(cfg["key_steps"]):
        idx = torch.randperm(len(clean), generator=gen)[:bs].to(clean.device)
        loss = key_loss(prompt(key=key), clean[idx], triggered[idx], labels[idx],
                        model.logit_scale)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    prompt.ctx.requires_grad_(True)
    return key.detach(), losses


@register("cbpt")
class CBPT(CoOp):
    title = "CBPT"
    order = 6

    def fit(self, ctx, fewshot):
        cfg = self.cfg
        weights = {k: cfg[k] for k in WEIGHTS}
        gen = torch.Generator().manual_seed(ctx.seed)
        with frozen(ctx.model) as model:
            images = fewshot.images
            clean = image_features(model, images)
            labels = fewshot.labels.to(clean.device)
            hand = ctx.zero_shot_head().text_features.to(clean.device)
            h, w = images.shape[1:3]
            specs = trigger_specs(cfg)
            k = len(specs)
            masks, patterns = torch.zeros(k, h, w), torch.zeros(k, 3, h, w)
            self.inversion_losses = []
            triggered, extra = None, {}
            oracle = weights["trigger_weight"] and cfg["oracle_trigger"]
            if oracle:  # the ablation: the attack's real trigger, no inversion
                if ctx.oracle_trigger is None:
                    raise ValueError("defenses.cbpt.oracle_trigger: this run has no attack "
                                     "trigger (attack `clean`, or `defend` without --trigger)")
                triggered = image_features(model, ctx.oracle_trigger(images))
            elif weights["trigger_weight"]:
                views = []
                for i, (weight, glob) in enumerate(specs):
                    sample = self._inversion_sample(len(images), gen)
                    mask, pattern, losses = invert_trigger(
                        model, images[sample], clean[sample],
                        {**cfg, "mask_weight": weight, "global_mask": glob}, gen)
                    masks[i], patterns[i] = mask[0].cpu(), pattern.cpu()
                    self.inversion_losses += losses
                    views.append(image_features(model, images,
                                                lambda x, m=mask, p=pattern: apply_trigger(x, m, p)))
                triggered = views[0] if len(views) == 1 else torch.stack(views, 1)
            mask, pattern = (masks, patterns[0]) if k == 1 else (masks, patterns)
            prompt = self.prompt(ctx, gen)

            keyed = None  # the class features through prompts carrying a text key
            if oracle:
                if ctx.oracle_key:
                    keyed = lambda: prompt(ctx.oracle_key)  # noqa: E731
            elif triggered is not None and cfg["text_key_tokens"]:
                # its own generator: with the key gated off, the run is the key-less one
                key_gen = torch.Generator().manual_seed(ctx.seed + 1)
                key, losses = invert_text_key(model, prompt, clean, triggered, labels, cfg,
                                              key_gen)
                with torch.no_grad():
                    gain = (collapse_entropy(prompt(), triggered, model.logit_scale)
                            - collapse_entropy(prompt(key=key), triggered, model.logit_scale))
                self.key_gain = gain.item()
                log.info("cbpt: the dummy text key lowers the triggered images' class entropy "
                         "by %.3f nats (threshold %s)", self.key_gain, cfg["key_gain"])
                if self.key_gain >= cfg["key_gain"]:
                    extra["text_key"] = key.cpu().contiguous()
                    self.inversion_losses += losses
                    keyed = lambda: prompt(key=key)  # noqa: E731

            def batch_loss(idx):
                trig = None if triggered is None else triggered[idx]
                total, _ = prompt_loss(prompt(), clean[idx], trig,
                                       labels[idx], hand, model.logit_scale, **weights)
                if keyed is not None:  # the trigger term again, through the keyed prompts
                    again, _ = prompt_loss(keyed(), clean[idx], trig, labels[idx],
                                           hand, model.logit_scale, clean_weight=0.0,
                                           trigger_weight=weights["trigger_weight"],
                                           text_weight=0.0)
                    total = total + again
                return total

            self.losses = tune(prompt, len(clean), batch_loss, cfg, gen)
        log.info("cbpt: inversion loss %s, prompt loss %.4f -> %.4f",
                 f"{self.inversion_losses[0]:.4f} -> {self.inversion_losses[-1]:.4f}"
                 if self.inversion_losses else "skipped", self.losses[0], self.losses[-1])
        return {"ctx": prompt.ctx.detach().cpu().clone(), "trigger.mask": mask.cpu().contiguous(),
                "trigger.pattern": pattern.cpu().contiguous(), **extra}

    def _inversion_sample(self, n: int, gen: torch.Generator) -> torch.Tensor:
        k = self.cfg["inversion_samples"]
        return torch.randperm(n, generator=gen)[:k] if k else torch.arange(n)
