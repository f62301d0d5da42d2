"""Every setting of the depth_segmentation recipe: its flags, defaults, help and checks,
and what --smoke changes. `python recipes/depth_segmentation/train.py --help` lists them."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from common import config

from recipes.depth_segmentation import model

DATA_KINDS = ("nyuv2", "npz")  # the sources read from a file: KIND:PATH


@dataclasses.dataclass(frozen=True)
class Config(config.Shared):
    SMOKE: ClassVar[dict] = {"epochs": 3, "global_batch_size": 16, "train_images": 96,
                             "test_images": 32, "image_size": 32, "num_seeds": 1}
    # Real data with --smoke: the first images of each split, kept after the whole file
    # was checked.
    SMOKE_IMAGES: ClassVar[dict] = {"train": 128, "test": 32}

    # 12 epochs: at 6 no network had converged, and the shared encoder, fitting two tasks,
    # was further from it than either single-task one.
    epochs: int = config.shared("epochs", 12)
    global_batch_size: int = config.shared("global_batch_size", 32)
    learning_rate: float = config.shared("learning_rate", 2e-3)
    dataset: str = config.shared("dataset", "synthetic")

    # Upper bounds only a typo reaches: a loss weight of 1e3 already drowns the other task;
    # at T = 1e3 DWA's weights are equal (static); past 8x shared filters, 256 base filters,
    # 7 levels (sides in multiples of 256 pixels), 512-pixel or 50 000 rendered rooms the
    # arrays or the render outgrow any machine this recipe is meant for.
    weighting: str = config.setting(
        "static", "How the two tasks combine.",
        choices=model.LOSS_WEIGHTINGS + model.GRADIENT_WEIGHTINGS)
    seg_weight: float = config.setting(1.0, "static: weight of the segmentation loss.",
                                       low=0.0, high=1e3)
    # 0.5: the L1 depth loss in metres reaches the shared encoder with 1.7-3x the gradient
    # norm of Dice + cross-entropy; halving it was best for segmentation on validation.
    depth_weight: float = config.setting(0.5, "static: weight of the depth loss.", low=0.0,
                                         high=1e3)
    dwa_temperature: float = config.setting(2.0, "dwa: temperature T.", low=1e-3, high=1e3)
    depth_loss: str = config.setting("l1", "Depth loss (invalid masked).",
                                     choices=tuple(model.DEPTH_LOSSES))
    cross_entropy_weight: float = config.setting(
        1.0, "Pixel cross-entropy added to the Dice loss (0: Dice alone).", low=0.0, high=1e3)
    exchange: bool = config.setting(False, "Multi-task heads read both decoders' features.")
    shared_levels: int | None = config.setting(
        None, "Multi-task: encoder levels the tasks share (default: all and the bottleneck); "
        "deeper ones are per task.", low=0, high=7)
    attention: bool = config.setting(True, "Multi-task: each decoder reads the shared "
                                     "features through its own soft mask (MTAN-style task "
                                     "attention).")
    shared_width: float = config.setting(1.0, "Multi-task: filters of the shared layers, as "
                                         "a multiple of the single-task network's.",
                                         low=0.25, high=8.0)
    # 1 seed by default keeps the bare run within 5 minutes on 2 cores; the published
    # configs run 3 (configs/*.cfg): one seed's ΔM moved by 1.4 points between two
    # machines (issue 22), as much as the effects it was to show. Past 20 seeds a run is
    # hours on the CPU it targets.
    num_seeds: int = config.setting(1, "Train every network from seeds seed..seed+n-1 on "
                                    "the same rooms; metrics, gains and ΔM are the means "
                                    "over the seeds (intervals over seeds and test images, "
                                    "tolerances from the seeds' spread).", low=1, high=20)
    baselines: bool = config.setting(True, "Also train the single-task networks (needed for "
                                     "ΔM).")
    base_filters: int = config.setting(12, "U-Net width: filters of the first level.", low=1,
                                       high=256)
    levels: int = config.setting(3, "U-Net depth: poolings in the encoder.", low=1, high=7)
    train_images: int = config.setting(768, "synthetic: rooms for training.", low=8,
                                       high=50_000)
    test_images: int = config.setting(256, "synthetic: rooms for testing.", low=2,
                                      high=50_000)
    image_size: int = config.setting(64, "synthetic: image height and width.", low=16,
                                     high=512)
    resolution: str = config.setting("288x384", "nyuv2/npz: HxW the images are resized to "
                                     "(288x384: LibMTL's NYUv2 protocol).")
    num_classes: int | None = config.setting(None, "Classes (default: the dataset's own).",
                                             low=2, high=1000)
    test_fraction: float = config.setting(0.45, "nyuv2 without splits.mat / npz: share of "
                                          "images held out for testing.", low=0.01,
                                          high=0.99)
    evaluate_on: str = config.setting("test", "Score on the test split, or on the last "
                                      "--validation_fraction of the training images.",
                                      choices=("test", "validation"))
    validation_fraction: float = config.setting(0.25, "Share of training images held out by "
                                                "--evaluate_on=validation.", low=0.05,
                                                high=0.5)

    def check(self) -> None:
        if self.shared_levels is not None and self.shared_levels > self.levels:
            raise ValueError("--shared_levels must be at most --levels")
        # Static weights of 0 and 0 train nothing: loss 0 every epoch, a record of an
        # untrained network. The other weightings set their own weights and ignore these.
        if self.weighting == "static" and self.seg_weight == 0 and self.depth_weight == 0:
            raise ValueError("--seg_weight and --depth_weight are both 0 with "
                             "--weighting=static: at least one task weight must be > 0")
        kind, _, path = self.dataset.partition(":")
        if self.dataset != "synthetic" and (kind not in DATA_KINDS or not path):
            raise ValueError("--dataset must be synthetic, nyuv2:PATH or npz:PATH")
        sides = self.resolution.split("x")
        if len(sides) != 2 or not all(side.isdigit() and int(side) > 0 for side in sides):
            raise ValueError("--resolution must be HxW, e.g. 288x384")

    @property
    def height_width(self) -> tuple[int, int]:
        """--resolution as (height, width)."""
        height, width = (int(side) for side in self.resolution.split("x"))
        return height, width
