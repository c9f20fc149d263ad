"""Style transfer on a development grid of scikit-image's bundled pictures (issue 34).

    python -m experiments.style_grid --grid_dir=runs/style_grid            # the 12 pairs
    python -m experiments.style_grid --pairs=chelsea:coffee,camera:retina --size=128 --steps=60
    python -m experiments.style_grid --held_out --grid_dir=runs/style_held_out  # unseen pairs

Takes every setting flag of experiments/style_transfer.py (--size, --steps, --init, ...).
Per pair it writes GRID_DIR/CONTENT__STYLE.png (the result), its _side_by_side.png and
_costs.png, and .json (settings, ratios,
pixel-space measures, issue 34's criteria, seconds); a pair whose .json holds the same
settings is not run again, so an interrupted grid resumes. Then GRID_DIR/grid.png (titled
content | style | result panels, the measures under each) and grid.md / grid.csv (the
measures, pass/fail per criterion, seconds per pair).
"""

from __future__ import annotations

import csv
import json
import os
import platform
from collections.abc import Sequence

import numpy as np
from absl import app, flags

from experiments import common
from experiments import style_transfer as single
from jaxcnn import style, train, weights

FLAGS = flags.FLAGS
# Each content with three styles, each style twice; no picture is its own style.
PAIRS = (
    ("chelsea", "hubble_deep_field"), ("chelsea", "brick"), ("chelsea", "coffee"),
    ("coffee", "retina"), ("coffee", "gravel"), ("coffee", "grass"),
    ("motorcycle_left", "hubble_deep_field"), ("motorcycle_left", "grass"),
    ("motorcycle_left", "coffee"),
    ("camera", "retina"), ("camera", "gravel"), ("camera", "brick"),
)
# Pairs no default was chosen on (issue 34's check on unseen images): no picture of the grid.
HELD_OUT = (
    ("astronaut", "immunohistochemistry"), ("rocket", "moon"), ("coins", "colorwheel"),
    ("clock", "cell"),
)
flags.DEFINE_list("pairs", [f"{c}:{s}" for c, s in PAIRS], "CONTENT:STYLE pairs of "
                  "scikit-image picture names.")
flags.DEFINE_bool("held_out", False, "Run the held-out pairs (HELD_OUT: pictures not in the "
                  "development grid) instead of --pairs.")
flags.DEFINE_string("grid_dir", "runs/style_grid", "Folder for the per-pair results and the "
                    "grid's PNG and tables.")
CRITERIA = ("style_ratio", "content_ratio", "ssim", "colour", "tv")


def parse_pairs(items: Sequence[str]) -> list[tuple[str, str]]:
    """[(content, style)] from "content:style" strings; a picture may not be its own style."""
    pairs = []
    for item in items:
        names = item.split(":")
        if len(names) != 2 or not all(names):
            raise ValueError(f"--pairs: expected CONTENT:STYLE; received {item!r}")
        if names[0] == names[1]:
            raise ValueError(f"--pairs: {item!r} uses one picture as content and style")
        pairs.append((names[0], names[1]))
    return pairs


def run_pair(content_name: str, style_name: str, net: weights.FeatureNet, settings: dict,
             size: int, grid_dir: str) -> dict:
    """One pair's report, from its .json where that holds the same settings, else run."""
    stem = os.path.join(grid_dir, f"{content_name}__{style_name}")
    wanted = {"settings": settings, "size": size, "features": net.source}
    if os.path.exists(f"{stem}.json"):
        with open(f"{stem}.json") as handle:
            report = json.load(handle)
        if {key: report.get(key) for key in wanted} == json.loads(json.dumps(wanted)):
            print(f"{content_name} + {style_name}: done before ({stem}.json)")
            return report
    content, style_image = single.prepare(
        single.skimage_image(content_name), single.skimage_image(style_name), size,
        [settings["content_layer"], *settings["style_layers"]])
    print(f"{content_name} + {style_name}: {content.shape[0]}x{content.shape[1]} px", flush=True)
    result, history, report = single.transfer_and_measure(
        content, style_image, net, settings, conv=train.platform_conv_impl(FLAGS.conv_impl))
    single.print_report(report, settings["steps"])
    single.save_pictures(f"{stem}.png", content, style_image, result, history, report)
    report = {"content": content_name, "style": style_name, **wanted, **report,
              "machine": f"{platform.node()} load {os.getloadavg()[0]:.1f}"}
    with open(f"{stem}.json", "w") as handle:
        json.dump(report, handle, indent=1)
    return report


