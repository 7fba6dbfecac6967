"""Stage `reproduction`: the committed real-data records -> reports/reproduction.md and its figure.

Every experiment of every study gets a row: a record's numbers (the full recipe, partial with
the epochs run, or longer than the recipe: a ceiling run), "not reproducible here" with the reason
from studies.yaml, or "no real-data record yet". Records of one run repeated at other seeds (same
params but the seed, same data, same epochs) share a row: their mean, spread and each seed's number.
The summary table at the top (one row per study: the best claim, our best run of the study's own
models, our best variant, each within its recipe's budget) is the one the README shows; a test keeps
the two equal. A last table gives each experiment's expected training time in the full profile on 2 CPU
cores: from its record's seconds per epoch (times the recipe's epochs), else from the bench's measured
training throughput (reports/bench.json: images per second times training images times epochs).
An ensemble table sets each ensemble's record (vote, members, their training time) against the study's own.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from stages.core import cli, config
from stages.core.files import write_text
from stages.core.paths import RECORDS, REPORTS
from stages.reporting import plots

TABLE_START, TABLE_END = "<!-- reproduction summary: start -->", "<!-- reproduction summary: end -->"
BENCH = REPORTS / "bench.json"


def load_records(folder: Path = RECORDS) -> dict[str, dict]:
    """Every ``<record>.json`` of ``folder`` (not its subfolders), by record name (sorted)."""
    return {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))}


def load_ensemble_records(folder: Path = RECORDS) -> dict[str, dict]:
    """Every ensemble's record, ``ensembles/<ensemble>.json`` under ``folder``, by ensemble name."""
    return load_records(folder / "ensembles")


def pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f} %"


def data_label(record: dict) -> str:
    data = record["data"]
    counts = data["counts"]
    kind = "official release" if data["official_release"] else "not the official release"
    return f"{len(data['classes'])} classes, {counts['train']}/{counts['val']}/{counts['test']} images, {kind}"


def budget_label(record: dict) -> str:
    """E.g. "full recipe (all epochs, 25 min)", "partial (6 of 100 epochs, 10 min)"; a run that ended before its
    budget was ended by the recipe's early stopping, which a reader should not take for a cut run."""
    epochs = record["epochs"]
    if epochs["run"] < epochs["budget"]:
        run = f"early stopping at {epochs['run']} of {epochs['budget']} epochs"
    elif epochs["run"] != epochs["recipe"]:
        run = f"{epochs['run']} of {epochs['recipe']} epochs"
    else:
        run = "all epochs"
    return f"{record['budget']} ({run}, {duration(record['train_seconds'])})"


def cost_label(record: dict) -> str:
    """The model's size and compute, to set a variant's against its study model's: e.g. "0.49 M, 67 M"."""
    metrics = record["metrics"]
    return f"{metrics['parameters'] / 1e6:.2f} M, {metrics['flops'] / 1e6:,.0f} M"


def score(record: dict) -> str:
    metrics = record["metrics"]
    text = pct(metrics.get("test_accuracy"))
    if "test_mean_iou" in metrics:
        text += f", mIoU {metrics['test_mean_iou']:.2f}"
    return text


def record_seed(record: dict) -> int:
    """The seed a record's run trained with: its experiment's own, else the top-level one."""
    seed = record["params"]["experiment"].get("seed")
    return record["params"]["seed"] if seed is None else seed


def _run_key(record: dict) -> str:
    """What makes two records the same run but for the seed."""
    experiment = {k: v for k, v in record["params"]["experiment"].items() if k != "seed"}
    params = {**record["params"], "seed": None, "experiment": experiment}
    return json.dumps([record["experiment"], params, record["data"]["sha256"], record["epochs"]], sort_keys=True)


def seed_groups(records: dict[str, dict]) -> list[dict[str, dict]]:
    """``records`` grouped into runs that differ only in their seed, each group in seed order."""
    groups: dict[str, dict[str, dict]] = {}
    for name, r in records.items():
        groups.setdefault(_run_key(r), {})[name] = r
    return [dict(sorted(g.items(), key=lambda item: record_seed(item[1]))) for g in groups.values()]


def mean_record(group: dict[str, dict]) -> dict:
    """One record standing for a seed group: its first record with the metrics and train time averaged."""
    rs = list(group.values())
    metrics = {
        k: statistics.fmean(r["metrics"][k] for r in rs)
        for k in ("test_accuracy", "test_mean_iou")
        if all(k in r["metrics"] for r in rs)
    }
    return {
        **rs[0],
        "metrics": {**rs[0]["metrics"], **metrics},
        "train_seconds": statistics.fmean(r["train_seconds"] for r in rs),
    }


