"""Text on pictures and plots, without torch (``tools/compare.py`` imports it): short unique names for
runs, title strips above panels, and point labels laid out so that they never overlap."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

LINE_H = 12  # pixels per text line of PIL's default font
SEP = 2  # white columns between the panels of a picture
LAYOUT_KEY = "medseg.layout"  # PNG text chunk of medseg.eval.viz pictures: where the panels are
_SEPS = re.compile(r"([._\-/ ]+)")


def short_names(names: Sequence[str]) -> list[str]:
    """Unique short names: the common leading words are cut, keeping the last one for context.

    ``["sam2.1_hiera_t", "sam2.1_hiera_s"]`` -> ``["hiera_t", "hiera_s"]``; names that do not share a
    prefix, or a single name, are kept whole. Distinct inputs always give distinct outputs.
    """
    names = [str(n) for n in names]
    if len(names) < 2 or len(set(names)) < len(names):
        return names
    parts = [_SEPS.split(n) for n in names]  # words at even, separators at odd positions
    k = 0
    while all(len(p) > k + 2 for p in parts) and len({tuple(p[: k + 2]) for p in parts}) == 1:
        k += 2  # one more shared word and the separator after it
    if k == 0:
        return names
    keep = max(0, k - 2)  # keep the last shared word
    out = ["".join(p[keep:]) for p in parts]
    return out if len(set(out)) == len(out) else names


def _wrap(draw: ImageDraw.ImageDraw, text: str, width: int) -> list[str]:
    """Break ``text`` at separators (else anywhere) into lines no wider than ``width`` pixels."""
    font = ImageFont.load_default()
    words = [w for w in _SEPS.split(text) if w]
    lines, cur = [], ""
    for w in words:
        if cur and draw.textlength(cur + w, font=font) > width:
            lines.append(cur)
            cur = ""
        while draw.textlength(cur + w, font=font) > width and len(w) > 1:  # a word wider than the panel
            n = max(1, len(w) - 1)
            while n > 1 and draw.textlength(cur + w[:n], font=font) > width:
                n -= 1
            lines.append(cur + w[:n])
            cur, w = "", w[n:]
        cur += w
    if cur:
        lines.append(cur)
    return [ln.strip() for ln in lines] or [""]


def title_strip(widths: Sequence[int], titles: Sequence[str], sep: int) -> np.ndarray:
    """A white strip with each title centred above its panel (wrapped, never cut), uint8 [h, W, 3]."""
    total = sum(widths) + sep * (len(widths) - 1)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    wrapped = [_wrap(probe, str(t), max(8, w - 4)) for w, t in zip(widths, titles)]
    height = LINE_H * max(len(w) for w in wrapped) + 4
    strip = Image.new("RGB", (total, height), (255, 255, 255))
    draw = ImageDraw.Draw(strip)
    x0 = 0
    for w, lines in zip(widths, wrapped):
        for i, line in enumerate(lines):
            x = x0 + max(0.0, (w - draw.textlength(line)) / 2)
            draw.text((x, 2 + i * LINE_H), line, fill=(0, 0, 0))
        x0 += w + sep
    return np.asarray(strip)


def place_labels(ax, xs: Sequence[float], ys: Sequence[float], texts: Sequence[str], fontsize: int = 7):
    """Annotate points so that no two labels overlap each other or a point.

    Each label tries offsets on rings of growing radius around its point and takes the first place whose
    box is free (boxes measured with the figure's renderer); a label moved far from its point gets a
    leader line. Returns the annotation artists.
    """
    fig = ax.figure
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    pts = ax.transData.transform(np.column_stack([xs, ys]))
    taken = [np.array([x - 4, y - 4, x + 4, y + 4]) for x, y in pts if np.isfinite([x, y]).all()]
    dirs = [(1, 1), (1, -1), (-1, 1), (-1, -1), (1, 0), (-1, 0), (0, 1), (0, -1)]
    artists = []
    for (px, py), text in zip(pts, texts):
        if not np.isfinite([px, py]).all():
            continue
        ann = ax.annotate(str(text), (0, 0), xycoords="data", fontsize=fontsize)
        ann.xy = tuple(ax.transData.inverted().transform((px, py)))
        box = ann.get_window_extent(renderer)
        w, h = box.width, box.height
        for r in [6 + 8 * i for i in range(40)]:
            found = None
            for dx, dy in dirs:
                cx, cy = px + dx * r, py + dy * r
                x0 = cx if dx >= 0 else cx - w
                y0 = cy if dy >= 0 else cy - h
                if dx == 0:
                    x0 = cx - w / 2
                if dy == 0:
                    y0 = cy - h / 2
                cand = np.array([x0, y0, x0 + w, y0 + h])
                if not any(_overlap(cand, t) for t in taken):
                    found = cand
                    break
            if found is not None:
                break
        found = found if found is not None else cand  # crowded beyond 40 rings: the last place tried
        taken.append(found)
        ann.remove()
        pos = ax.transData.inverted().transform((found[0], found[1]))
        far = r > 14
        ann = ax.annotate(
            str(text),
            xy=ann.xy,
            xytext=tuple(pos),
            textcoords="data",
            fontsize=fontsize,
            ha="left",
            va="bottom",
            annotation_clip=False,
            arrowprops={"arrowstyle": "-", "lw": 0.5, "color": "0.5"} if far else None,
        )
        artists.append(ann)
    return artists


def _overlap(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3])


# ---------------------------------------------------------------------------------------------- grids
def read_panels(path: Path) -> list[np.ndarray]:
    """The panels of a ``medseg.eval.viz.panel_grid`` PNG: cut where its layout chunk says (titled pictures),
    else by :func:`split_panels` (pictures of older runs)."""
    with Image.open(path) as im:
        layout = json.loads(im.text.get(LAYOUT_KEY, "null") or "null") if hasattr(im, "text") else None
        grid = np.asarray(im.convert("RGB"))
    if not layout:
        return split_panels(grid)
    top, h, w, sep = layout["top"], layout["panel_h"], layout["panel_w"], layout["sep"]
    return [grid[top : top + h, j * (w + sep) : j * (w + sep) + w] for j in range(layout["n"])]


def split_panels(grid: np.ndarray) -> list[np.ndarray]:
    """Cut an untitled ``medseg.eval.viz.panel_grid`` PNG (3 or 4 panels, 2-px white separators) into its panels."""
    h, total = grid.shape[:2]
    candidates = []
    for k in (3, 4):
        w, rem = divmod(total - SEP * (k - 1), k)
        if rem or w <= 0:
            continue
        seps_white = all((grid[:, j * (w + SEP) - SEP : j * (w + SEP)] == 255).all() for j in range(1, k))
        candidates.append((not seps_white, w != h, k, w))  # prefer white separators, then square panels
    if not candidates:
        raise ValueError(f"cannot split a {total}-px wide grid into 3 or 4 panels")
    _, _, k, w = min(candidates)
    return [grid[:, j * (w + SEP) : j * (w + SEP) + w] for j in range(k)]


def make_grids(out_dir: Path, vis_dirs: list[Path], names: list[str]) -> list[str]:
    """``grids/<case>.png`` (image | reference | each run's prediction) for the common cases, each
    column titled (``names`` should be unique and short: see :func:`medseg.eval.figures.short_names`; a
    title too wide for its column is wrapped, never cut).

    Returns the written paths relative to ``out_dir``.
    """
    common = set.intersection(*({p.stem for p in d.glob("*.png")} for d in vis_dirs))
    written = []
    for case in sorted(common):
        first = read_panels(vis_dirs[0] / f"{case}.png")
        h, w = first[0].shape[:2]
        panels = [first[0], first[1]]
        for d in vis_dirs:
            pred = read_panels(d / f"{case}.png")[2]
            if pred.shape[:2] != (h, w):
                pred = np.asarray(Image.fromarray(pred).resize((w, h), Image.NEAREST))
            panels.append(pred)
        sep = np.full((h, SEP, 3), 255, np.uint8)
        row = panels[0]
        for p in panels[1:]:
            row = np.concatenate([row, sep, p], axis=1)
        head = title_strip([w] * len(panels), ["image", "reference", *names], SEP)
        out = np.concatenate([head, row], axis=0)
        rel = f"grids/{case}.png"
        (out_dir / "grids").mkdir(parents=True, exist_ok=True)
        Image.fromarray(out).save(out_dir / rel)
        written.append(rel)
    return written
