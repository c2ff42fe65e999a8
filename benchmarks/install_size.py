"""Installed size of each install variant: the base install (ONNX Runtime, no torch), ``[torch]``
and ``[dev]``, each ``pip install``-ed into a fresh virtual environment from this checkout.

Run ``python -m benchmarks.install_size [--variants base,torch]``. It needs the package index
(pip downloads what its cache lacks). The size is what the install adds to a fresh venv's
``site-packages`` on disk (pip and setuptools, there before it, are not counted); the wall time includes
resolving and downloading, so only the sizes travel between machines. Each row also says
whether torch was installed and whether a text query embeds in that environment without it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path
from typing import Any, Sequence

from . import common

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = {"base": "", "torch": "[torch]", "dev": "[dev]"}
#: the aim for the base install, in MB on disk
BASE_TARGET_MB = 600
#: embeds a text with the default model and runtime, printing the runtime's class
PROBE = ("from clip_ingest.connectors.runtime import load_embedder; import importlib.util as u; e = load_embedder(); "
         "e.embed_texts(['a red car']); print(type(e).__name__, u.find_spec('torch') is not None)")


def folder_mb(folder: Path) -> float:
    total = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file() and not f.is_symlink())
    return total / 2**20


def measure(variant: str, into: Path) -> dict[str, Any]:
    env_dir = into / f"venv-{variant}"
    shutil.rmtree(env_dir, ignore_errors=True)
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    site = next((env_dir / "lib").glob("python3*/site-packages"))
    fresh_mb = folder_mb(site)
    started = common.clock()
    done = subprocess.run([str(python), "-m", "pip", "install", "-q", f"{ROOT}{VARIANTS[variant]}"], capture_output=True,
                          text=True)
    install_s = common.clock() - started
    if done.returncode != 0:
        raise SystemExit(f"error: pip install of {variant!r} exited {done.returncode}: {done.stderr[-2000:]}")
    probe = subprocess.run([str(python), "-c", PROBE], capture_output=True, text=True, cwd=into,
                           env={**os.environ, "HF_HUB_OFFLINE": "1"})
    runtime, torch_installed = (probe.stdout.split() + ["failed", "?"])[:2] if probe.returncode == 0 else ("failed", "?")
    return {"variant": variant, "pip install": f"clip-ingest{VARIANTS[variant]}", "added_mb": round(folder_mb(site) - fresh_mb),
            "torch": torch_installed, "default runtime embeds with": runtime, "install_s": round(install_s)}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = common.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--variants", default="base,torch", help="comma-separated, of: " + ", ".join(VARIANTS))
    args = parser.parse_args(argv)
    variants = ["base"] if args.smoke else [v.strip() for v in args.variants.split(",")]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        raise common.BenchmarkInputError(f"unknown variant(s) {', '.join(unknown)}; known: {', '.join(VARIANTS)}")
    work = common.Workdir.create(args.workdir)
    try:
        rows = [measure(variant, work.path) for variant in variants]
    finally:
        work.close()
    sizes = {row["variant"]: row["added_mb"] for row in rows}
    ratios = [common.Ratio("base install, MB", sizes["base"], BASE_TARGET_MB, at_most=True)] if "base" in sizes else []
    if "base" in sizes and "torch" in sizes:
        ratios.append(common.Ratio("[torch] / base, size", sizes["torch"] / sizes["base"]))
    config = {"python": sys.version.split()[0], "variants": variants}
    return common.report("Installed size", config, {"variants": rows}, ratios, args.json,
                         ["added_mb: on-disk bytes the install adds to a fresh venv's site-packages"])


if __name__ == "__main__":
    main()
