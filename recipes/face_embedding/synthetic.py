"""Procedural synthetic faces: the offline default dataset of the recipe.

An identity is a fixed set of face-shape parameters (head shape, skin tone, hair line
and parting, eye spacing and size, brows, nose, mouth, ears, marks on the skin, glasses,
beard). An image is that identity under a random pose (in-plane rotation, yaw, scale,
shift), lighting (direction, strength, brightness, contrast), expression (smile, open
mouth, raised brows, blink), background and pixel noise. Everything is NumPy, vectorised
over images, and a pure function of (seed, identity, image index).
"""

from __future__ import annotations

import numpy as np

# (low, high) of each identity parameter, drawn uniformly once per identity.
IDENTITY_RANGES = {
    "face_width": (0.50, 0.74), "face_height": (0.70, 0.92), "chin": (0.75, 1.10),
    "skin": (0.45, 0.90), "hair": (0.02, 0.40), "hairline": (-0.72, -0.30),
    "parting": (-0.35, 0.35), "hair_curve": (-0.4, 0.5), "hair_volume": (0.0, 0.16),
    "eye_spacing": (0.26, 0.46), "eye_height": (-0.24, -0.02), "eye_width": (0.06, 0.13),
    "eye_dark": (0.0, 0.3), "brow_gap": (0.09, 0.20), "brow_thickness": (0.025, 0.07),
    "brow_tilt": (-0.5, 0.5), "nose_length": (0.14, 0.36), "nose_width": (0.04, 0.12),
    "mouth_height": (0.30, 0.52), "mouth_width": (0.14, 0.38), "lips": (0.025, 0.07),
    "ear_size": (0.0, 0.16),
}
NUM_MARKS = 3


def identities(num_identities: int, seed: int) -> dict[str, np.ndarray]:
    """Face-shape parameters of identities 0..num_identities-1: {name: [num_identities]}."""
    rng = np.random.default_rng([seed, 0xFACE])
    params = {name: rng.uniform(low, high, num_identities).astype(np.float32)
              for name, (low, high) in IDENTITY_RANGES.items()}
    params["glasses"] = (rng.random(num_identities) < 0.25).astype(np.float32)
    params["beard"] = (rng.random(num_identities) < 0.2).astype(np.float32)
    params["mark_u"] = rng.uniform(-0.5, 0.5, (num_identities, NUM_MARKS))
    params["mark_v"] = rng.uniform(-0.5, 0.6, (num_identities, NUM_MARKS))
    params["mark_size"] = rng.uniform(0.05, 0.12, (num_identities, NUM_MARKS))
    params["mark_strength"] = rng.uniform(-0.25, 0.25, (num_identities, NUM_MARKS))
    return {name: value.astype(np.float32) for name, value in params.items()}


def _soft(inside: np.ndarray, sharpness: float) -> np.ndarray:
    """Soft mask from a signed "inside" value (> 0 inside), anti-aliased at the edge."""
    return 0.5 + 0.5 * np.tanh(np.float32(0.5 * sharpness) * inside)


def _ellipse(u, v, cu, cv, ru, rv, sharpness):
    return _soft(1.0 - np.sqrt(((u - cu) / ru) ** 2 + ((v - cv) / rv) ** 2), sharpness)


