"""The inputs every export check encodes: texts in several scripts and lengths, and images of
several sizes and aspect ratios (so the resize and crop are exercised too)."""

from __future__ import annotations


def probe_texts() -> list[str]:
    """Texts in several scripts and lengths that every check encodes."""
    return [
        "a photo of a cat",
        "Ein roter Kreis links von einem blauen Quadrat.",
        "un petit carré vert",
        "一只狗在草地上",
        "красный треугольник",
        "x",
        "صورة قطة صغيرة",
        "mbwa mdogo mweusi anakimbia kwenye nyasi ndefu za kijani",
    ]


def probe_images(size: int, n: int = 4, seed: int = 0) -> list:
    """``n`` random RGB PIL images of several sizes and aspect ratios around ``size``."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    shapes = [(size, size), (size + 7, size * 2), (size * 2, size + 3), (size // 2 + 5, size)]
    return [
        Image.fromarray(rng.integers(0, 256, (*shapes[i % 4], 3), dtype=np.uint8)) for i in range(n)
    ]
