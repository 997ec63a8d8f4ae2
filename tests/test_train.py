import math

import pytest
import torch

from clipbd.train.contrastive import CaptionedImages, _batch, clip_loss, train
from clipbd.train.schedule import warmup_cosine
from clipbd.train.state import TrainState
from clipbd.models import clip


def test_clip_loss_on_hand_made_features():
    same = torch.ones(4, 8)
    assert clip_loss(same, same, torch.tensor(10.0)).item() == pytest.approx(math.log(4), abs=1e-5)
    eye = torch.eye(4)
    # matched pairs cos=1, others 0: -log(e^s / (e^s + 3))
    s = 5.0
    expected = -math.log(math.exp(s) / (math.exp(s) + 3))
    assert clip_loss(eye, eye, torch.tensor(s)).item() == pytest.approx(expected, rel=1e-5)


def test_schedule():
    assert warmup_cosine(0, 100, 10) == pytest.approx(0.1)
    assert warmup_cosine(9, 100, 10) == pytest.approx(1.0)
    assert warmup_cosine(10, 100, 10) == pytest.approx(1.0)
    assert warmup_cosine(55, 100, 10) == pytest.approx(0.5)
    assert warmup_cosine(100, 100, 10) == pytest.approx(0.0)


def _data(n=24):
    g = torch.Generator().manual_seed(0)
    tok = clip.tokenizer("clipbd-tiny-vit")
    return CaptionedImages(torch.randint(0, 256, (n, 32, 32, 3), generator=g, dtype=torch.uint8),
                           torch.arange(n).remainder(3).view(-1, 1).repeat(1, 2),
                           tok(["a", "b", "c"]))


def test_batches_are_a_function_of_seed_and_step():
    data = _data()
    a1, t1 = _batch(data, 5, 8, seed=1)
    a2, t2 = _batch(data, 5, 8, seed=1)
    a3, _ = _batch(data, 6, 8, seed=1)
    assert torch.equal(a1, a2) and torch.equal(t1, t2) and not torch.equal(a1, a3)
    assert a1.shape == (8, 3, 32, 32) and t1.shape == (8, 16)


def test_interrupted_training_resumes_to_the_same_weights(tmp_path, monkeypatch):
    from clipbd.train import contrastive

    data = _data()
    kw = dict(steps=4, batch_size=8, lr=1e-3, weight_decay=0.1, warmup=1, seed=0)
    torch.manual_seed(0)
    straight = clip.create("clipbd-tiny-vit")
    init = {k: v.clone() for k, v in straight.state_dict().items()}
    train(straight, data, **kw)

    out = tmp_path / "model.safetensors"
    real_batch = contrastive._batch

    def dies_at_step_2(data, step, *a):
        if step == 2:
            raise KeyboardInterrupt  # stands in for SIGKILL after two saved steps
        return real_batch(data, step, *a)

    killed = clip.create("clipbd-tiny-vit")
    killed.load_state_dict(init)
    monkeypatch.setattr(contrastive, "_batch", dies_at_step_2)
    with pytest.raises(KeyboardInterrupt):
        train(killed, data, **kw, state=TrainState(out, "cfg-a", every_s=0))
    monkeypatch.setattr(contrastive, "_batch", real_batch)
    assert TrainState(out, "cfg-a").path.exists()

    torch.manual_seed(123)  # a different init: everything must come from the saved state
    resumed = clip.create("clipbd-tiny-vit")
    train(resumed, data, **kw, state=TrainState(out, "cfg-a", every_s=0))
    for k, v in straight.state_dict().items():
        assert torch.allclose(v, resumed.state_dict()[k], atol=1e-6), k


def test_state_from_another_config_is_ignored(tmp_path):
    data = _data()
    out = tmp_path / "m.safetensors"
    model = clip.create("clipbd-tiny-vit")
    train(model, data, steps=1, batch_size=8, lr=1e-3, weight_decay=0.0, warmup=0, seed=0,
          state=TrainState(out, "cfg-a", every_s=0))
    opt = torch.optim.AdamW(model.parameters())
    assert TrainState(out, "cfg-b").load(model, opt) == 0
    assert TrainState(out, "cfg-a").load(model, torch.optim.AdamW(
        [{"params": [p for p in model.parameters() if p.ndim >= 2]},
         {"params": [p for p in model.parameters() if p.ndim < 2]}])) == 1


