"""Phone-photo decoding: a 1080x1440 JPEG to a 224 encoder input, with and without DCT scaling,
untagged, tagged sRGB and tagged Display P3 (converted to sRGB by the decode path).

    python benchmarks/bench_images.py [--runs 200]

``decode_image(data, min_size=224)`` lets libjpeg decode at 1/2, 1/4 or 1/8 scale (PIL's
``draft``) as long as both sides stay >= 224; the baseline decodes at full size. Both then run
the same CLIP preprocessing (bicubic resize, centre crop, normalise). The same pixels are encoded
three times: without a profile, with lcms's sRGB profile (recognised, not converted) and with a
Display P3 profile (converted with LittleCMS after any reduction). Interleaved on the same bytes;
medians. Writes benchmarks/results/images.json.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageCms

from stygig.images import PreprocessSpec, decode_image, preprocess

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from tests.unit.test_icc import display_p3_profile  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "images.json"
CLIP = PreprocessSpec(
    size=224,
    interpolation="bicubic",
    mean=(0.48145466, 0.4578275, 0.40821073),
    std=(0.26862954, 0.26130258, 0.27577711),
)


def _phone_photo(icc_profile: bytes | None = None) -> bytes:
    """A 1080x1440 photo-like JPEG (smooth gradients plus texture, quality 90)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:1440, 0:1080]
    base = np.stack([xx / 1080 * 200, yy / 1440 * 180, (xx + yy) / 2520 * 220], axis=-1)
    noise = rng.normal(0, 12, (1440, 1080, 3))
    arr = np.clip(base + noise, 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    extra = {"icc_profile": icc_profile} if icc_profile else {}
    Image.fromarray(arr).save(buf, "JPEG", quality=90, **extra)
    return buf.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    photos = {
        "untagged": _phone_photo(),
        "srgb": _phone_photo(srgb),
        "p3": _phone_photo(display_p3_profile()),
    }
    steps = {"full_decode": None, "dct_scaled": CLIP.size}
    times: dict[str, list[float]] = {
        f"{step}{'' if tag == 'untagged' else '_' + tag}": [] for step in steps for tag in photos
    }
    for data in photos.values():  # warm-up: each profile is parsed once, then cached
        decode_image(data)
    for _ in range(args.runs):
        for step, min_size in steps.items():
            for tag, data in photos.items():
                t0 = time.perf_counter()
                preprocess(decode_image(data, min_size=min_size), CLIP)
                key = f"{step}{'' if tag == 'untagged' else '_' + tag}"
                times[key].append((time.perf_counter() - t0) * 1e3)
    med = {k: float(np.median(v)) for k, v in times.items()}
    added = {
        f"{step}_{tag}": round(med[f"{step}_{tag}"] - med[step], 2)
        for step in steps
        for tag in ("srgb", "p3")
    }
    result = {
        "command": "python benchmarks/bench_images.py " + " ".join(sys.argv[1:]),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "input": "1080x1440 JPEG q90 -> 224 CLIP input (untagged, sRGB-tagged, P3-tagged)",
        "median_ms": {k: round(v, 2) for k, v in med.items()},
        "p99_ms": {k: round(float(np.percentile(v, 99)), 2) for k, v in times.items()},
        "added_by_profile_ms": added,
        "speedup": round(med["full_decode"] / med["dct_scaled"], 2),
    }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"full decode {med['full_decode']:.1f} ms, DCT-scaled {med['dct_scaled']:.1f} ms "
        f"(x{result['speedup']}); added by a profile: "
        + ", ".join(f"{k} {v:+.2f} ms" for k, v in added.items())
    )


if __name__ == "__main__":
    main()
