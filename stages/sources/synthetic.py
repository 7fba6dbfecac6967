"""Generated sample images: classes differ by shape, never by colour alone.

The embedded default trains on these, so they must be learnable by every study's
model (in colour and in grayscale) within a couple of epochs, yet not trivially:
position, size, colours, rotation and noise vary per image.
"""

from __future__ import annotations

import cv2
import numpy as np

SHAPES = ("disc", "square", "triangle", "hbars", "vbars", "ring", "plus", "cross", "checker", "dots")


def _draw(canvas: np.ndarray, shape: str, cx: int, cy: int, r: int, color: tuple, rng: np.random.Generator) -> None:
    t = max(1, r // 4)
    if shape == "disc":
        cv2.circle(canvas, (cx, cy), r, color, -1, cv2.LINE_AA)
    elif shape == "square":
        cv2.rectangle(canvas, (cx - r, cy - r), (cx + r, cy + r), color, -1)
    elif shape == "triangle":
        pts = np.array([[cx, cy - r], [cx - r, cy + r], [cx + r, cy + r]], np.int32)
        cv2.fillPoly(canvas, [pts], color, cv2.LINE_AA)
    elif shape == "hbars":
        for y in range(cy - r, cy + r, 2 * t + 1):
            cv2.rectangle(canvas, (cx - r, y), (cx + r, y + t - 1), color, -1)
    elif shape == "vbars":
        for x in range(cx - r, cx + r, 2 * t + 1):
            cv2.rectangle(canvas, (x, cy - r), (x + t - 1, cy + r), color, -1)
    elif shape == "ring":
        cv2.circle(canvas, (cx, cy), r, color, t + 1, cv2.LINE_AA)
    elif shape == "plus":
        cv2.rectangle(canvas, (cx - r, cy - t), (cx + r, cy + t), color, -1)
        cv2.rectangle(canvas, (cx - t, cy - r), (cx + t, cy + r), color, -1)
    elif shape == "cross":
        cv2.line(canvas, (cx - r, cy - r), (cx + r, cy + r), color, t + 1, cv2.LINE_AA)
        cv2.line(canvas, (cx - r, cy + r), (cx + r, cy - r), color, t + 1, cv2.LINE_AA)
    elif shape == "checker":
        step = max(2, r // 2)
        for i, y in enumerate(range(cy - r, cy + r, step)):
            for j, x in enumerate(range(cx - r, cx + r, step)):
                if (i + j) % 2 == 0:
                    cv2.rectangle(canvas, (x, y), (x + step - 1, y + step - 1), color, -1)
    elif shape == "dots":
        for _ in range(6):
            dx, dy = rng.integers(-r, r + 1, size=2)
            cv2.circle(canvas, (cx + int(dx), cy + int(dy)), max(1, t), color, -1)
    else:
        raise ValueError(f"unknown shape {shape!r}")


def shape_image(label: int, size: int, channels: int, rng: np.random.Generator) -> np.ndarray:
    """One size x size image of class ``label`` (uint8, ``channels`` = 1 or 3)."""
    # a dark background and a bright shape: colours vary, but the shape always stands out
    bg = rng.integers(0, 96, size=3)
    fg = rng.integers(160, 256, size=3)
    if channels == 1:
        bg, fg = bg[:1].repeat(3), fg[:1].repeat(3)
    canvas = np.empty((size, size, 3), np.uint8)
    canvas[:] = bg
    r = int(rng.integers(size // 5, size // 3 + 1))
    cx, cy = (int(v) for v in rng.integers(r, size - r, size=2))
    _draw(canvas, SHAPES[label % len(SHAPES)], cx, cy, r, tuple(int(c) for c in fg), rng)
    noise = rng.normal(0, 8, canvas.shape)
    img = np.clip(canvas + noise, 0, 255).astype(np.uint8)
    return img[..., :1] if channels == 1 else img


def shape_dataset(
    n_per_class: int, num_classes: int, size: int, channels: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """A shuffled balanced set: images (N, size, size, channels) uint8 and labels int64."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(num_classes), n_per_class)
    rng.shuffle(labels)
    images = np.stack([shape_image(int(y), size, channels, rng) for y in labels])
    return images, labels.astype(np.int64)


# --- pets-unet (seeds/000 part 1): a "pet" on a textured background, with its trimap -----------


def pet_scene(rng: np.random.Generator, height: int, width: int, dog: bool) -> tuple[np.ndarray, np.ndarray]:
    """One RGB image (uint8 H x W x 3) and its Oxford-style trimap (1 pet, 2 background, 3 border).

    The pet is a bright, textured body ellipse plus a head disc (with ears: pointed for cats,
    floppy for dogs) on a darker, noisy background gradient; the border class is a band along
    the outline, as in the real trimaps. Position, size, colours and texture vary per image.
    """
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    c0, c1 = rng.integers(0, 110, size=3), rng.integers(0, 110, size=3)
    t = (xx / width * rng.uniform(0.3, 1) + yy / height * rng.uniform(0.3, 1))[..., None] / 2
    canvas = c0 * (1 - t) + c1 * t + rng.normal(0, 14, (height, width, 1))
    mask = np.zeros((height, width), np.uint8)
    s = min(height, width)
    cx, cy = int(rng.integers(s // 3, width - s // 3 + 1)), int(rng.integers(s // 3, height - s // 3 + 1))
    ax, ay = int(rng.integers(s // 4, s * 2 // 5)), int(rng.integers(s // 6, s * 2 // 7))
    cv2.ellipse(mask, (cx, cy), (ax, ay), float(rng.uniform(-30, 30)), 0, 360, 1, -1)
    hr = max(4, int(ax * rng.uniform(0.45, 0.7)))
    hx = int(np.clip(cx + rng.choice([-1, 1]) * ax * 0.8, hr, width - hr))
    hy = int(np.clip(cy - ay * 0.9, hr, height - hr))
    cv2.circle(mask, (hx, hy), hr, 1, -1)
    if dog:  # floppy ears hang beside the head
        for side in (-1, 1):
            cv2.ellipse(mask, (hx + side * hr, hy + hr // 3), (hr // 3 + 1, hr // 1 + 1), 0, 0, 360, 1, -1)
    else:  # pointed ears on top
        for side in (-1, 1):
            pts = np.array([[hx + side * hr // 4, hy - hr // 2], [hx + side * hr, hy - hr // 3],
                            [hx + side * (hr * 3 // 4), hy - hr - hr // 2]], np.int32)  # fmt: skip
            cv2.fillPoly(mask, [pts], 1)
    fur = rng.integers(150, 256, size=3).astype(np.float32)
    stripes = 18 * np.sin(xx * rng.uniform(0.2, 0.6) + yy * rng.uniform(0.2, 0.6))[..., None]
    pet = fur + stripes + rng.normal(0, 10, (height, width, 1))
    inside = mask.astype(bool)
    canvas[inside] = pet[inside]
    img = np.clip(canvas, 0, 255).astype(np.uint8)
    k = max(3, (s // 25) | 1)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
    outline = cv2.dilate(mask, kernel).astype(bool) & ~cv2.erode(mask, kernel).astype(bool)
    trimap = np.full((height, width), 2, np.uint8)
    trimap[inside] = 1
    trimap[outline] = 3
    return img, trimap
