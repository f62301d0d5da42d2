"""The default data set: procedurally rendered rooms with exact depth and class labels,
arrays in the layout `data.py` describes (`rooms(...)` is what the recipe calls).

A pinhole camera pitched down, rays with z = 1 in the camera frame, so a hit at ray
parameter t lies at camera depth z = t (as a Kinect measures it). Every ray meets every
surface; the nearest hit wins (occlusion), and gives the label and the depth.
"""

from __future__ import annotations

import numpy as np

SCENE_CLASSES = ("floor", "ceiling", "wall", "box", "sphere", "cylinder")


def random_scene(rng: np.random.Generator, max_objects: int = 6) -> dict:
    """A room (floor y=0, ceiling, back and side walls) with 2..max_objects objects."""
    width, depth, height = rng.uniform(4, 7), rng.uniform(5, 9), rng.uniform(2.4, 3.2)
    scene = {
        "width": width, "depth": depth, "height": height,
        "camera": np.array([rng.uniform(-0.3, 0.3) * width, rng.uniform(1.0, 1.7), 0.0]),
        "pitch": rng.uniform(-0.45, -0.1),  # radians, looking down
        "light": np.array([rng.uniform(-1, 1), height - 0.2, rng.uniform(1, depth - 1)]),
        "albedo": {name: rng.uniform(0.35, 0.9, 3) for name in ("floor", "ceiling", "wall")},
        "objects": [],
    }
    for _ in range(rng.integers(2, max_objects + 1)):
        kind = SCENE_CLASSES[rng.integers(3, 6)]
        size = rng.uniform(0.3, 0.8)
        x = rng.uniform(-0.4, 0.4) * width
        z = rng.uniform(1.5, depth - 0.8)
        scene["objects"].append({
            "kind": kind, "size": size, "centre": np.array([x, 0.0, z]),
            "extent": rng.uniform(0.5, 1.6, 3) * size,  # box half-extents / cylinder height
            "yaw": rng.uniform(0, np.pi),
            # colour independent of the class: the network has to use shape and shading
            "albedo": rng.uniform(0.1, 1.0, 3),
        })
    return scene


def _rays(size: int) -> np.ndarray:
    """Ray directions [size*size, 3] with d_z = 1; focal length 0.9*size (about 58° FOV)."""
    focal, centre = 0.9 * size, (size - 1) / 2
    v, u = np.mgrid[0:size, 0:size].astype(np.float64)
    return np.stack(
        [(u - centre) / focal, -(v - centre) / focal, np.ones_like(u)], -1
    ).reshape(-1, 3)


def _plane(origin, d, axis, value, normal):
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (value - origin[axis]) / d[:, axis]
    t = np.where(t > 1e-6, t, np.inf)
    return t, np.broadcast_to(np.asarray(normal, float), d.shape)


def _sphere(origin, d, obj):
    radius = obj["size"]
    centre = obj["centre"] + [0, radius, 0]  # resting on the floor
    oc = origin - centre
    a, b, c = (d * d).sum(1), 2 * d @ oc, oc @ oc - radius**2
    disc = b * b - 4 * a * c
    t = (-b - np.sqrt(np.maximum(disc, 0))) / (2 * a)
    t = np.where((disc >= 0) & (t > 1e-6), t, np.inf)
    normal = (origin + np.where(np.isfinite(t), t, 0)[:, None] * d - centre) / radius
    return t, normal


def _box(origin, d, obj):
    half = obj["extent"]
    c, s = np.cos(obj["yaw"]), np.sin(obj["yaw"])
    rotation = np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])  # box frame -> world
    centre = obj["centre"] + [0, half[1], 0]
    o_local, d_local = rotation.T @ (origin - centre), d @ rotation
    with np.errstate(divide="ignore", invalid="ignore"):
        t1, t2 = (-half - o_local) / d_local, (half - o_local) / d_local
    near, far = np.minimum(t1, t2), np.maximum(t1, t2)
    near = np.where(np.isnan(near), -np.inf, near)
    t_near, t_far = near.max(1), np.nan_to_num(far, nan=np.inf).min(1)
    t = np.where((t_near <= t_far) & (t_near > 1e-6), t_near, np.inf)
    axis = near.argmax(1)
    normal_local = np.zeros_like(d)
    normal_local[np.arange(len(d)), axis] = -np.sign(d_local[np.arange(len(d)), axis])
    return t, normal_local @ rotation.T


