"""The report's tables from the scored runs: ``python tables.py runs.json``.

``runs.json`` maps each run name to its ``score.py`` JSON; rows take the mean and the range over the
seeds of a row. Prints markdown.
"""

import json
import statistics
import sys

ROWS = {
    "the recipe: hard, Gumbel, multi-label 3, two stages (16 -> 8 groups)": ["A_recipe", "R_s1", "R_s2"],
    "soft assignment (hence no noise)": ["S_s0", "S_s1", "S_s2"],
    "hard assignment, Gumbel noise off": ["N_s0", "N_s1", "N_s2"],
    "multi-label loss off (caption only)": ["M_s0", "M_s1", "M_s2"],
    "one grouping stage (depths [2, 3], 16 group tokens -> 8 groups)": ["O_s0", "O_s1", "O_s2"],
    "zoom augmentation (random crops of 25-100 % of the scene)": ["Z_s0", "Z_s1", "Z_s2"],
    "untrained (recipe architecture)": [f"untrained-A_recipe-{s}" for s in range(3)],
    "untrained (one-stage architecture)": [f"untrained-O_s0-{s}" for s in range(3)],
}
SINGLE = {
    "E_lr4": "learning rate / 4 (2.5e-4 at batch 64), seed 0",
    "L_s1": "learning rate / 4, seed 1",
    "G_lr16": "learning rate / 16 (6.25e-5)",
    "I_lr4_lin": "learning rate / 4 and a linear projector (`proj_num_layers=1`)",
    "B_1stage": "one stage, depths [3, 2], 16 -> 16 groups",
    "D_1st_d14": "one stage, depths [1, 4], 16 -> 8 groups",
    "F_1st_d11": "one stage, depths [1, 1], 16 -> 8 groups",
}
BASELINES = ("no_grouping_mIoU", "window_no_grouping_mIoU", "window_classifier_mIoU")


def spread(values: list) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{statistics.mean(values):.1f} ({min(values):.1f}-{max(values):.1f})"


def cells(results: list[dict]) -> list[str]:
    stages = len(results[0]["oracle_grouping_mIoU"])
    out = [spread([r["mIoU"] for r in results])]
    out += [spread([r.get(key) for r in results]) for key in BASELINES]
    out.append(" / ".join(spread([r["oracle_grouping_mIoU"][i] for r in results]) for i in range(stages)))
    out.append(
        " / ".join(
            spread([r["groups"][i]["mean"] for r in results]) + f" of {results[0]['groups'][i]['of']}"
            for i in range(stages)
        )
    )
    return out


def main(path: str) -> None:
    runs = json.load(open(path))
    head = "mIoU % | no grouping % | window class on the segments' foreground % | window classifier alone %"
    head += " | oracle grouping %, stage 1 / 2 | groups used, stage 1 / 2"
    print(f"| run | seeds | {head} | top class drawn |")
    print("| --- | ---: |" + " ---: |" * 7)
    for label, names in ROWS.items():
        results = [runs[n] for n in names if n in runs]
        if results:
            top = spread([100 * r["image_top1_present"] for r in results])
            print(f"| {label} | {len(results)} | " + " | ".join(cells(results)) + f" | {top} % |")
    print()
    print(f"| run | change from the recipe | {head} |")
    print("| --- | --- |" + " ---: |" * 6)
    for name, label in SINGLE.items():
        if name in runs:
            print(f"| {name} | {label} | " + " | ".join(cells([runs[name]])) + " |")
    seeds = [runs[n] for n in ROWS[next(iter(ROWS))] if n in runs]
    print()
    print("recipe per seed:", ", ".join(f"{r['name']} {r['mIoU']:.1f}" for r in seeds))
    if seeds:
        print("all background:", spread([r["all_background_mIoU"] for r in seeds]))
        print("patch grid:", spread([r["patch_grid_mIoU"] for r in seeds]))
        print("settings:", seeds[0]["settings"])


if __name__ == "__main__":
    main(sys.argv[1])