def save_grid(path: str, reports: list[dict], size: int, columns: int = 2) -> None:
    """All pairs as titled content | style | result panels, `columns` pairs a row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    rows = -(-len(reports) // columns)
    figure, axes = plt.subplots(rows, 3 * columns, figsize=(3 * columns * 2.3, rows * 2.45),
                                squeeze=False)
    for axis in axes.flat:
        axis.axis("off")
    grid_dir = os.path.dirname(path)
    for index, report in enumerate(reports):
        row, column = divmod(index, columns)
        content, style_image = single.prepare(
            single.skimage_image(report["content"]), single.skimage_image(report["style"]),
            size, ["conv1_1"])
        stem = os.path.join(grid_dir, f"{report['content']}__{report['style']}")
        result = np.asarray(Image.open(f"{stem}.png"), np.float32) / 255.0
        panel = axes[row, 3 * column:3 * column + 3]
        for axis in panel:
            axis.axis("on")
        single.draw_triple(panel, content, style_image, result, report,
                           (f"content: {report['content']}", f"style: {report['style']}"))
    figure.tight_layout()
    figure.savefig(path, dpi=75)
    plt.close(figure)
    # A 256-colour palette: a third of the bytes, for a PNG meant to be committed.
    Image.open(path).convert("RGB").quantize(256).save(path, optimize=True)


def table_rows(reports: list[dict]) -> list[dict]:
    """One row per pair: the measures, the criteria met, the seconds."""
    rows = []
    for report in reports:
        row = {"content": report["content"], "style": report["style"]}
        for key in ("style_ratio", "content_ratio", "ssim", "ssim_style", "colour",
                    "colour_content", "tv", "tv_content", "tv_style", "seconds"):
            row[key] = report[key]
        row.update({f"ok_{name}": report["criteria"][name] for name in CRITERIA})
        row["all_met"] = all(report["criteria"].values())
        rows.append(row)
    return rows


def write_tables(stem: str, rows: list[dict]) -> None:
    """STEM.csv and STEM.md (a markdown table, one line per pair, plus a count line)."""
    with open(f"{stem}.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    yes = lambda ok: "yes" if ok else "**no**"  # noqa: E731
    lines = ["| content | style | style ratio | content ratio | SSIM (style's) | colour dist "
             "(content's) | TV/px (content's, style's) | s | all met |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['content']} | {r['style']} | {r['style_ratio']:.4f} {yes(r['ok_style_ratio'])}"
            f" | {r['content_ratio']:.3f} {yes(r['ok_content_ratio'])} | {r['ssim']:.3f} "
            f"({r['ssim_style']:.3f}) {yes(r['ok_ssim'])} | {r['colour']:.3f} "
            f"({r['colour_content']:.3f}) {yes(r['ok_colour'])} | {r['tv']:.3f} "
            f"({r['tv_content']:.3f}, {r['tv_style']:.3f}) {yes(r['ok_tv'])} | "
            f"{r['seconds']:.0f} | {yes(r['all_met'])} |")
    met = {name: sum(r[f"ok_{name}"] for r in rows) for name in CRITERIA}
    lines.append("")
    lines.append(f"Pairs meeting every criterion: {sum(r['all_met'] for r in rows)} of "
                 f"{len(rows)}; per criterion: " + ", ".join(f"{k} {v}" for k, v in met.items()))
    with open(f"{stem}.md", "w") as handle:
        handle.write("\n".join(lines) + "\n")


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    common.quiet_logging()
    try:
        pairs = list(HELD_OUT) if FLAGS.held_out else parse_pairs(FLAGS.pairs)
        net = single.feature_net(FLAGS.vgg_weights, FLAGS.allow_random_features, FLAGS.depth,
                                 FLAGS.seed)
        settings = single.settings_from_flags()
        style.check_layers([FLAGS.content_layer], net.depth, "--content_layer")
        style.check_layers(FLAGS.style_layers, net.depth, "--style_layers")
    except ValueError as error:
        raise app.UsageError(str(error)) from error
    print(f"features: {net.source}; settings {settings}; {FLAGS.size} px")
    reports = [run_pair(c, s, net, settings, FLAGS.size, FLAGS.grid_dir) for c, s in pairs]
    save_grid(os.path.join(FLAGS.grid_dir, "grid.png"), reports, FLAGS.size)
    rows = table_rows(reports)
    write_tables(os.path.join(FLAGS.grid_dir, "grid"), rows)
    with open(os.path.join(FLAGS.grid_dir, "grid.md")) as handle:
        print(handle.read())
    print(f"wrote {FLAGS.grid_dir}/grid.png, grid.md, grid.csv")


if __name__ == "__main__":
    common.run(main)
