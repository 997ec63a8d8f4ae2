"""`python -m clipbd import-weights`: the CLIP weight files users hold, converted once into
the clipbd safetensors file the pipeline loads (`model.weights`, `clipbd.models.clip`).

This is the one place in clipbd that reads a foreign file format. Plain state dicts are read
with `torch.load(weights_only=True)`, which rebuilds only tensors and plain containers and
refuses any other Python object. A TorchScript archive cannot be read that way:
`torch.jit.load` deserializes its TorchScript code and graphs (compiled methods, no Python
pickle of arbitrary classes) into a module on the CPU; we read that module's `state_dict()`
only and never call `forward` or any other method of it.

Nothing heavy is imported at module level: `clipbd.cli` reads `HELP` for every verb.
"""
from __future__ import annotations

import hashlib
import json
import pickletools
import sys
import time
import zipfile
from pathlib import Path

HELP = """\
accepted SRC formats (detected from the file's bytes, not its name):
  openai-torchscript    OpenAI's released archives (ViT-B-32.pt, RN50.pt, ViT-L-14.pt, ...).
                        Read with torch.jit.load on the CPU: that deserializes the archive's
                        TorchScript code and graphs; only its state_dict is read, forward is
                        never called.
  openai-state-dict     an OpenAI model's state dict saved with torch.save (it holds the keys
                        context_length, input_resolution, vocab_size; fp16 weights).
  open_clip-state-dict  an open_clip state dict saved with torch.save (.pt/.bin/.pth, e.g.
                        open_clip_pytorch_model.bin); a {"state_dict": ...} wrapper and
                        "module." prefixes are removed. Read with torch.load(weights_only=True):
                        tensors only, any other pickled object is refused.
  open_clip-safetensors open_clip keys in a safetensors file (open_clip_model.safetensors of a
                        Hugging Face hub repo, or a clipbd checkpoint). The transformers
                        CLIPModel layout (text_model.*, vision_model.*) is refused.

activation: OpenAI's weights were trained with QuickGELU, so an OpenAI file needs a -quickgelu
architecture (--arch ViT-B-32-quickgelu, RN50-quickgelu, ...); a plain one is refused. An
open_clip file does not record its activation: say it with --activation (quick_gelu for
OpenAI-trained weights, e.g. a timm/*.openai repo, and open_clip's -quickgelu pretrained tags;
gelu for most LAION/DataComp weights); it must match --arch's.

output: FILE (safetensors, float32, header: arch, activation, source sha256) and FILE.json
(source path and sha256, detected format, arch, activation). Put FILE and its printed sha256
under model.weights / model.sha256 (or models.<name>).
"""

OPENAI_EXTRA = ("context_length", "input_resolution", "vocab_size")
ACTIVATIONS = ("quick_gelu", "gelu")


def _safetensors(path: Path) -> bool:
    from clipbd.artifacts import check_safetensors_header

    try:
        check_safetensors_header(path)
        return True
    except ValueError:
        return False


def sniff(path: str | Path) -> str:
    """The container, from the bytes alone (nothing is unpickled): 'safetensors',
    'torchscript', 'torch-zip' (torch.save), 'torch-legacy' (old torch.save) or 'unknown'."""
    path = Path(path)
    if _safetensors(path):
        return "safetensors"
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
        if any(n.endswith("/constants.pkl") or "/code/" in n for n in names):
            return "torchscript"
        if any(n.endswith("/data.pkl") for n in names):
            return "torch-zip"
        return "unknown"
    with open(path, "rb") as f:
        return "torch-legacy" if f.read(1) == b"\x80" else "unknown"  # pickle PROTO opcode


def header(path: str | Path) -> dict:
    """The JSON-decoded `__metadata__` of a safetensors file (the tensors are not read)."""
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        raw = json.loads(f.read(n)).get("__metadata__") or {}
    out = {}
    for k, v in raw.items():
        try:
            out[k] = json.loads(v)
        except ValueError:
            out[k] = v
    return out


def looks_openai(path: str | Path) -> bool:
    """A torch.save zip whose pickle names OpenAI's extra keys (opcodes read, not executed)."""
    with zipfile.ZipFile(path) as z:
        name = next(n for n in z.namelist() if n.endswith("/data.pkl"))
        strings = {arg for op, arg, _ in pickletools.genops(z.read(name)) if isinstance(arg, str)}
    return set(OPENAI_EXTRA) <= strings


def _unwrap(obj, src: Path) -> dict:
    import torch

    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj:
        raise ValueError(f"{src}: holds a {type(obj).__name__}, not a state dict of tensors")
    if all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    bad = sorted(k for k, v in obj.items() if not isinstance(v, torch.Tensor))
    if bad:
        raise ValueError(f"{src}: entries that are not tensors: {bad[:8]}; save the model's "
                         "state_dict alone")
    return obj