def _cylinder(origin, d, obj):
    radius, height = obj["size"], obj["extent"][1] * 2
    centre = obj["centre"]
    oc, dd = (origin - centre)[[0, 2]], d[:, [0, 2]]
    a, b, c = (dd * dd).sum(1), 2 * dd @ oc, oc @ oc - radius**2
    disc = b * b - 4 * a * c
    t_side = (-b - np.sqrt(np.maximum(disc, 0))) / (2 * a)
    y_side = origin[1] + t_side * d[:, 1]
    t_side = np.where((disc >= 0) & (t_side > 1e-6) & (y_side >= 0) & (y_side <= height),
                      t_side, np.inf)
    with np.errstate(divide="ignore", invalid="ignore"):
        t_cap = (height - origin[1]) / d[:, 1]
    cap_point = origin + np.nan_to_num(t_cap, posinf=0, neginf=0)[:, None] * d
    inside = ((cap_point[:, [0, 2]] - centre[[0, 2]]) ** 2).sum(1) <= radius**2
    t_cap = np.where(inside & (t_cap > 1e-6), t_cap, np.inf)
    side_point = origin + np.where(np.isfinite(t_side), t_side, 0)[:, None] * d
    side_normal = (side_point - centre) * [1, 0, 1] / radius
    normal = np.where((t_cap < t_side)[:, None], [0.0, 1.0, 0.0], side_normal)
    return np.minimum(t_side, t_cap), normal


_INTERSECT = {"box": _box, "sphere": _sphere, "cylinder": _cylinder}


def render(scene: dict, size: int = 64) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ray-casts `scene`: RGB [size, size, 3] float in [0, 1], exact depth and labels.

    Every surface is intersected with every ray; the nearest hit wins (occlusion), its
    class is the label and its t the depth. Shading: ambient + Lambert from a point light.
    """
    c, s = np.cos(scene["pitch"]), np.sin(scene["pitch"])
    d = _rays(size) @ np.array([[1, 0, 0], [0, c, s], [0, -s, c]]).T  # camera -> world
    origin = scene["camera"]
    half_width = scene["width"] / 2
    surfaces = [  # (t, normal, class id, albedo)
        (*_plane(origin, d, 1, 0.0, [0, 1, 0]), 0, scene["albedo"]["floor"]),
        (*_plane(origin, d, 1, scene["height"], [0, -1, 0]), 1, scene["albedo"]["ceiling"]),
        (*_plane(origin, d, 2, scene["depth"], [0, 0, -1]), 2, scene["albedo"]["wall"]),
        (*_plane(origin, d, 0, -half_width, [1, 0, 0]), 2, scene["albedo"]["wall"]),
        (*_plane(origin, d, 0, half_width, [-1, 0, 0]), 2, scene["albedo"]["wall"]),
    ]
    for obj in scene["objects"]:
        surfaces.append((*_INTERSECT[obj["kind"]](origin, d, obj),
                         SCENE_CLASSES.index(obj["kind"]), obj["albedo"]))
    t_all = np.stack([surface[0] for surface in surfaces])  # [S, P]
    nearest = t_all.argmin(0)
    pixels = np.arange(len(d))
    depth = t_all[nearest, pixels]
    normal = np.stack([surface[1] for surface in surfaces])[nearest, pixels]
    labels = np.array([surface[2] for surface in surfaces])[nearest]
    albedo = np.stack([surface[3] for surface in surfaces])[nearest]
    point = origin + depth[:, None] * d
    to_light = scene["light"] - point
    to_light /= np.linalg.norm(to_light, axis=1, keepdims=True)
    lambert = np.clip((normal * to_light).sum(1), 0, 1)
    rgb = albedo * (0.35 + 0.65 * lambert)[:, None]
    return (rgb.reshape(size, size, 3), depth.reshape(size, size).astype(np.float32),
            labels.reshape(size, size).astype(np.int32))


def rooms(num_images: int, size: int = 64, seed: int = 0, noise: float = 0.03,
              hole_probability: float = 0.5) -> dict:
    """`num_images` random rooms: fixed by `seed`. Adds RGB noise and, like a depth
    sensor, an elliptical hole of invalid depth (0) to about half of the depth maps."""
    rng = np.random.default_rng(seed)
    images = np.empty((num_images, size, size, 3), np.uint8)
    depths = np.empty((num_images, size, size), np.float32)
    labels = np.empty((num_images, size, size), np.int32)
    v, u = np.mgrid[0:size, 0:size]
    for i in range(num_images):
        rgb, depths[i], labels[i] = render(random_scene(rng), size)
        rgb = rgb + rng.normal(0, noise, rgb.shape)
        images[i] = np.clip(rgb * 255 + 0.5, 0, 255).astype(np.uint8)
        if rng.random() < hole_probability:
            cv, cu, rv, ru = *rng.uniform(0, size, 2), *rng.uniform(2, size / 8, 2)
            depths[i][((v - cv) / rv) ** 2 + ((u - cu) / ru) ** 2 <= 1] = 0.0
    return {"images": images, "depths": depths, "labels": labels}
