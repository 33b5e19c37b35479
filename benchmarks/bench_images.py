"""Phone-photo decoding: a 1080x1440 JPEG to a 224 encoder input, with and without DCT scaling.

    python benchmarks/bench_images.py [--runs 200]

``decode_image(data, min_size=224)`` lets libjpeg decode at 1/2, 1/4 or 1/8 scale (PIL's
``draft``) as long as both sides stay >= 224; the baseline decodes at full size. Both then run
the same CLIP preprocessing (bicubic resize, centre crop, normalise). Interleaved A B A B on
the same bytes; medians. Writes benchmarks/results/images.json.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from stygig.images import PreprocessSpec, decode_image, preprocess

RESULTS = Path(__file__).resolve().parent / "results" / "images.json"
CLIP = PreprocessSpec(
    size=224,
    interpolation="bicubic",
    mean=(0.48145466, 0.4578275, 0.40821073),
    std=(0.26862954, 0.26130258, 0.27577711),
)


def _phone_photo() -> bytes:
    """A 1080x1440 photo-like JPEG (smooth gradients plus texture, quality 90)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:1440, 0:1080]
    base = np.stack([xx / 1080 * 200, yy / 1440 * 180, (xx + yy) / 2520 * 220], axis=-1)
    noise = rng.normal(0, 12, (1440, 1080, 3))
    arr = np.clip(base + noise, 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()
    data = _phone_photo()
    times: dict[str, list[float]] = {"full_decode": [], "dct_scaled": []}
    for _ in range(args.runs):
        for key, min_size in (("full_decode", None), ("dct_scaled", CLIP.size)):
            t0 = time.perf_counter()
            preprocess(decode_image(data, min_size=min_size), CLIP)
            times[key].append((time.perf_counter() - t0) * 1e3)
    med = {k: float(np.median(v)) for k, v in times.items()}
    result = {
        "command": "python benchmarks/bench_images.py " + " ".join(sys.argv[1:]),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "input": "1080x1440 JPEG q90 -> 224 CLIP input",
        "median_ms": {k: round(v, 2) for k, v in med.items()},
        "p99_ms": {k: round(float(np.percentile(v, 99)), 2) for k, v in times.items()},
        "speedup": round(med["full_decode"] / med["dct_scaled"], 2),
    }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"full decode {med['full_decode']:.1f} ms, DCT-scaled {med['dct_scaled']:.1f} ms "
        f"(x{result['speedup']})"
    )


if __name__ == "__main__":
    main()