def render(
    num_identities: int, images_per_identity: int, size: tuple[int, int] = (32, 32),
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Images [N, height, width] float32 in [0, 1] and labels [N] int32.

    `size` is (width, height); a face fills the height, a wider image shows more
    background beside it (the aspect ratio of the face never changes).
    N = num_identities * images_per_identity, grouped by identity in order.
    """
    width, height = size
    params = identities(num_identities, seed)
    labels = np.repeat(np.arange(num_identities, dtype=np.int32), images_per_identity)
    n = len(labels)
    rng = np.random.default_rng([seed, 0x1AE, images_per_identity])
    p = {name: value[labels] for name, value in params.items()}

    def ident(name):
        return p[name][:, None, None]

    def nuisance(low, high):
        return rng.uniform(low, high, n).astype(np.float32)[:, None, None]

    # Pose: the pixel grid in image coordinates [-1, 1] mapped to face coordinates.
    theta = nuisance(-0.15, 0.15)
    scale = nuisance(0.9, 1.1)
    shift_x, shift_y = nuisance(-0.1, 0.1), nuisance(-0.1, 0.1)
    yaw = nuisance(-0.25, 0.25)
    aspect = np.float32(width / height)
    rows = np.linspace(-1.0, 1.0, height, dtype=np.float32)
    columns = np.linspace(-aspect, aspect, width, dtype=np.float32)
    y, x = np.meshgrid(rows, columns, indexing="ij")
    x, y = x[None] - shift_x, y[None] - shift_y
    u = (np.cos(theta) * x + np.sin(theta) * y) / scale
    v = (-np.sin(theta) * x + np.cos(theta) * y) / scale
    sharp = height / 3.0
    inner = u - 0.22 * yaw  # features on the face turn with the head; the nose more
    nose_u = u - 0.38 * yaw

    # Background: a level and a gradient, unrelated to the identity.
    angle = nuisance(0, 2 * np.pi)
    image = nuisance(0.05, 0.95) + nuisance(0, 0.25) * (np.cos(angle) * x + np.sin(angle) * y)

    skin = ident("skin")
    fw, fh = ident("face_width"), ident("face_height")
    for side in (-1, 1):  # ears, behind the head
        ear = _ellipse(u, v, side * (fw - 0.02) - 0.1 * yaw, ident("eye_height") + 0.12,
                       ident("ear_size") + 1e-3, 1.6 * ident("ear_size") + 1e-3, sharp)
        image = image + (0.9 * skin - image) * ear
    lower = np.where(v > 0, fh * ident("chin"), fh)
    head = _soft(1.0 - np.sqrt((u / fw) ** 2 + (v / lower) ** 2), sharp)
    image = image + (skin - image) * head

    for k in range(NUM_MARKS):  # marks on the skin, fixed per identity
        mark = np.exp(-((inner - p["mark_u"][:, k, None, None]) ** 2
                        + (v - p["mark_v"][:, k, None, None]) ** 2)
                      / (2 * p["mark_size"][:, k, None, None] ** 2))
        image = image + p["mark_strength"][:, k, None, None] * mark * head

    # Hair: above a hair line that has a parting (tilt) and a curve, with some volume.
    volume = ident("hair_volume")
    hair_region = _soft(1.0 - np.sqrt((u / (fw + volume)) ** 2 + (v / (fh + volume)) ** 2), sharp)
    line = ident("hairline") + ident("parting") * u + ident("hair_curve") * u ** 2
    hair = hair_region * _soft(line - v, sharp)
    image = image + (ident("hair") - image) * hair

    # Expression, per image.
    smile, mouth_open = nuisance(-1, 1), nuisance(0, 1) ** 2
    brow_raise, eye_open = nuisance(0, 0.05), nuisance(0.5, 1.0)

    eye_v, spacing = ident("eye_height"), ident("eye_spacing") / 2
    eye_w = ident("eye_width")
    for side in (-1, 1):
        eye = _ellipse(inner, v, side * spacing, eye_v, eye_w, 0.55 * eye_w * eye_open, sharp)
        image = image + (ident("eye_dark") - image) * eye
        tilt = ident("brow_tilt") * side * (inner - side * spacing)
        brow = _ellipse(inner, v - tilt, side * spacing, eye_v - ident("brow_gap") - brow_raise,
                        1.4 * eye_w, ident("brow_thickness"), sharp)
        image = image + (0.6 * ident("hair") - image) * brow
        ring = np.sqrt(((inner - side * spacing) / (1.8 * eye_w)) ** 2
                       + ((v - eye_v) / (1.4 * eye_w)) ** 2)
        frame = _soft(0.18 - np.abs(ring - 1.0), sharp * 1.5) * ident("glasses")
        image = image + (0.05 - image) * frame
    bridge = _soft(0.02 - np.abs(v - eye_v), sharp) * _soft(
        spacing - 1.8 * eye_w - np.abs(inner), sharp) * ident("glasses")
    image = image + (0.05 - image) * bridge

    nose_len = ident("nose_length")
    nose = _ellipse(nose_u, v, 0.0, eye_v + 0.05 + nose_len / 2, ident("nose_width"),
                    nose_len / 2, sharp)
    image = image - 0.22 * skin * nose * (0.5 + 0.5 * np.sign(nose_u))

    mouth_v = ident("mouth_height") - smile * 0.9 * (inner / ident("mouth_width")) ** 2 * 0.06
    mouth = _ellipse(inner, v, 0.0, mouth_v, ident("mouth_width") / 2,
                     ident("lips") + 0.06 * mouth_open, sharp)
    image = image + (0.15 + 0.3 * (1 - mouth_open) * skin - image) * mouth
    beard = head * _soft(v - ident("mouth_height") + 0.12, sharp) * ident("beard")
    image = image + (0.3 * skin - image) * beard * (1 - mouth)

    # Lighting on the head, then global brightness and contrast, then sensor noise.
    light = nuisance(0, 2 * np.pi)
    shading = 1.0 + nuisance(0.0, 0.35) * (np.cos(light) * u + np.sin(light) * v)
    image = image * (1 + (shading - 1) * np.maximum(head, hair_region))
    image = (image - 0.5) * nuisance(0.8, 1.15) + 0.5 + nuisance(-0.1, 0.1)
    image = image + rng.standard_normal(image.shape, dtype=np.float32) * nuisance(0.01, 0.04)
    return np.clip(image, 0.0, 1.0).astype(np.float32), labels
