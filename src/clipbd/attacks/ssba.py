"""SSBA / ISSBA: an invisible, sample-specific residual hiding a secret string.

The lineage (CleanCLIP/BadCLIP `issba`) runs the pretrained StegaStamp TensorFlow model
(400 px U-Net encoder trained on MIRFLICKR with perceptual, critic and distortion losses) on
224 px images to hide "Stega!!" (56 bits + 40 BCH parity bits + 4 padding = 100 bits).
That model is not reachable here (decision 3, docs/methods.md, "Attack: SSBA"), so this module
trains its own StegaStamp-style encoder/decoder as the pipeline step `learn_trigger`:

* on the training images of backdoor.datasets only (never a test split), at the study's image
  size, with a fresh random bit vector per image (as StegaStamp), so the encoder learns to hide
  any message and not one fixed pattern;
* loss = BCE(decoded bits) + fidelity_weight * mean((residual / eps)^2), the fidelity term
  off for the first third of training, then ramped in linearly until two thirds (StegaStamp
  also starts with the secret loss alone and ramps its image losses in); no LPIPS,
  critic, or geometric/colour/JPEG distortions, only uniform noise of one uint8 step before
  decoding, since poisoned images are stored as uint8;
* the residual is eps * softsign(.), so its L_inf norm is at most `eps` by construction (the
  pretrained StegaStamp has no hard bound on its residual);
* the secret is the UTF-8 bits of `secret`, cut or cycled to `bits` bits (cycling replaces
  BCH; no error correction is needed because nothing is ever decoded in the attack).

The stored trigger is the encoder and decoder weights (prefixes `encoder.`, `decoder.`), the
secret bits and eps; `apply` rebuilds the encoder from them alone, so the artifact is
self-describing. Poisoning embeds the same secret in every image; the residual still differs
from image to image, which is what makes the attack sample-specific.

On the tiny CLIP (embedded study, no defense, 300 backdoor steps) eps = 0.05 was barely
learned (ASR 0.18 at 5% poisoning; residual PSNR 34 dB), eps = 0.1 was (ASR 0.98 at 5%,
0.99 at 10%; PSNR 30 dB, about 5/255 mean absolute change; CA 0.845-0.853 vs 0.849 clean).
"""
from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from tqdm import tqdm

from clipbd import accel
from clipbd.attacks import register
from clipbd.attacks.base import Attack, TriggerContext
from clipbd.attacks.stegastamp import Decoder, Encoder, secret_bits, width_of
from clipbd.data.store import to_float

log = logging.getLogger(__name__)
PIXELS_PER_CHUNK = 2 ** 22  # bounds the encoder's activation memory at large image sizes


def _split(trigger: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in trigger.items() if k.startswith(prefix)}


