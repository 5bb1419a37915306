"""The local web UI (`nightflow ui`): upload a dark photo, pick a model, restore, compare, sample, download.

Why it shares the CLI's pipeline: every run is the CLI's job for the arguments the CLI would parse
(:func:`nightflow.commands.enhance.run_one`), whose image work is :func:`nightflow.pipeline.enhance_file` — the
pipeline of the Python API too — so the UI's files are the CLI's files: the same reader and converter (16-bit
PNG/TIFF kept, grey kept, EXIF orientation, pixel limit, NaN/inf refused), the same seeds
(:mod:`nightflow.seeding`), tiles and records, the same one-line errors for bad uploads.
The page only adds previews: a before/after slider, a gallery of samples and the uncertainty heat-map, and
downloads of the full-resolution files. One queue with one worker runs the jobs, so two users never hold two
models' working memory at once; the progress bar follows the tiles of long images.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from .ensemble import SIZES as ENSEMBLE_SIZES
from .errors import UserError

UPLOAD_TYPES = [".png", ".jpg", ".jpeg", ".tif", ".tiff"]
MAX_SAMPLES = 8
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860
KEEP_JOBS = 8
AUTO = "auto"  # the model choice that does what `nightflow enhance` does without --model
AUTO_LABEL = "auto: the -jpeg model for JPEG files"


def bundled_models() -> list[dict[str, Any]]:
    """The zoo entries with bundled weights (name, scale), smallest scale first."""
    import nightflow

    rows = [r for r in nightflow.list_models(count_params=False) if r["bundled"]]
    return sorted(rows, key=lambda r: (r["scale"], r["name"]))


class Runner:
    """Loads models on first use (kept for later runs) and runs one upload through the shared pipeline."""

    def __init__(self, workdir: Path | None = None) -> None:
        self._models: dict[str, Any] = {}
        self._lock = threading.Lock()
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="nightflow-ui-"))
        self.workdir.mkdir(parents=True, exist_ok=True)

    def model(self, name: str) -> Any:
        import nightflow

        with self._lock:
            if name not in self._models:
                self._models[name] = nightflow.load(name, device="auto")
            return self._models[name]

    def _prune(self) -> None:
        """Keep the last KEEP_JOBS jobs' files (gradio serves copies of what it showed), so disk use stays flat."""
        jobs = sorted(d for d in self.workdir.iterdir() if d.is_dir())
        for old in jobs[: max(0, len(jobs) - KEEP_JOBS + 1)]:
            shutil.rmtree(old, ignore_errors=True)

    def enhance_args(
        self,
        src: Path,
        temperature: float,
        exposure: float,
        samples: int,
        seed: int,
        uncertainty: bool,
        ensemble: int = 1,
    ) -> argparse.Namespace:
        """The CLI's own parse of the equivalent `nightflow enhance` command line (its defaults included). A
        temperature of 0 is the CLI's default, not ``--temperature 0``: the main output is the mean path and the
        samples and heat-map are drawn at the model's own temperature, so they differ (at 0 they would be copies
        of the main output and the heat-map blank). ``ensemble`` above 1 is ``--ensemble`` (main output only)."""
        from .commands import enhance

        parser = argparse.ArgumentParser()
        enhance.add_arguments(parser)
        argv = [str(src), "--exposure", repr(float(exposure))]
        if float(temperature) > 0:
            argv += ["--temperature", repr(float(temperature))]
        argv += ["--samples", str(int(samples)), "--seed", str(int(seed)), "--quiet"]
        if uncertainty:
            argv.append("--uncertainty")
        if int(ensemble) != 1:
            argv += ["--ensemble", str(int(ensemble))]
        return parser.parse_args(argv)

    def run(
        self,
        upload: str | Path,
        model_name: str,
        temperature: float,
        exposure: float,
        samples: int,
        seed: int,
        uncertainty: bool,
        scale: int = 2,
        ensemble: int = 1,
    ) -> dict[str, Any]:
        """Restore ``upload``; returns the written files by role (main, samples, heat), the model's name and
        scale. ``model_name`` AUTO picks as `nightflow enhance` does without --model, at ``scale``. Bad uploads
        and settings raise the CLI's one-line ``UserError``. ``ensemble``: ``--ensemble`` (1 = off)."""
        from .commands import enhance
        from .data.io import file_sha256
        from .pipeline import check_exposure, check_seed, check_temperature

        check_temperature(temperature, "temperature")
        check_exposure(exposure)
        check_seed(int(seed), "seed")
        upload = Path(upload)
        self._prune()
        job_dir = Path(tempfile.mkdtemp(prefix=f"{time.time_ns():020d}-", dir=self.workdir))  # sorts by age
        src = job_dir / ("input" + upload.suffix.lower())
        shutil.copyfile(upload, src)  # a name of ours: uploads may carry odd names
        args = self.enhance_args(src, temperature, exposure, samples, seed, uncertainty, ensemble)
        enhance.check_settings(args)
        if model_name == AUTO:
            model_name = enhance.auto_model(src, int(scale))
        model = self.model(model_name)
        out = job_dir / "out" / f"{upload.stem or 'image'}_x{model.scale}.png"
        (job,) = enhance.plan_jobs(enhance.expand_inputs([str(src)]), None, model.scale, args, out)
        args.quiet = False  # tile progress bars on: the page's progress indicator follows them
        settings = enhance.job_settings(model, args, enhance._weights_hash(model))
        records = enhance.output_records(job, settings, file_sha256(src))
        enhance.run_one(job, model, args, enhance.Status(todo=job.outputs(), kept=[], unrecorded=[]), records)
        return {
            "input": src,
            "main": job.main,
            "samples": job.samples,
            "heat": job.heat,
            "model": model_name,
            "scale": model.scale,
        }


