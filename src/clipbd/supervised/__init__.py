"""The supervised track: FST's own protocol on classic classifiers.

Method notes: docs/methods.md, "Supervised track: protocol" and "Supervised track: defenses".

A ResNet-18 victim (torchvision architecture, no downloaded weights) is trained on a poisoned
copy of a prepared training split (all-to-one; clean-label for SIG and label-consistent),
then purified on a small clean tuning set by FT, LP, FE-tuning, FT-init or FST(alpha).
Triggers come from the CLIP track's attack classes (clipbd.attacks), FST's penalty and norm
projection from clipbd.defenses.fst, the training loop from clipbd.train.supervised.

    model.py            victim architecture, safetensors checkpoints
    attacks.py          supervised attack registry (label mode, trigger class)
    label_consistent.py the label-consistent trigger + PGD perturbation
    poison.py           poisoned training set, triggered test images, tuning-set draw
    defenses/           one file per defense behind a registry
    steps.py            what the verbs sup-trigger, sup-train, sup-defend do (clipbd.verbs)
    report.py           table (CSV + Markdown) and figures
"""