def seed_spread(group: dict[str, dict]) -> float:
    """The standard deviation of a seed group's test accuracy (0 for one record)."""
    accuracies = [r["metrics"]["test_accuracy"] for r in group.values()]
    return statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0


def group_result(group: dict[str, dict], mean: dict, spread: float) -> str:
    """A record's score; for several seeds their mean, standard deviation (``mean_record``, ``seed_spread``)
    and each seed's score."""
    if len(group) == 1:
        return score(mean)
    each = "; ".join(f"seed {record_seed(r)}: {score(r)}" for r in group.values())
    return f"{score(mean)} mean of {len(group)} seeds, standard deviation {100 * spread:.2f} points ({each})"


def why_partial(record: dict, notes: config.ExperimentNotes) -> str:
    """``: <why>`` after a partial record's budget, where studies.yaml says why it stops short here."""
    return f": {notes.partial_here}" if record["budget"] == "partial" and notes.partial_here else ""


def experiment_rows(params: config.Params, studies: config.Studies, records: dict[str, dict]) -> list[dict]:
    """One row per record (or seed group of records), and one per experiment without a record, in
    params.yaml's order."""
    rows = []
    for name, exp in params.experiments.items():
        notes = studies.experiments.get(name, config.ExperimentNotes())
        base = {
            "study": exp.study,
            "experiment": name,
            "kind": notes.role,
            "claimed": notes.claimed.get("test_accuracy"),
            "closed": False,  # not reproducible here, and no record says otherwise
        }
        mine = seed_groups({k: r for k, r in records.items() if r["experiment"] == name})
        for group in mine:
            r, spread = mean_record(group), seed_spread(group)
            rows.append(
                {
                    **base,
                    "record": ", ".join(group),
                    "ours": r["metrics"].get("test_accuracy"),
                    "seeds": len(group),
                    "spread": spread,
                    "partial": r["budget"] == "partial",
                    "longer": r["budget"] == "longer than the recipe",
                    "result": group_result(group, r, spread),
                    "data": data_label(r),
                    "cost": cost_label(r),
                    "budget": budget_label(r) + (", mean" if len(group) > 1 else "") + why_partial(r, notes),
                }
            )
        if not mine:
            status = (
                f"not reproducible here: {notes.not_reproducible_here}"
                if notes.not_reproducible_here
                else "no real-data record yet"
            )
            rows.append(
                {
                    **base,
                    "closed": bool(notes.not_reproducible_here),
                    "record": "",
                    "ours": None,
                    "seeds": 0,
                    "spread": 0.0,
                    "partial": False,
                    "longer": False,
                    "result": status,
                    "data": "",
                    "cost": "",
                    "budget": "",
                }
            )
    return rows


def best_run(rows: list[dict], kind: str) -> str:
    """The highest test accuracy among ``rows`` of ``kind`` that have a record within the recipe's
    budget (a longer run measures what the data allows, not the recipe)."""
    runs = [r for r in rows if r["kind"] == kind and r["ours"] is not None and not r["longer"]]
    top = max(runs, key=lambda r: r["ours"], default=None)
    if top is None:
        of_kind = [r for r in rows if r["kind"] == kind]
        return "not reproducible here" if of_kind and all(r["closed"] for r in of_kind) else "no record yet"
    partial = ", partial" if top["partial"] else ""
    if top["seeds"] > 1:  # the mean, not every seed's number: the study's table below has those
        return f"{pct(top['ours'])}, mean of {top['seeds']} seeds ({top['experiment']}{partial})"
    return f"{top['result']} ({top['record']}{partial})"


def summary_rows(params: config.Params, studies: config.Studies, rows: list[dict]) -> list[str]:
    """Per study: the best claimed number, our best run of a study model, our best variant."""
    lines = ["| study | best claim | ours, the study's models | ours, best variant |", "|---|---|---|---|"]
    for study in studies.studies:
        mine = [r for r in rows if r["study"] == study]
        claims = [r for r in mine if r["claimed"] is not None]
        # the claims a run here can be held against; else the study's claim, marked
        open_claims = [r for r in claims if not r["closed"]] or claims
        best_claim = max(open_claims, key=lambda r: r["claimed"], default=None)

        claim = "–"
        if best_claim:
            closed = ", not reproducible here" if best_claim["closed"] else ""
            claim = f"{pct(best_claim['claimed'])} ({best_claim['experiment']}{closed})"
        lines.append(f"| {study} | {claim} | {best_run(mine, 'study')} | {best_run(mine, 'variant')} |")
    return lines