def preview(path: Path) -> np.ndarray:
    """An 8-bit RGB copy for the page (the download keeps the file's own depth), through the pipeline's
    reader and converter."""
    from .data.io import ImageKind, image_to_tensor, tensor_to_image
    from .pipeline import read

    x, _ = image_to_tensor(read(path), min_size=1)
    return tensor_to_image(x, ImageKind(dtype=np.dtype(np.uint8), grey=False))


def enlarged(img: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """The input blown up (nearest) to the result's size, for the before/after slider."""
    from PIL import Image

    return np.asarray(Image.fromarray(img).resize((shape[1], shape[0]), Image.Resampling.NEAREST))


def build_app(runner: Runner | None = None) -> Any:
    """The gradio Blocks app (queued, one job at a time)."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # a local tool: no calls home
    import gradio as gr

    from .pipeline import MAX_TEMPERATURE

    runner = runner or Runner()
    models = bundled_models()
    if not models:
        raise UserError("no bundled models to serve; train one (nightflow train) first")
    scales = sorted({int(m["scale"]) for m in models})
    default_scale = 2 if 2 in scales else scales[0]

    def names(scale: int) -> list[tuple[str, str]]:
        """(label, value) of the scale's bundled models, led by AUTO where both models it picks from are."""
        from .commands.enhance import auto_pair
        from .models.zoo import canonical

        found = [(m["name"], m["name"]) for m in models if int(m["scale"]) == int(scale)]
        pair = {canonical(n) for n in auto_pair(int(scale))}
        return [(AUTO_LABEL, AUTO), *found] if pair <= {n for n, _ in found} else found

    def first(scale: int) -> str:
        return names(scale)[0][1]

    def on_scale(scale: int) -> Any:
        return gr.update(choices=names(scale), value=first(scale))

    def on_run(
        upload,
        scale,
        model_name,
        temperature,
        exposure,
        samples,
        seed,
        uncertainty,
        ensemble,
        progress=gr.Progress(track_tqdm=True),  # noqa: B008 (gradio's way of asking for a progress bar)
    ):
        if not upload:
            return None, [], None, [], "**error:** upload a PNG, JPEG or TIFF photo first"
        progress(0, desc="restoring")
        try:
            out = runner.run(
                upload, model_name, temperature, exposure, samples, seed, uncertainty, scale, int(ensemble)
            )
        except UserError as exc:
            return None, [], None, [], f"**error:** {exc}"
        result = preview(out["main"])
        before = enlarged(preview(out["input"]), result.shape)
        gallery = [preview(p) for p in out["samples"]]
        heat = preview(out["heat"]) if out["heat"] is not None else None
        files = [str(p) for p in [out["main"], *out["samples"], out["heat"]] if p is not None]
        h, w = result.shape[:2]
        return (
            (before, result),
            gallery,
            heat,
            files,
            f"done: {w}×{h} (×{out['scale']}, {out['model']}), {len(files)} file(s) to download",
        )

    with gr.Blocks(title="nightflow") as app:
        gr.Markdown(
            "# nightflow\nRestore a photo taken in the dark: brighten, denoise and upscale with a conditional flow."
        )
        with gr.Row():
            with gr.Column(scale=1):
                upload = gr.File(
                    label="dark photo (PNG, JPEG, TIFF; 16-bit kept)",
                    file_types=UPLOAD_TYPES,
                    type="filepath",
                    elem_id="upload",
                )
                scale = gr.Radio(scales, value=default_scale, label="scale", elem_id="scale")
                model = gr.Dropdown(
                    names(default_scale), value=first(default_scale), label="model", elem_id="model"
                )
                exposure = gr.Slider(
                    -3.0,
                    3.0,
                    value=0.0,
                    step=0.1,
                    label="exposure (EV vs the model's estimate)",
                    elem_id="exposure",
                )
                temperature = gr.Slider(
                    0.0,
                    MAX_TEMPERATURE,
                    value=0.0,
                    step=0.05,
                    label="temperature (0 = mean path; samples then at the model's own)",
                    elem_id="temperature",
                )
                samples = gr.Slider(0, MAX_SAMPLES, value=0, step=1, label="samples", elem_id="samples")
                seed = gr.Number(0, precision=0, label="seed", elem_id="seed")
                uncertainty = gr.Checkbox(False, label="uncertainty heat-map", elem_id="uncertainty")
                ensemble = gr.Radio(
                    list(ENSEMBLE_SIZES),
                    value=1,
                    label="self-ensemble (main output at temperature 0: N× slower, a little cleaner)",
                    elem_id="ensemble",
                )
                run = gr.Button("Restore", variant="primary", elem_id="run")
                status = gr.Markdown("", elem_id="status")
            with gr.Column(scale=2):
                compare = gr.ImageSlider(
                    label="before / after", type="numpy", format="png", elem_id="compare"
                )
                gallery = gr.Gallery(label="samples", columns=4, elem_id="gallery")
                heat = gr.Image(
                    label="uncertainty (per-pixel spread across samples)", format="png", elem_id="heat"
                )
                downloads = gr.File(
                    label="full-resolution results", file_count="multiple", elem_id="downloads"
                )
        scale.change(on_scale, scale, model)
        run.click(
            on_run,
            [upload, scale, model, temperature, exposure, samples, seed, uncertainty, ensemble],
            [compare, gallery, heat, downloads, status],
            concurrency_limit=1,
        )
    app.queue(max_size=16, default_concurrency_limit=1)
    return app


def launch(host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, block: bool = True) -> Any:
    """Serve the app on ``host``:``port`` (local only by default); returns the app when ``block`` is False."""
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise UserError("the web UI needs gradio: pip install 'nightflow[ui]'") from None
    app = build_app()
    try:
        app.launch(
            server_name=host,
            server_port=port,
            prevent_thread_lock=not block,
            show_error=True,
            quiet=not block,
        )
    except OSError as exc:
        raise UserError(
            f"cannot serve on {host}:{port} ({' '.join(str(exc).split())}); pick another --port"
        ) from None
    return app