def _index_corpus(path, split) -> None:
    """A poisoned-corpus file (clipbd.data.corpus) whose pairs are all of `split`, in order."""
    from clipbd.artifacts import file_sha256
    from clipbd.data.corpus import CorpusImages, save_corpus
    from clipbd.data.store import ImageSet, load_split

    data = load_split(split)
    view = CorpusImages([data.images], torch.zeros(len(data), dtype=torch.long),
                        torch.arange(len(data)))
    save_corpus(path, ImageSet(view, data.labels, data.classes, data.ids, data.captions),
                [{"name": "d", "path": str(split), "sha256": file_sha256(split)}])


@pytest.mark.parametrize("verb", ["pretrain", "backdoor"])
def test_resume_from_a_state_saved_at_the_final_step(tmp_path, monkeypatch, verb):
    """Killed after the last step's state save, before the model was written: the rerun
    trains nothing more and writes the same weights and final loss as an uninterrupted run
    (it used to fail on an empty loss curve after clearing the state, for good)."""
    from clipbd import models
    from clipbd.verbs import backdoor as backdoor_verb
    from clipbd.verbs import pretrain as pretrain_verb
    from clipbd.artifacts import load_tensors, read_json
    from clipbd.data.store import ImageSet, save_split

    g = torch.Generator().manual_seed(1)
    n, arch = 16, "clipbd-tiny-vit"
    labels = torch.arange(n).remainder(2)
    split = tmp_path / "split.safetensors"
    save_split(split, ImageSet(torch.randint(0, 256, (n, 32, 32, 3), generator=g, dtype=torch.uint8),
                               labels, ["cat", "dog"], [str(i) for i in range(n)],
                               [f"a photo of a {'cat' if y == 0 else 'dog'}." for y in labels]))
    loop = {"steps": 3, "batch_size": 8, "lr": 1e-3, "weight_decay": 0.1, "warmup": 1}
    if verb == "pretrain":
        cfg = {"model": {"arch": arch, "weights": None}, "pretrain": {**loop, "datasets": ["d"]},
               "seed": 0, "datasets": {"d": {"templates": ["a {}."]}}}

        def run(out):
            pretrain_verb.pretrain(cfg, {"d": str(split)}, str(out), code="abc")
    else:
        torch.manual_seed(0)
        clean = tmp_path / "clean.safetensors"
        clip.save_checkpoint(clean, clip.create(arch), arch)
        cfg = {"backdoor": loop, "seed": 0}
        corpus = tmp_path / "corpus.safetensors"  # every pair the split's clean row
        _index_corpus(corpus, split)

        def run(out):
            backdoor_verb.backdoor(cfg, str(clean), str(corpus), str(out), code="abc")

    monkeypatch.setenv("CLIPBD_STATE_EVERY_S", "0")
    run(tmp_path / "ref.safetensors")
    out = tmp_path / "model.safetensors"
    state = TrainState(out, "any").path

    def killed(*a, **k):
        raise KeyboardInterrupt  # stands in for SIGKILL between the last save and the write

    with monkeypatch.context() as m:
        m.setattr(models, "save_checkpoint", killed)
        with pytest.raises(KeyboardInterrupt):
            run(out)
    assert load_tensors(state)[1]["step"] == 3 and not out.exists()
    run(out)
    assert not state.exists()
    ref, got = load_tensors(tmp_path / "ref.safetensors")[0], load_tensors(out)[0]
    assert sorted(ref) == sorted(got) and all(torch.equal(ref[k], got[k]) for k in ref)
    want = read_json(str(tmp_path / "ref.safetensors") + ".json")["final_loss"]
    assert isinstance(want, float) and read_json(str(out) + ".json")["final_loss"] == want
