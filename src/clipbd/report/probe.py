"""Probe one model (+ a VPT/RVPT delta) on a few test images: the small dump behind RVPT
Fig. 1 (perturbation resistivity per layer), Fig. 4 (last-layer attention) and Fig. 5 (t-SNE).

Tensors written (N = `n` first test images, L = transformer blocks, K = `n_show`):
  pr [P, L]                mean over images of cos(CLS(x), CLS(x + perturbation)) after each
                           block, for the P perturbations named in the metadata (RVPT App. B:
                           four benign ones and the attack's trigger)
  feat_clean, feat_trig    [N, D] final image features of the clean / triggered images
  labels [N]               true classes
  attn_clean, attn_trig    [K, g, g] last-block attention of the CLS token over the patches,
                           mean over heads
  images_clean, images_trig [K, H, W, 3] uint8, the images the maps belong to
"""
from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from clipbd import accel
from clipbd.artifacts import load_tensors, save_tensors, write_sidecar
from clipbd.data.store import load_split, to_float
from clipbd.models import clip
from clipbd.models.visual_prompt import embed, pool, run_blocks
from clipbd.models.zeroshot import Normalize
from clipbd.report.gallery import benign_perturbations

def _prompts(defense: str, delta: dict) -> dict[int, torch.Tensor]:
    """The deep visual prompts of a defense the probe can open (`Defense.probe`), by block."""
    from clipbd import defenses

    if not defenses.REGISTRY.get(defense).probe:
        probed = [n for n, c in defenses.REGISTRY.classes().items() if c.probe]
        raise ValueError(f"probe: defense {defense!r} cannot be probed; use one of {probed}")
    if "prompts" not in delta:  # no defense: the backdoored encoder as it is
        return {}
    return {int(b): p for b, p in zip(delta["blocks"].tolist(), delta["prompts"])}


@torch.no_grad()
def encode(visual, x: torch.Tensor, prompts: dict[int, torch.Tensor]):
    """Normalized pixels -> (features [N, D], CLS after every block [L, N, W],
    last-block CLS attention over the patch tokens [N, P])."""
    n_layers = len(visual.transformer.resblocks)
    last = n_layers - 1
    tokens, cls = run_blocks(visual, embed(visual, x), stop=last, prompts=prompts,
                             cls_layers=range(last))
    n_patch = visual.positional_embedding.shape[0] - 1
    if last in prompts:
        p = prompts[last].to(tokens.dtype).unsqueeze(0).expand(tokens.shape[0], -1, -1)
        tokens = torch.cat([tokens[:, :1], p, tokens[:, tokens.shape[1] - n_patch:]], dim=1)
    blk = visual.transformer.resblocks[last]
    batch_first = getattr(visual.transformer, "batch_first", True)
    y = blk.ln_1(tokens)
    if batch_first:
        _, weights = blk.attn(y, y, y, need_weights=True, average_attn_weights=True)
    else:
        yt = y.transpose(0, 1)
        _, weights = blk.attn(yt, yt, yt, need_weights=True, average_attn_weights=True)
    attn = weights[:, 0, -n_patch:]
    out = blk(tokens) if batch_first else blk(tokens.transpose(0, 1)).transpose(0, 1)
    cls.append(out[:, 0])
    return pool(visual, out), torch.stack(cls), attn


def resistivity(cls_clean: torch.Tensor, cls_pert: torch.Tensor) -> torch.Tensor:
    """[L] mean over images of the per-layer cosine similarity (RVPT's PR)."""
    return F.cosine_similarity(cls_clean, cls_pert, dim=-1).mean(1)


def probe(cfg: dict, model_path: str, delta_path: str, test_path: str, poisoned_path: str,
          out: str, code: str, n: int = 200, n_show: int = 4) -> None:
    t0 = time.time()
    model, _ = clip.load_checkpoint(model_path)
    accel.place(model).eval()
    dev = accel.device_of(model)
    delta = load_tensors(delta_path)[0] if delta_path else {}
    prompts = {b: p.to(dev) for b, p in _prompts(cfg["defense"], delta).items()}
    test = load_split(test_path)
    trig = load_split(poisoned_path).images  # on disk: only the first n rows are read
    if len(trig) != len(test):
        raise ValueError(f"probe: {poisoned_path} holds {len(trig)} images, {test_path} "
                         f"{len(test)}; they must be the same test set")
    n = min(n, len(test))
    clean = to_float(test.images[:n])
    norm = Normalize(model)
    variants = {**benign_perturbations(clean, cfg.get("run_seed", 0)),
                "trigger": to_float(trig[:n])}

    def run(images):  # on the model's device; the results back on the host
        return [t.cpu() for t in encode(model.visual, norm(accel.to(images, dev)), prompts)]

    feat_clean, cls_clean, attn_clean = run(clean)
    pr, names, feat_trig, attn_trig = [], [], None, None
    for name, imgs in variants.items():
        feats, cls, attn = run(imgs)
        pr.append(resistivity(cls_clean, cls))
        names.append(name)
        if name == "trigger":
            feat_trig, attn_trig = feats, attn
    g = int(round(attn_clean.shape[1] ** 0.5))
    tensors = {"pr": torch.stack(pr), "feat_clean": F.normalize(feat_clean, dim=-1),
               "feat_trig": F.normalize(feat_trig, dim=-1), "labels": test.labels[:n].clone(),
               "attn_clean": attn_clean[:n_show].reshape(-1, g, g),
               "attn_trig": attn_trig[:n_show].reshape(-1, g, g),
               "images_clean": test.images[:n_show].clone(),
               "images_trig": trig[:n_show].clone()}
    meta = {"perturbations": names, "classes": list(test.classes), "defense": cfg["defense"],
            "row": cfg.get("row", {})}
    save_tensors(out, {k: v.contiguous() for k, v in tensors.items()}, meta)
    inputs = [p for p in (model_path, delta_path, test_path, poisoned_path) if p]
    write_sidecar(out, step="probe", config=cfg, inputs=inputs, code=code,
                  seed=cfg.get("run_seed", 0), started=t0)
