"""``python -m tools.synthetic``: regenerate the bundled samples or preview rows."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from tools.synthetic import _task_name, generate_rows, write_bundled
from tools.synthetic.drawing import BUNDLED_SEED, SIZE
from tools.synthetic.scenes import GENERATORS


def _main(argv=None) -> int:
    import argparse
    import time

    ap = argparse.ArgumentParser(prog="python -m tools.synthetic", description=__doc__.split("\n\n")[0])
    ap.add_argument("--write-bundled", action="store_true", help="regenerate tasks/samples/<task>.parquet")
    ap.add_argument("--out", type=Path, default=None, help="folder for --write-bundled (default: tasks/samples)")
    ap.add_argument("--task", action="append", help="only these tasks (repeatable)")
    ap.add_argument("--preview", type=Path, help="write a PNG contact sheet of a few eval rows per task here")
    args = ap.parse_args(argv)
    names = [_task_name(t) for t in args.task] if args.task else list(GENERATORS)
    if args.write_bundled:
        t = time.time()
        for p in write_bundled(args.out, names):
            print(f"wrote {p} ({p.stat().st_size / 1024:.0f} KiB)")
        print(f"done in {time.time() - t:.1f}s")
    if args.preview:
        args.preview.mkdir(parents=True, exist_ok=True)
        for name in names:
            rows = generate_rows(name, "eval", 8, BUNDLED_SEED)
            sheet = Image.new("RGB", (SIZE * 4, SIZE * 2), (0, 0, 0))
            for k, row in enumerate(rows):
                sheet.paste(row["image"], ((k % 4) * SIZE, (k // 4) * SIZE))
            sheet.save(args.preview / f"{name}.png")
            print(f"wrote {args.preview / f'{name}.png'}")
    return 0


raise SystemExit(_main())
