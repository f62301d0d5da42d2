"""Every setting of the face embedding recipe: its flags, defaults, help and checks, and
what --smoke changes. `python recipes/face_embedding/train.py --help` lists them."""

from __future__ import annotations

import dataclasses
import re
from typing import ClassVar

from common import config

from recipes.face_embedding import data, protocols

MINING = ("semi_hard", "batch_hard", "batch_all")
DISTANCES = ("squared_l2", "l2", "cosine")


@dataclasses.dataclass(frozen=True)
class Config(config.Shared):
    # 20 steps, on 64 synthetic people x 6 images (real data: its first 10 people).
    SMOKE: ClassVar[dict] = {"epochs": 2, "steps_per_epoch": 10}
    SMOKE_SYNTHETIC: ClassVar[tuple[int, int]] = (64, 6)  # (people, images each)
    SMOKE_IDENTITIES: ClassVar[int] = 10

    epochs: int = config.shared("epochs", 20)
    global_batch_size: int = config.shared("global_batch_size", 128)
    learning_rate: float = config.shared("learning_rate", 3e-3)
    dataset: str = config.shared("dataset", "synthetic")

    images_per_identity: int = config.setting(
        4, "K of the P x K batches; P = global_batch_size / K people per batch (at most the "
        "training people).", low=2, high=1024)
    steps_per_epoch: int = config.setting(50, "Training steps per epoch, whatever the data "
                                          "size.", low=1, high=10**6)
    # Unit-norm embeddings are at most 4 apart in squared L2 (2 in L2 and cosine): no
    # triplet can meet a larger margin, so every one would stay active for the whole run.
    margin: float = config.setting(0.2, "Triplet margin, in units of --distance.", low=0.0,
                                   high=4.0, low_open=True)
    mining: str = config.setting("semi_hard", "Online triplet mining inside each (global) "
                                 "batch.", choices=MINING)
    distance: str = config.setting("squared_l2", "Distance of the triplet loss.",
                                   choices=DISTANCES)
    embedding_dim: int = config.setting(128, "Embedding size.", low=2, high=4096)
    # model.build caps every stage at 256 filters.
    width: int = config.setting(16, "Filters in the first convolution stage.", low=1,
                                high=256)
    # 1 would drop everything.
    dropout: float = config.setting(0.2, "Dropout before the projection.", low=0.0, high=1.0,
                                    high_open=True)
    # The triplet loss is at most margin + 4: an L2 penalty weighted above 1 can only
    # swamp it.
    weight_decay: float = config.setting(1e-4, "L2 penalty on the kernels.", low=0.0,
                                         high=1.0)
    augment: bool = config.setting(True, "Augment training faces (crops, flips, brightness, "
                                   "contrast; augment.AUGMENT).")
    protocol: str = config.setting("unseen_identities", "unseen_identities, per_identity:K or "
                                   "kfold:N.")
    image_size: str = config.setting(
        "", "WIDTHxHEIGHT of the network input, e.g. 92x112; empty: the data's own size up "
        "to 128 pixels, else a longer side of 64. The aspect ratio is kept (centre crop), "
        "never squashed.")
    color: bool = config.setting(False, "Colour (3 channels) instead of grey.")
    min_images_per_identity: int | None = config.setting(
        None, f"Drop people with fewer images (folder, lfw; lfw default "
        f"{data.LFW_MIN_IMAGES}).", low=1)
    first_images_per_identity: int | None = config.setting(
        None, "Keep only each person's first N images: with --protocol=kfold:N on the "
        "training images of per_identity:N, the validation protocol used to choose a "
        "config.", low=2)
    init_from: str | None = config.setting(
        None, "RUN_DIR of a finished run of this recipe (e.g. on synthetic faces): start "
        "from its model.keras weights.")

    def check(self) -> None:
        if not re.fullmatch(protocols.PATTERN, self.protocol):
            raise ValueError(
                "--protocol must be unseen_identities, per_identity:K (K >= 1) or kfold:N "
                "(N >= 2); leave-one-out is scored for the classic baselines of kfold:N "
                "records")
        # Below 8 pixels the network has no stage to pool; above 1024 a face set of
        # thousands of images no longer fits in memory as float32 (and no face needs it).
        if self.image_size and not (re.fullmatch(r"\d+x\d+", self.image_size) and all(
                8 <= int(side) <= 1024 for side in self.image_size.split("x"))):
            raise ValueError("--image_size must be WIDTHxHEIGHT, each side in [8, 1024], "
                             "e.g. 92x112, or empty")
        # Empty is let through: a real-data preset sets it so, and data.load says what
        # to pass (exit 2, as for any data it cannot use).
        named = self.dataset.startswith("folder:") and len(self.dataset) > len("folder:")
        if self.dataset not in ("", "synthetic", "olivetti", "lfw") and not named:
            raise ValueError("--dataset must be synthetic, olivetti, lfw or folder:PATH")

    @property
    def input_size(self) -> tuple[int, int] | None:
        """(width, height) of --image_size, or None for the data's own."""
        if not self.image_size:
            return None
        width, height = self.image_size.split("x")
        return int(width), int(height)
