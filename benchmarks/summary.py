"""Collects the benchmarks' JSON results (BENCH_OUT, default outputs/bench) into one Markdown summary,
printed and written to BENCH_OUT/summary.md."""

import json

from _common import OUT


def _load(name: str) -> dict | None:
    path = OUT / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def lines() -> list[str]:
    out = ["# make bench summary", ""]
    step = _load("step_rate")
    if step:
        out += [f"## Training-step rate, Lightning vs plain PyTorch ({step['data']}, {step['torch_threads']} torch thread; goal >= {step['goal']})",
                "", "| stage | batch | plain ms/step (CPU) | Lightning ms/step (CPU) | ratio CPU | ratio wall |", "|---|---|---|---|---|---|"]
        for stage, r in step["stages"].items():
            out.append(f"| {stage} | {r['batch_size']} | {r['cpu']['plain_step_s'] * 1e3:.1f} | {r['cpu']['lightning_step_s'] * 1e3:.1f} "
                       f"| {r['cpu']['ratio']:.3f} | {r['wall']['ratio']:.3f} |")
        out.append("")
    precision = _load("precision")
    if precision:
        out += [f"## bf16 autocast vs float32, plain training step ({precision['data']}, {precision['torch_threads']} torch thread; "
                f"profiles use {precision['fast_precision']} here)", "",
                "| stage | batch | fp32 ms/step (CPU) | bf16 ms/step (CPU) | fp32 / bf16 |", "|---|---|---|---|---|"]
        for stage, r in precision["stages"].items():
            out.append(f"| {stage} | {r['batch_size']} | {r['fp32_step_s'] * 1e3:.1f} | {r['bf16_step_s'] * 1e3:.1f} | {r['ratio']:.2f} |")
        out.append("")
    data = _load("data_throughput")
    if data:
        out += [f"## Data pipeline vs training step ({data['data']}; goal >= {data['goal']}x)", "",
                "| stage | workers | pipeline samples/s (CPU) | step samples/s (CPU) | ratio CPU | ratio wall |", "|---|---|---|---|---|---|"]
        for stage, r in data["stages"].items():
            out.append(f"| {stage} | {r['loader']['num_workers']} | {r['cpu']['pipeline_samples_per_s']:.1f} | "
                       f"{r['cpu']['step_samples_per_s']:.2f} | {r['cpu']['ratio']:.1f}x | {r['wall']['ratio']:.1f}x |")
        out.append("")
    gen = _load("generate_throughput")
    if gen:
        out += [f"## stage=generate throughput ({gen['networks']}; {gen['torch_threads']} thread)", "",
                "| size | images/s | ms per image |", "|---|---|---|"]
        out += [f"| {size} | {r['images_per_s']:.2f} | {r['s_per_image'] * 1e3:.0f} |" for size, r in gen["sizes"].items()]
        out.append("")
    post = _load("postprocess_cost")
    if post:
        out += [f"## Export post-processing vs painting, per {post['image']} image ({post['goal']}: "
                f"{'met' if post['met'] else 'NOT met'})", "", "| step | ms CPU | x painting |", "|---|---|---|"]
        out += [f"| {name} | {r['cpu_s'] * 1e3:.0f} | {r['ratio_to_paint']:.2f} |" for name, r in post["steps"].items()]
        out.append("")
    ddp = _load("ddp_scaling")
    if ddp:
        out += [f"## DDP on CPU processes, stage=segment quick ({ddp['data']})", "",
                "| run | ms per step | samples/s | vs 1 process x 1 thread |", "|---|---|---|---|"]
        out += [f"| {name} | {r['step_s'] * 1e3:.0f} | {r['samples_per_s']:.1f} | {r['throughput_vs_1x1']:.2f}x |"
                for name, r in ddp["runs"].items()]
        out.append("")
    mem = _load("memory")
    if mem:
        out += [f"## Memory (goal: quick profile <= {mem['goal_gib']} GiB RSS on CPU)", "", "| quick stage (CPU) | peak RSS GiB | wall s |", "|---|---|---|"]
        out += [f"| {stage} | {r['peak_rss_gib']:.2f} | {r['wall_s']:.0f} |" for stage, r in mem["quick_cpu_peak_rss"].items()]
        out += ["", "| paper stage (GPU, bf16-mixed) | params M | batch | ESTIMATE GiB (not measured) |", "|---|---|---|---|"]
        out += [f"| {stage} | {r['parameters_m']:.1f} | {r['batch_size']} | {r['estimate_gib']:.2f} |"
                for stage, r in mem["paper_gpu_estimate"].items()]
        out.append("")
    first = step or data or gen or post or ddp or mem
    if first:
        out.append(f"Machine: {first['machine']}; date {first['date']}; load average at the end of each benchmark: "
                   + ", ".join(f"{r['benchmark']} {r['load_average_at_end']}" for r in (step, data, gen, post, ddp, mem) if r))
    return out


def main() -> None:
    text = "\n".join(lines()) + "\n"
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "summary.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