def _gather(parts: list, starts: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """uint8 rows `idx` of the parts taken as one sequence (parts start at `starts`), in
    order; one read per part (on-disk `Rows` read only those rows)."""
    part = torch.searchsorted(starts, idx, right=True) - 1
    out = torch.empty((len(idx), *parts[0].shape[1:]), dtype=torch.uint8)
    for p, images in enumerate(parts):
        sel = part == p
        if sel.any():
            out[sel] = images[idx[sel] - starts[p]]
    return out


@register("ssba")
class SSBA(Attack):
    title = "ISSBA"
    section = "Attack: SSBA"
    order = 4
    learned = True
    needs_model = False

    def secret(self) -> torch.Tensor:
        return secret_bits(self.cfg["secret"], self.cfg["bits"])

    def learn(self, ctx: TriggerContext) -> dict[str, torch.Tensor]:
        c = self.cfg
        n_bits, eps, steps = c["bits"], float(c["eps"]), c["train_steps"]
        parts = [data.images for _, data, _ in ctx.corpus]
        sizes = torch.tensor([len(p) for p in parts])
        if int(sizes.sum()) == 0:
            raise ValueError("ssba: no training images to learn the encoder on")
        starts = torch.cumsum(sizes, 0) - sizes
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(ctx.seed)
            enc, dec = Encoder(n_bits, c["width"]), Decoder(n_bits, c["width"])
        enc, dec = accel.place(enc), accel.place(dec)  # drawn on the host, trained on the device
        dev = accel.device_of(enc)
        opt = torch.optim.Adam([*enc.parameters(), *dec.parameters()], lr=c["lr"])
        g = torch.Generator().manual_seed(ctx.seed)
        ramp = max(1, steps // 3)
        bar = tqdm(range(steps), desc="ssba", mininterval=5)
        self.losses: list[float] = []
        for step in bar:
            idx = torch.randint(0, int(sizes.sum()), (c["batch_size"],), generator=g)
            x = accel.to(to_float(_gather(parts, starts, idx)), dev)
            bits = accel.to(torch.randint(0, 2, (len(x), n_bits), generator=g).float(), dev)
            r = enc(x, bits, eps)
            noise = accel.to(torch.rand(x.shape, generator=g), dev)
            y = (x + r).clamp(0, 1) + (noise - 0.5) / 255
            logits = dec(y)
            bce = F.binary_cross_entropy_with_logits(logits, bits)
            fidelity = (r / eps).pow(2).mean()
            loss = bce + c["fidelity_weight"] * min(1.0, max(0.0, step / ramp - 1)) * fidelity
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            self.losses.append(loss.item())
            if step % 50 == 0 or step == steps - 1:
                acc = ((logits > 0).float() == bits).float().mean().item()
                bar.set_postfix(bce=f"{bce.item():.3f}", bit_acc=f"{acc:.3f}")
                log.info("ssba step %d/%d bce %.4f bit_acc %.3f residual_rms/eps %.3f",
                         step, steps, bce.item(), acc, fidelity.sqrt().item())
        return {**{f"encoder.{k}": v.detach().cpu().clone() for k, v in enc.state_dict().items()},
                **{f"decoder.{k}": v.detach().cpu().clone() for k, v in dec.state_dict().items()},
                "secret": self.secret(), "eps": torch.tensor(eps, dtype=torch.float32)}

    @staticmethod
    def encoder(trigger: dict[str, torch.Tensor]) -> Encoder:
        state = _split(trigger, "encoder.")
        enc = Encoder(len(trigger["secret"]), width_of(state))
        enc.load_state_dict(state)
        return enc.eval()

    @staticmethod
    def decoder(trigger: dict[str, torch.Tensor]) -> Decoder:
        state = _split(trigger, "decoder.")
        dec = Decoder(len(trigger["secret"]), state["features.0.0.weight"].shape[0] // 2)
        dec.load_state_dict(state)
        return dec.eval()

    @torch.no_grad()
    def residual(self, x: torch.Tensor, trigger: dict[str, torch.Tensor]) -> torch.Tensor:
        """The encoder's residual for images x [N,3,H,W]; |residual| <= eps exactly."""
        enc = self.encoder(trigger)
        eps = float(trigger["eps"])
        chunk = max(1, PIXELS_PER_CHUNK // (x.shape[-1] * x.shape[-2]))
        out = []
        for i in range(0, len(x), chunk):
            xi = x[i:i + chunk].float()
            bits = trigger["secret"].float().expand(len(xi), -1)
            out.append(enc(xi, bits, eps))
        return torch.cat(out).to(x) if out else torch.zeros_like(x)

    def apply(self, x, trigger, gen):
        """Deterministic: `gen` is unused (the residual is a function of the image)."""
        return (x + self.residual(x, trigger)).clamp(0, 1)

    @torch.no_grad()
    def decode(self, x: torch.Tensor, trigger: dict[str, torch.Tensor]) -> torch.Tensor:
        """Bits {0,1} [N,B] that the stored decoder reads from images x (for auditing)."""
        return (self.decoder(trigger)(x.float()) > 0).float()
