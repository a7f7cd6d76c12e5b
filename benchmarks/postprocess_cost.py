"""What the export's CPU post-processing costs per DRIVE-sized image, side by side with painting it:
the photographic nuisance (`appearance=photo`: `NuisanceModel.apply`, with and without the vessel
mask) and the anatomy statistics of one mask (`anatomy_statistics`, which `stage=mask` and the study
run on every sample), against one 565x584 painting by the quick profile's Stage II (untrained: speed
does not depend on the weights). Goal: each step costs less than painting the image, so it never
dominates an export. Median of a few calls after a warm-up, CPU time, one process."""

import logging
import time

import numpy as np
import torch

from _common import OUT, median, setup_threads, write_result
from generate_throughput import untrained_checkpoint
from synthmed_lightning.checkpoints import load_module
from synthmed_lightning.data.nuisance import NuisanceModel
from synthmed_lightning.data.phantom import render_phantom
from synthmed_lightning.metrics.mask_stats import anatomy_statistics
from synthmed_lightning.models.image_gan import ImageGAN

REPEATS = 5
GOAL = 1.0  # post-processing seconds per painting second, at most


def cpu_seconds(step) -> float:
    step()  # warm-up (the nuisance calibrates its noise on its first call in a process)
    times = []
    for _ in range(REPEATS):
        start = time.process_time()
        step()
        times.append(time.process_time() - start)
    return median(times)


def main() -> dict:
    setup_threads()
    logging.getLogger("synthmed_lightning").setLevel(logging.WARNING)
    samples = [render_phantom(i) for i in range(4)]  # DRIVE's size, 584 x 565
    sample = samples[0]
    nuisance = NuisanceModel.fit_samples(samples)
    painter = load_module(ImageGAN, untrained_checkpoint("image", OUT / "postprocess" / "image.ckpt"), "image")
    mask = torch.from_numpy(sample.mask.astype(np.float32))[None, None]
    fov = torch.from_numpy(sample.fov.astype(np.float32))[None, None]
    seconds = {
        "paint (Stage II, quick)": cpu_seconds(lambda: painter.paint(mask, fov)),
        "nuisance with mask": cpu_seconds(lambda: nuisance.apply(sample.image, sample.fov, 0, mask=sample.mask)),
        "nuisance without mask": cpu_seconds(lambda: nuisance.apply(sample.image, sample.fov, 0)),
        "anatomy statistics": cpu_seconds(lambda: anatomy_statistics(sample.mask[None], sample.fov)),
    }
    paint = seconds["paint (Stage II, quick)"]
    results = {name: {"cpu_s": s, "ratio_to_paint": s / paint} for name, s in seconds.items()}
    for name, r in results.items():
        print(f"postprocess_cost {name:24s} {r['cpu_s'] * 1e3:7.1f} ms CPU  {r['ratio_to_paint']:5.2f}x painting", flush=True)
    worst = max(r["ratio_to_paint"] for name, r in results.items() if not name.startswith("paint"))
    write_result("postprocess_cost", {"goal": f"every step <= {GOAL}x painting", "met": worst <= GOAL,
                                      "image": "phantom 584x565", "steps": results})
    return results


if __name__ == "__main__":
    main()