def read(src: str | Path) -> tuple[str, dict, dict]:
    """(format, state dict, safetensors header) of a weight file (see HELP)."""
    import torch

    src = Path(src)
    kind, meta = sniff(src), {}
    if kind == "safetensors":
        from clipbd.artifacts import load_tensors

        state, meta = load_tensors(src)
        if any(k.startswith(("text_model.", "vision_model.")) for k in state):
            raise ValueError(f"{src}: a Hugging Face transformers CLIPModel file (text_model.*, "
                             "vision_model.* keys), not open_clip's layout; use the repo's "
                             "open_clip_model.safetensors or open_clip_pytorch_model.bin")
        container = "safetensors"
    elif kind == "torchscript":
        try:
            state = dict(torch.jit.load(str(src), map_location="cpu").state_dict())
        except RuntimeError as err:
            raise ValueError(f"{src}: torch.jit.load failed ({err})") from None
        container = "torchscript"
    elif kind in ("torch-zip", "torch-legacy"):
        try:
            obj = torch.load(src, map_location="cpu", weights_only=True)
        except Exception as err:  # weights_only refuses pickled classes/functions
            raise ValueError(f"{src}: torch.load(weights_only=True) refused it ({err}); a "
                             "full training checkpoint? save its state_dict alone") from None
        state, container = _unwrap(obj, src), "state-dict"
    else:
        raise ValueError(f"{src}: not a weight file clipbd can read (neither safetensors, a "
                         "TorchScript archive nor a torch.save state dict); accepted formats: "
                         "python -m clipbd import-weights --help")
    origin = "openai" if set(OPENAI_EXTRA) <= set(state) else "open_clip"
    return f"{origin}-{container}", state, meta


def trained_activation(fmt: str, meta: dict, given: str, src: Path) -> str:
    """The activation the weights were trained with: OpenAI's QuickGELU, a clipbd header's,
    or the one the user states (--activation) for files that do not record it."""
    known = "quick_gelu" if fmt.startswith("openai-") else meta.get("activation")
    if known and given and given != known:
        raise ValueError(f"{src}: --activation {given}, but this {fmt} file was trained with "
                         f"{known}; drop --activation")
    if known or given:
        return known or given
    raise ValueError(f"{src}: an {fmt} file does not record the activation its weights were "
                     "trained with; pass --activation quick_gelu (OpenAI-trained weights, e.g. "
                     "a timm/*.openai repo, and open_clip's -quickgelu tags) or --activation "
                     "gelu (most LAION/DataComp weights)")


def _fit(model, state: dict, src: Path, arch: str) -> dict:
    """`state` with open_clip's own layout fixes, checked against `model`'s keys and shapes."""
    from open_clip.model import convert_to_custom_text_state_dict

    state = {k: v for k, v in state.items() if k not in OPENAI_EXTRA}
    if "positional_embedding" in state and not hasattr(model, "positional_embedding"):
        state = convert_to_custom_text_state_dict(state)
    own = model.state_dict()
    derived = {n for n, _ in model.named_buffers()} - set(own)  # non-persistent (attn_mask)
    state = {k: v for k, v in state.items() if k not in derived}
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if missing or unexpected:
        raise ValueError(f"{src}: the weights do not fit --arch {arch}: {len(missing)} missing "
                         f"keys {missing[:8]}, {len(unexpected)} unexpected keys "
                         f"{unexpected[:8]}; pass the architecture they were saved from")
    bad = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own
           if state[k].shape != own[k].shape]
    if bad:
        raise ValueError(f"{src}: the weights do not fit --arch {arch}: shapes differ for "
                         f"{bad[:4]}; pass the architecture they were saved from")
    return state


def convert(src: str | Path, arch: str, out: str | Path, activation: str = "",
            code: str = "") -> dict:
    """Read `src`, check it against `arch`, write `out` + sidecar; returns the sidecar."""
    from clipbd.artifacts import sha256_file, write_sidecar
    from clipbd.models import clip

    t0, src = time.time(), Path(src)
    if not src.is_file():
        raise FileNotFoundError(f"{src}: no such file")
    if arch not in clip.open_clip.list_models():
        raise ValueError(f"--arch {arch}: unknown open_clip architecture (open_clip.list_models())")
    fmt, state, meta = read(src)
    trained = trained_activation(fmt, meta, activation, src)
    if trained != clip.activation(arch):
        raise ValueError(f"{src}: its weights were trained with {trained} ({fmt}), but --arch "
                         f"{arch} uses {clip.activation(arch)}: the weights would load without "
                         f"a word and every number would be wrong; use --arch "
                         f"{clip.arch_with(arch, trained)}")
    model = clip.create(arch)
    model.load_state_dict(_fit(model, state, src, arch), strict=True)  # casts fp16 to fp32
    digest = sha256_file(src)
    head = {"activation": trained, "source_format": fmt, "source_sha256": digest}
    clip.save_checkpoint(out, model, arch, head)
    return write_sidecar(out, step="import-weights", config={}, inputs=[], code=code,
                         seed=None, started=t0,
                         extra={"source": str(src.resolve()), **head, "arch": arch})


def main(args) -> int:
    """The verb: one clear error (exit 2) or the config lines to paste (exit 0)."""
    from clipbd.artifacts import job_outputs

    src, out = Path(args.src), Path(args.out)
    if out.exists() and src.exists() and out.resolve() == src.resolve():
        print(f"clipbd import-weights: --out {out} is SRC itself; write elsewhere", file=sys.stderr)
        return 2
    code = args.code or hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]
    try:
        with job_outputs([str(out)]):
            info = convert(src, args.arch, out, args.activation, code)
    except (ValueError, FileNotFoundError) as err:
        print(f"clipbd import-weights: {err}", file=sys.stderr)
        return 2
    print(json.dumps({k: info[k] for k in ("artifact", "sha256", "arch", "activation",
                                           "source_format", "source", "source_sha256")}))
    print(f"config:\n  model: {{arch: {args.arch}, weights: {out}, sha256: \"{info['sha256']}\"}}")
    return 0