def markdown(
    params: config.Params,
    studies: config.Studies,
    records: dict[str, dict],
    rows: list[dict],
    ensembles: dict[str, dict],
) -> str:
    """reports/reproduction.md from the records, their ``experiment_rows`` and the ensembles' records."""
    out = [
        "# Reproduced on real data",
        "",
        "Generated by `dvc repro reproduction` from the records in `reports/reproduction/` (each written by",
        "`python -m stages.tools.record` after a real-data run: data sha256, commit, params, machine). Test",
        "accuracy is pixel accuracy for segmentation. The embedded default's numbers (generated data)",
        "are in `reports/scorecard.md`, not here.",
        "",
        TABLE_START,
        *summary_rows(params, studies, rows),
        TABLE_END,
        "",
    ]
    for study, info in studies.studies.items():
        out += [
            f"## {study}: {info.title} ({info.report})",
            "",
            "| experiment | kind | record | data | parameters, FLOPs per image | budget | test accuracy | claimed |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in (r for r in rows if r["study"] == study):
            out.append(
                f"| {r['experiment']} | {r['kind']} | {r['record'] or '–'} | {r['data'] or '–'} | {r['cost'] or '–'} | "
                f"{r['budget'] or '–'} | {r['result']} | {pct(r['claimed'])} |"
            )
        out.append("")
    out += ensemble_table(params, studies, ensembles)
    out += curves(records)
    machines = sorted(
        {
            f"{r['machine']['cpu']}, {r['machine']['cores']} cores, {r['machine']['isa']}, "
            f"accelerator {r['machine']['accelerator']}"
            for r in [*records.values(), *ensembles.values()]
        }
    )
    out += ["Machines of the records: " + ("; ".join(machines) if machines else "none yet") + ".", ""]
    out += time_table(params, records, json.loads(BENCH.read_text()) if BENCH.is_file() else {})
    return "\n".join(out)


def member_label(member: dict) -> str:
    """``seed 1: 94.3 % (40 epochs, 35 min)``."""
    run = f"{member['epochs_run']} epochs, {duration(member['train_seconds'])}"
    return f"seed {member['seed']}: {pct(member['test_accuracy'])} ({run})"


def ensemble_table(params: config.Params, studies: config.Studies, ensembles: dict[str, dict]) -> list[str]:
    """Each ensemble of params.yaml: its record's vote, best and mean member, each member and what all of
    them took to train, against the study's own ensemble (its claim and cost, from studies.yaml)."""
    out = [
        "## Ensembles",
        "",
        "Majority vote of an experiment retrained with other seeds (`ensemble@<name>`; records in",
        "`reports/reproduction/ensembles/`, written by `python -m stages.tools.record --ensemble <name>`). Every",
        "member is kept: none is selected on the test set. The training time is all members' together.",
        "",
        "| ensemble | data | budget | vote | best, mean member | members | training | claimed | the study's cost |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name in params.ensembles:
        notes = studies.ensembles.get(name, config.EnsembleNotes())
        claimed = pct(notes.claimed.get("ensemble_accuracy"))
        r = ensembles.get(name)
        if r is None:
            out.append(f"| {name} | – | – | no real-data record yet | – | – | – | {claimed} | {notes.cost or '–'} |")
            continue
        m = r["metrics"]
        machine = f"{r['machine']['cpu']}, {r['machine']['cores']} cores"
        out.append(
            f"| {name} | {data_label(r)} | {r['budget']} ({r['epochs']['recipe']} epochs each) | "
            f"{pct(m['ensemble_accuracy'])} | {pct(m['best_member_accuracy'])}, {pct(m['mean_member_accuracy'])} | "
            f"{'; '.join(member_label(x) for x in r['members'])} | {duration(r['train_seconds'])} on {machine} | "
            f"{claimed} | {notes.cost or '–'} |"
        )
    return [*out, ""]


def duration(seconds: float) -> str:
    """``4 h 12 min``, ``35 min``, ``50 s``."""
    minutes = round(seconds / 60)
    if seconds < 90:
        return f"{round(seconds)} s"
    return f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{minutes} min"


def full_epochs(params: config.Params, experiment: str) -> int:
    """The experiment's epochs in the full profile: its recipe, with that profile's override and cap."""
    return config.merge_experiment(params.model_copy(update={"profile": "full"}), experiment)["epochs"]


def expected_time(params: config.Params, records: dict[str, dict], bench: dict, experiment: str) -> tuple[str, str]:
    """An experiment's expected training time at its full-profile epochs, and what the figure comes from: its
    own record (seconds per epoch, on the record's training images; the record named after the experiment
    first), else the bench's throughput for it times the training images a record of its dataset counted."""
    epochs = full_epochs(params, experiment)
    dataset = params.experiments[experiment].dataset
    own = sorted(
        (r for r in records.values() if r["experiment"] == experiment), key=lambda r: r is not records.get(experiment)
    )
    if own:
        r, machine = own[0], f"{own[0]['machine']['cpu']}, {own[0]['machine']['cores']} cores"
        run, images = r["epochs"]["run"], r["data"]["counts"]["train"]
        ran = f"{run} epoch{'s' if run != 1 else ''}"
        return duration(r["train_seconds"] / run * epochs), f"record ({ran} on {images} images; {machine})"
    speed = next((t["pipeline_images_per_s"] for t in bench.get("training", []) if t["model"] == experiment), None)
    counts = next((r["data"]["counts"] for r in records.values() if r["data"]["dataset"] == dataset), None)
    if speed and counts:
        source = f"bench ({speed} images/s on {bench['machine']}) x {counts['train']} images"
        return duration(counts["train"] * epochs / speed), source
    return "not measured", "no record, no bench figure"


def time_table(params: config.Params, records: dict[str, dict], bench: dict) -> list[str]:
    """Each experiment's expected training time in the full profile (prepare and scoring add minutes)."""
    out = [
        "## Expected time, profile full, 2 CPU cores",
        "",
        "Training time at each experiment's own epochs (`dvc exp run -S profile=full train@<experiment>`), from",
        "the records above (seconds per epoch, on as many training images as the record had: a subset's record",
        "underestimates the whole set) or the bench (`reports/bench.json`); no GPU has been measured. Data",
        "preparation adds minutes.",
        "",
        "| study | experiment | epochs | expected | from |",
        "|---|---|---|---|---|",
    ]
    for name, exp in params.experiments.items():
        expected, source = expected_time(params, records, bench, name)
        epochs = full_epochs(params, name)
        out.append(f"| {exp.study} | {name} | {epochs} | {expected} | {source} |")
    return [*out, ""]


def curves(records: dict[str, dict]) -> list[str]:
    """Each record's held-out accuracy after every epoch (validation, else the tracked test split): what a
    partial run had reached, and how fast."""
    out = [
        "## Learning curves",
        "",
        "Held-out accuracy after each epoch, from each record's dvclive log: the validation split, or the test",
        "split where the run had no validation split and tracked it (`track_test`, only logged).",
        "",
        "| record | budget | split | accuracy after each epoch (%) |",
        "|---|---|---|---|",
    ]
    for name, r in records.items():
        split = "eval" if r["curve"].get("eval_accuracy") else "test"
        values = r["curve"].get(f"{split}_accuracy") or []
        if values:
            every = -(-len(values) // 20)  # at most 20 numbers: every n-th epoch of a long run, the last one too
            picked = values[::-every][::-1]  # counted back from the last epoch
            shown = ("" if every == 1 else f"every {every} epochs: ") + ", ".join(f"{100 * v:.1f}" for v in picked)
            out.append(f"| {name} | {budget_label(r)} | {'validation' if split == 'eval' else 'test'} | {shown} |")
    return [*out, ""]


def figure(rows: list[dict], path: Path) -> None:
    """Claimed against ours per record (a seed group: its mean and standard deviation); partial runs hatched."""
    done = [r for r in rows if r["ours"] is not None]
    fig, ax = plots.plt.subplots(figsize=(7, 0.35 * len(done) + 1.5))
    ys = range(len(done))
    ax.barh(
        list(ys),
        [r["ours"] for r in done],
        xerr=[r["spread"] for r in done],  # one standard deviation over seeds; none for a single run
        color="tab:blue",
        hatch=[("//" if r["partial"] else "") for r in done],
        label="ours (hatched: partial budget)",
    )
    claimed = [(y, r["claimed"]) for y, r in zip(ys, done) if r["claimed"] is not None]
    if claimed:
        ax.scatter(
            [c for _, c in claimed],
            [y for y, _ in claimed],
            color="tab:red",
            marker="|",
            s=300,
            zorder=3,
            label="claimed by the report",
        )
    labels = [f"{r['experiment']} ({r['seeds']} seeds)" if r["seeds"] > 1 else r["record"] for r in done]
    ax.set_yticks(list(ys), labels)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("test accuracy on real data")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    plots.save(fig, path)


def main() -> None:
    """Write reports/reproduction.md and reports/reproduction.png from reports/reproduction/*.json."""
    params = config.load()
    studies = config.load_studies(params)
    records = load_records()
    rows = experiment_rows(params, studies, records)
    write_text(REPORTS / "reproduction.md", markdown(params, studies, records, rows, load_ensemble_records()))
    figure(rows, REPORTS / "reproduction.png")
    print(f"reproduction: {len(records)} record(s) -> reports/reproduction.md")


def parser() -> argparse.ArgumentParser:
    command = cli.parser(main)
    return command


if __name__ == "__main__":
    cli.run(main, parser())
