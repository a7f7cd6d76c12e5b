"""Generation throughput of `stage=generate` (dual GAN: Stage I mask, painted by Stage II), images/s at
256x256 and at DRIVE's 565x584, with the quick profile's networks (untrained: speed does not depend on
the weights). Measured in this process as (t(N2) - t(N1)) / (N2 - N1), which cancels the start-up
(loading checkpoints, hashing, the sample grid)."""

import logging
import time

import torch

from _common import OUT, compose, data_overrides, setup_threads, write_result
from synthmed_lightning.checkpoints import STAGE_KEY
from synthmed_lightning.stages.common import build_datamodule, instantiate_primitive
from synthmed_lightning.stages.generate import run_generate

SIZES = {"256x256": (256, 256), "565x584 (DRIVE)": (584, 565)}
N1, N2 = 2, 10


def untrained_checkpoint(stage: str, path) -> str:
    """A checkpoint of the quick profile's network for `stage` (mask or image), as generate loads it."""
    cfg = compose(f"stage={stage}", "profile=quick", *data_overrides())
    datamodule = build_datamodule(cfg)
    datamodule.setup("fit")
    torch.manual_seed(0)
    if stage == "mask":
        model = instantiate_primitive(cfg.model, source_size=datamodule.source_size)
        model.set_fov(datamodule.fov)
    else:
        model = instantiate_primitive(cfg.model, train_fov_diameter=datamodule.train_fov_diameter)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams), STAGE_KEY: stage}, path)
    return str(path)


def seconds(ckpts: dict, n: int, height: int, width: int) -> float:
    cfg = compose("stage=generate", f"mask_ckpt={ckpts['mask']}", f"image_ckpt={ckpts['image']}", f"num_samples={n}",
                  f"out_dir={OUT / 'generate' / 'set'}", "overwrite=true", f"height={height}", f"width={width}",
                  "device=cpu", output_dir=OUT / "generate" / "run")
    start = time.perf_counter()
    run_generate(cfg)
    return time.perf_counter() - start


def main() -> dict:
    setup_threads()
    logging.getLogger("synthmed_lightning").setLevel(logging.WARNING)
    ckpts = {stage: untrained_checkpoint(stage, OUT / "generate" / f"{stage}.ckpt") for stage in ("mask", "image")}
    results = {}
    for name, (height, width) in SIZES.items():
        t1, t2 = seconds(ckpts, N1, height, width), seconds(ckpts, N2, height, width)
        rate = (N2 - N1) / (t2 - t1)
        results[name] = {"images_per_s": rate, "s_per_image": 1 / rate, f"t_{N1}_s": t1, f"t_{N2}_s": t2}
        print(f"generate_throughput {name:16s} {rate:6.2f} images/s ({1000 / rate:7.1f} ms per image)", flush=True)
    write_result("generate_throughput", {"networks": "quick profile: Stage I DCGAN base 16 at 256 px, Stage II pix2pix base 32",
                                         "sizes": results})
    return results


if __name__ == "__main__":
    main()
