"""Size presets. cpu64 and cpu128 fit this 2-core machine (64x64 MedNIST in <= 20 min, a
128x128 brain MRI or Kather model in <= 60 min); gpu128 is cpu128 with twice the epochs, which a
lent GPU affords every method in minutes; full is the paper-sized model for a GPU."""
PRESETS = {
    "cpu64": {"size": 64, "epochs": 24, "max_steps_per_epoch": 150, "model": {}},
    "cpu128": {"size": 128, "epochs": 24, "max_steps_per_epoch": 150, "model": {}},
    "gpu128": {"size": 128, "epochs": 48, "max_steps_per_epoch": 150, "model": {}},
    "full": {"size": 224, "epochs": 150, "max_steps_per_epoch": 0, "batch": 256, "lr": 3e-4,
             "model": {"widths": (64, 256, 512, 2048), "heads": 8, "head_dim": 64, "feat_dim": 512,
                       "vit_width": 768, "vit_depth": 12, "vit_heads": 12, "vit_pool": 6, "kan_hidden": 512}},
    # the 20-step smoke run of the tests
    "tiny": {"size": 32, "epochs": 1, "max_steps_per_epoch": 20, "batch": 32,
             "model": {"widths": (8, 16, 32, 64), "feat_dim": 32, "vit_width": 32, "vit_depth": 2, "vit_heads": 2,
                       "kan_hidden": 32, "heads": 2, "head_dim": 8}},
}
