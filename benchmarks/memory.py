"""Memory. (1) Peak resident memory of each quick-profile stage on CPU (goal <= 6 GiB): each stage run
through the CLI with the quick profile's sizes and data but few steps (memory does not grow with steps:
the sizes, the validation on whole images and the test at native size are all included).
(2) An ESTIMATE, not a measurement (no GPU here), of the paper profile's peak GPU memory per training
stage under bf16-mixed: weights, gradients and Adam moments in fp32 (16 bytes per trainable parameter,
+4 per generator parameter for the EMA copy) plus the activations saved for backward in one training
step (counted with saved-tensor hooks on CPU under bf16 autocast, at batch 1, times the batch size;
every tensor saved during the step is counted, so D- and G-step graphs add up: an upper bound for
that part). Not included: the CUDA context (~0.5 GiB), cuDNN workspaces, allocator fragmentation."""


import torch

from _common import OUT, data_overrides, setup_threads, write_result
from _common import run_cli as run
from _stages import PLAIN_STEPS, subject

GOAL_GIB = 6.0
QUICK = ("profile=quick", *data_overrides(), "callbacks=minimal", "logger=csv")
SHORT = {
    "segment": ("profile.segment.max_steps=20", "data.patches_per_epoch=320"),  # one epoch: one validation, then the full test
    "mask": ("profile.mask.iterations=20", "profile.mask.val_every=10"),
    "image": ("profile.image.iterations=10", "profile.image.val_every=5"),
    "single": ("profile.single.iterations=20", "profile.single.val_every=10"),
}


def quick_peaks() -> dict:
    results = {}
    runs = OUT / "memory"
    for stage, short in SHORT.items():
        results[stage] = run(f"stage={stage}", *QUICK, *short, f"hydra.run.dir={runs / stage}")
        print(f"memory quick {stage:9s} peak RSS {results[stage]['peak_rss_gib']:5.2f} GiB  goal <= {GOAL_GIB}", flush=True)
    results["generate"] = run("stage=generate", f"mask_ckpt={runs / 'mask/checkpoints/last.ckpt'}",
                              f"image_ckpt={runs / 'image/checkpoints/last.ckpt'}", "num_samples=8",
                              f"out_dir={runs / 'generate_set'}", "overwrite=true", f"hydra.run.dir={runs / 'generate'}")
    print(f"memory quick generate  peak RSS {results['generate']['peak_rss_gib']:5.2f} GiB  (8 samples at 565x584)", flush=True)
    return results


def saved_activation_bytes(stage: str, model, batch) -> int:
    """Bytes of the distinct tensors saved for backward during one training step at this batch."""
    storages = {}
    kept = []  # holding them keeps their addresses from being reused by later tensors of the step

    def pack(tensor):
        storage = tensor.untyped_storage()
        kept.append(storage)
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    step = PLAIN_STEPS[stage](model, 100)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), torch.autocast("cpu", dtype=torch.bfloat16):
        step(batch)
    return sum(storages.values())


def paper_estimates() -> dict:
    results = {}
    for stage in ("segment", "mask", "image"):
        s = subject(stage, "data.batch_size=1", profile="paper")
        paper_batch = int(subject(stage, profile="paper").batch_size)
        model = s.new_model().train()
        batch = s.batches(1)[0]
        activations = saved_activation_bytes(stage, model, batch) * paper_batch
        trainable = sum(p.numel() for name, p in model.named_parameters() if p.requires_grad)
        ema = sum(p.numel() for p in model.generator_ema.parameters()) if hasattr(model, "generator_ema") else 0
        states = 16 * trainable + 4 * ema
        total = (states + activations) / 2**30
        results[stage] = {"parameters_m": trainable / 1e6, "batch_size": paper_batch,
                          "weights_grads_adam_gib": states / 2**30, "saved_activations_gib": activations / 2**30,
                          "estimate_gib": total}
        print(f"memory paper {stage:9s} ESTIMATE {total:5.2f} GiB GPU (params {trainable / 1e6:5.1f} M, batch {paper_batch}: "
              f"states {states / 2**30:.2f} + activations {activations / 2**30:.2f} GiB; not measured)", flush=True)
    return results


def main() -> dict:
    setup_threads()
    results = {"quick_cpu_peak_rss": quick_peaks(), "paper_gpu_estimate": paper_estimates(), "goal_gib": GOAL_GIB}
    write_result("memory", results)
    return results


if __name__ == "__main__":
    main()
