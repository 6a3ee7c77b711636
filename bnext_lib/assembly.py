"""REPORT.md, its claims table (``claims.csv``) and the README's headline, from the studies' ``results/*.json``
and the runner's ``run.json``."""
from __future__ import annotations

import json
import math
import os
import platform
from pathlib import Path
from typing import Any, Mapping

from . import claims as claims_registry
from .checkpoints import atomic_write_text
from .data import DATASETS
from .ledger import git_commit, machine
from .record import COMPARISON_FIELDS
from .study import NOTEBOOKS, REPO_ROOT, report_dir
from .verdicts import VERDICTS, holm

__all__ = ["machine_info", "git_commit", "adjusted_claims", "replication", "assemble", "update_readme",
           "report_files", "stale_files"]


def machine_info() -> dict:
    """The machine of a report invocation: :func:`bnext_lib.ledger.machine` with its memory and platform."""
    try:
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2 ** 30
    except (ValueError, OSError, AttributeError):
        mem = float("nan")
    # not platform.platform(): on Linux it asks `uname -p` in a child process for a field nobody reads here
    return {**machine(), "memory_GiB": round(mem, 1),
            "platform": "-".join((platform.system(), platform.release(), platform.machine()))}


def _scope(claim: Mapping[str, Any]) -> tuple[int, int]:
    """(comparisons run, comparisons) behind a claim; a comparison a profile cut has no sample sizes."""
    comps = claim.get("comparisons") or []
    return sum(p.get("n_a") is not None for p in comps), len(comps)


def verdict_cell(claim: Mapping[str, Any]) -> str:
    """The claim's verdict in bold, with its scope when a profile cut some of its comparisons: a claim whose
    every comparison must hold is then judged on part of it."""
    run, total = _scope(claim)
    part = f" (on {run} of {total} comparisons; the others not run)" if 0 < run < total else ""
    return f"**{claim['verdict']}**{part}"


def adjusted_claims(studies: list[dict]) -> list[dict]:
    """Every study's claims in report order, each with ``study``, after :func:`~bnext_lib.verdicts.holm` over
    all of them (the verdicts REPORT.md, claims.csv and the README show)."""
    claims = [dict(c, study=s["study"]) for s in studies for c in s["claims"]]
    return holm(claims)


def under_todays_rules(out: str | os.PathLike = REPO_ROOT / "reports"):
    """A committed report's verdicts as published beside what the same numbers read under today's rules
    (:mod:`bnext_lib.verdicts`): a claim's comparisons combined again (cut comparisons leave it *partly tested*),
    then Holm over the claims' p (its largest part's) and over their p of contradiction. A report older than the
    paired tests stored no p of contradiction: its Welch tests' is one minus the one-sided p."""
    import pandas as pd

    from .verdicts import combine

    studies, _ = _read_results(Path(out))
    rows, again = [], []
    for s in studies:
        for c in s["claims"]:
            comps = [dict(p, p_opposite=1.0 - p["p_value"]) if p.get("p_opposite") is None
                     and p.get("p_value") is not None and not math.isnan(p["p_value"]) else p
                     for p in c.get("comparisons") or []]
            parts = [dict(p, cut=p.get("n_a") is None, text="") for p in comps]
            verdict = combine(parts)["verdict"] if parts else c["verdict"]
            if verdict != "not tested" and c["verdict"] == "not tested":
                verdict = "not tested"  # a failed regime check stays failed
            again.append(dict(c, verdict=verdict, comparisons=comps, study=s["study"]))
            rows.append(dict(claim=c["claim"], published=c["verdict"]))
    for row, c in zip(rows, holm(again)):
        row.update(today=c["verdict"], p_claim=c["p_claim"], p_holm=c["p_holm"], p_holm_contra=c["p_holm_contra"])
    return pd.DataFrame(rows)


TODAY_START, TODAY_END = "<!-- todays-rules:start -->", "<!-- todays-rules:end -->"


def _from_ledger(studies: list[dict]) -> bool:
    """Whether a report's every study was run on the ledger (v3 on), and so judged under today's rules; the v2 run
    predates the ledger and its results name none."""
    return bool(studies) and all("ledger" in s for s in studies)


def todays_rules_markdown(out: str | os.PathLike = REPO_ROOT / "reports") -> str:
    """The README's block (between its markers) that reads the committed report under today's rules."""
    df = under_todays_rules(out)
    changed = int((df.published != df.today).sum())
    lines = [TODAY_START, "", f"**The committed report under today's rules.** The headline above is the v2 run as "
             f"published, under v2's rules. The same numbers under today's rules (`bnext_lib.verdicts`: a claim "
             f"whose comparisons were not all run is *partly tested* at best; Holm over the claims' p, the largest "
             f"of their parts', and over their p of contradiction) read differently for {changed} of {len(df)} "
             f"claims (`bnext_lib.assembly.under_todays_rules`):", "", "| claim | v2 as published | today's rules | "
             "Holm p | Holm p (contradiction) |", "|---|---|---|---|---|"]
    for r in df.itertuples():
        p = lambda v: "" if math.isnan(v) else f"{v:.3f}"  # noqa: E731
        lines.append(f"| {r.claim} | {r.published} | **{r.today}** | {p(r.p_holm)} | {p(r.p_holm_contra)} |")
    return "\n".join(lines + ["", TODAY_END])


def replication(out: Path) -> dict[str, str]:
    """The gpu report's verdict per claim key, when ``out`` is the cpu report and a gpu report sits beside it."""
    gpu = report_dir("gpu")
    if Path(out).resolve() != report_dir("cpu").resolve() or not (gpu / "results").is_dir():
        return {}
    try:
        studies, _ = _read_results(gpu)
    except FileNotFoundError:  # a results folder without results: no replication to show
        return {}
    return {c["key"]: c["verdict"] for c in adjusted_claims(studies)}


def replication_heading() -> str:
    """The gpu column's heading in REPORT.md: a gpu report that predates the ledger ran an earlier protocol than
    the cpu one beside it, and the heading says so."""
    try:
        studies, _ = _read_results(report_dir("gpu"))
    except FileNotFoundError:
        return "gpu report"
    return "gpu report" if _from_ledger(studies) else "gpu report (an earlier protocol, [gpu/](gpu/REPORT.md))"


def _seed_rows(claim: str, comparison: Mapping[str, Any]) -> list[dict]:
    """The per-seed values of one comparison, one row per value, named by its side's label."""
    name = comparison.get("comparison") or ""
    labels = name.split(" > " if " > " in name else " < ")
    rows = []
    for side, label in zip(("a", "b"), (labels[0], labels[-1])):
        values = comparison.get(f"values_{side}") or []
        seeds = comparison.get(f"seeds_{side}") or [None] * len(values)
        rows += [{"claim": claim, "comparison": name, "side": label, "seed": seed, "value": v}
                 for seed, v in zip(seeds, values)]
    return rows


_SCALARS = tuple(k for k in COMPARISON_FIELDS if not k.startswith(("values_", "seeds_")))


def _write_claims_csv(out: Path, claims: list[dict], gpu: Mapping[str, str]) -> None:
    """``claims.csv``: one row per comparison behind each claim (a claim that is no comparison of runs: one row
    without numbers), with the claim's p (its largest part's) and p of contradiction, raw and Holm-adjusted, and
    the gpu report's verdict;
    ``tables/claims_per_seed.csv``: every value each comparison rests on, with its seed."""
    import pandas as pd

    rows, seeds = [], []
    for c in claims:
        comps = c.get("comparisons") or [{"comparison": "", "verdict": c["verdict"]}]
        run, total = _scope(c)
        for i, p in enumerate(comps):
            rows.append({"claim": c["claim"], "source": c.get("source", "paper"),
                         "primary": i == (c.get("primary") or 0) and total > 0,
                         **{k: p.get(k) for k in _SCALARS}, "claim_verdict": c["verdict"],
                         "claim_comparisons_run": f"{run}/{total}" if total else "",
                         "p_claim": c.get("p_claim"), "p_holm": c.get("p_holm"), "p_contra": c.get("p_contra"),
                         "p_holm_contra": c.get("p_holm_contra"),
                         "gpu_verdict": gpu.get(c["key"], ""), "study": c["study"]})
            seeds += _seed_rows(c["claim"], p)
    atomic_write_text(out / "claims.csv", pd.DataFrame(rows).to_csv(index=False))
    atomic_write_text(out / "tables" / "claims_per_seed.csv",
                      pd.DataFrame(seeds, columns=["claim", "comparison", "side", "seed", "value"]).to_csv(index=False))


def _read_results(out: Path) -> tuple[list[dict], dict]:
    studies = [json.loads((out / "results" / f"{n}.json").read_text()) for n in NOTEBOOKS
               if (out / "results" / f"{n}.json").exists()]
    if not studies:
        raise FileNotFoundError(f"no study results in {out / 'results'}; run the notebooks first")
    run = json.loads((out / "run.json").read_text()) if (out / "run.json").exists() else {}
    return studies, run


def _runs_count(run: dict) -> str:
    """"n of N runs of the whole report are recorded; " from run.json (:func:`bnext_lib.plan.count`), with what
    the count assumed; empty where the part did not count."""
    runs = run.get("runs")
    if not runs:
        return ""
    assumed = f" (assuming {' and '.join(runs['assumed'])})" if runs.get("assumed") else ""
    return f"{runs['recorded']} of {runs['total']} runs of the whole report are recorded{assumed}; "


def _not_run(studies) -> str:
    """The notebooks a part did not run (``make report ONLY=...``), whose claims it does not show at all."""
    from .study import NOTEBOOKS

    ran = {s["study"] for s in studies}
    missing = [n for n in NOTEBOOKS if n not in ran]
    return f" Not run in this part: {', '.join(missing)}." if missing else ""


def assemble(out: str | os.PathLike = REPO_ROOT / "reports") -> Path:
    """Write ``REPORT.md`` from ``results/*.json`` and ``run.json`` (if ``make report`` wrote one), with
    ``claims.csv`` and ``tables/regime_checks.csv``."""
    import pandas as pd

    out = Path(out)
    studies, run = _read_results(out)
    lines = ["# BNext reproduction: report", ""]
    lines += ["Generated by `make report` (`python -m bnext_lib.report`) from the four notebooks in `notebooks/`; "
              "every number below comes from running the committed code. Executed notebooks (with all outputs) "
              "are in [`executed/`](executed/).", ""]
    waiting = [s for s in studies if s.get("waiting")]
    if waiting:
        lines += ["**A part of a report built in parts, not the report**: " + _runs_count(run)
                  + "; ".join(f"{s['study']} stopped where {s['waiting']['runs']} of its runs wait for the next part "
                              f"({s['waiting']['recorded']} recorded)" for s in waiting)
                  + ". Its claims below are those the notebooks reached; the others wait for runs."
                  + _not_run(studies), ""]
    lines += _what_was_run(studies, run)
    lines += _ledger_lines(studies)
    claims, gpu = adjusted_claims(studies), replication(out)
    (out / "tables").mkdir(parents=True, exist_ok=True)
    _write_claims_csv(out, claims, gpu)
    checks = [c for s in studies for c in s.get("regime_checks", [])]
    if checks:
        atomic_write_text(out / "tables" / "regime_checks.csv", pd.DataFrame(checks).to_csv(index=False))
    lines += _claims_section(claims, gpu, replication_heading() if gpu else "")
    lines += ["", claims_registry.protocol_markdown(studies[0]["profile"]).rstrip()]
    if checks:
        lines += ["", "## Regime checks", "",
                  "What each study's claims need before a verdict counts, measured in this run "
                  "([csv](tables/regime_checks.csv)); a claim whose study failed a check is *not tested*.", "",
                  markdown_table(pd.DataFrame(checks))]
    for s in studies:
        lines += ["", f"## {s['study']}", ""]
        for n in s.get("notes", []):
            lines += [f"> {n}", ""]
        for t in s["tables"]:
            lines += [f"**{t['caption']}** ([csv]({t['csv']}))", "", (out / t["md"]).read_text().rstrip(), ""]
        for f in s["figures"]:
            lines += [f"![{f['caption']}]({f['png']})", "", f"*{f['caption']}* ([svg]({f['svg']}))", ""]
    lines += _regime_section(out)
    lines += _regime_section(out, ROBUSTNESS_EVIDENCE, "Do the verdicts depend on the run length or on the CPU?")
    path = out / "REPORT.md"
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path


def _what_was_run(studies: list[dict], run: Mapping[str, Any]) -> list[str]:
    """REPORT.md's "What was run": profile, regimes, seeds, machine, commit, time, scale, and a row per notebook."""
    lines = ["## What was run", ""]
    first, settings = studies[0], studies[0]["settings"]
    lines.append(f"- Profile **{first['profile']}**: " + ", ".join(f"{k}={v}" for k, v in settings.items()))
    over = next((s for s in studies if s.get("regime") == "overfitting"), None)
    if over:
        changed = {k: v for k, v in over["settings"].items() if settings.get(k) != v}
        names = ", ".join(s["study"] for s in studies if s.get("regime") == "overfitting")
        lines.append(f"- Over-fitting regime ({names}): " + ", ".join(f"{k}={v}" for k, v in changed.items()))
    lines.append(f"- Seeds per compared variant: {first['seeds']}; teachers (weak to strong): "
                 f"{', '.join(first['teachers']) or 'none'}; {first['workers']} run(s) side by side"
                 + (f", {first['threads']} torch thread(s) each" if first["threads"] else ""))
    if run:
        m = run.get("machine", {})
        lines.append(f"- Machine: {m.get('cpu')} ({m.get('cores')} cores, {m.get('memory_GiB')} GiB), "
                     f"{m.get('platform')}; Python {m.get('python')}, torch {m.get('torch')}"
                     + (f", GPU {m['gpu']}" if m.get("gpu") else ""))
        lines.append(f"- Code: git commit `{run.get('commit')}`; started {run.get('started')}, "
                     f"total wall time {_total_wall_s(run) / 60:.1f} min"
                     + (f" (notebooks {run.get('wall_s', 0) / 60:.1f} min)" if "total_wall_s" in run else ""))
        if run.get("note"):
            lines.append(f"- Note: {run['note']}")
    for label, s in (("architecture study", first), ("over-fitting regime", over)):
        seen = _images_per_run(s["settings"]) if s else None
        if seen:
            lines.append(f"- Scale ({label}): each student run sees {seen:,} training images "
                         f"({s['settings'].get('train_subset') or 'all'} x {_epochs(s['settings'])}); the "
                         f"paper's ImageNet runs see 1,281,167 x 512 (~{1281167 * 512 / seen:,.0f}x more). Verdicts "
                         "are about this scale.")
    lines += ["", "| notebook | wall time (min) | runs trained | runs from cache | claims |", "|---|---|---|---|---|"]
    for s in studies:
        entry = run.get("notebooks", {}).get(s["study"], {})
        wall = entry.get("first_wall_s", entry.get("wall_s", s["wall_s"]))
        trained = entry.get("first_runs_trained", entry.get("runs_trained", s["runs_trained"]))
        cached = entry.get("first_runs_cached", entry.get("runs_cached", s["runs_cached"]))
        lines.append(f"| [{s['study']}](executed/{s['study']}.html) | {wall / 60:.1f} | {trained} | "
                     f"{cached} | {len(s['claims'])} |")
    return lines


def _ledger_summary(profile: str) -> dict | None:
    """The profile's ledger summary (:meth:`Ledger.summary`), with ``machines`` and ``commits`` as words; None
    without a recorded run."""
    from .ledger import Ledger, ledger_dir

    s = Ledger(ledger_dir(profile)).summary()
    if not s["runs"]:
        return None
    return {**s, "machines": "; ".join(f"{n} runs on {k}" for k, n in s["machines"].items()),
            "commits": ", ".join(s["commits"])}


def _ledger_lines(studies: list[dict]) -> list[str]:
    """The ledger behind the report: its runs, worker-hours, machines and commits."""
    s = _ledger_summary(studies[0]["profile"]) if studies else None
    if s is None:
        return []
    return [f"- Ledger: {s['runs']} runs ({s['hours']:.2f} worker-hours, {s['cpu_hours']:.2f} CPU-hours) in "
            f"[`ledger/`](ledger/index.csv): {s['machines']}; commits {s['commits']}"]


def _ledger_words(profile: str) -> str:
    """"; N runs from the committed ledger (X CPU-hours on <machines>, commits ...)", the training behind a report
    that its own invocation may only have assembled ("" without a ledger)."""
    s = _ledger_summary(profile)
    if s is None:
        return ""
    return (f"; {s['runs']} runs from the committed ledger, {s['cpu_hours']:.1f} CPU-hours ({s['machines']}; "
            f"commits {s['commits']}); this invocation")


def _claims_section(claims: list[dict], gpu: Mapping[str, str], gpu_heading: str = "gpu report") -> list[str]:
    """REPORT.md's "Claims": the verdict rule, then a row per claim (with the gpu report's verdict if there is one)."""
    lines = ["", "## Claims", "",
             "Verdict rule (`bnext_lib/verdicts.py`): per comparison a t-test, paired by seed where both arms ran "
             "at the same seeds (they share each seed's subset and data order), Welch's otherwise. *Reproduced*: "
             "one-sided p < 0.05 in the claimed direction; *contradicted*: the two-sided 95 % confidence interval "
             "lies wholly on the other side of 0; *inconclusive*: neither, or fewer than 3 seeds a side; *not "
             "tested*: the regime the claim needs was measured and does not hold. A claim resting on several "
             "comparisons is reproduced only when every one ran and holds (its p is the largest of its parts'), "
             "*partly tested* when those that ran hold but some were not run. Holm's correction over all claims' p "
             "(raw and adjusted in [claims.csv](claims.csv)) must keep a claim below 0.05 for it to stay "
             "reproduced, and a second one over their p of contradiction for it to stay contradicted. "
             "Numbers: mean ± sample std over seeds, Δ with its two-sided 95 % t interval (claims.csv adds a "
             "bootstrap interval and the probability of improvement) and the one-sided p; "
             "`detectable` in claims.csv is the smallest true difference the comparison finds at 80 % power. "
             "Per-seed values: [tables/claims_per_seed.csv](tables/claims_per_seed.csv). Claims marked † are this "
             "project's own hypotheses, not the paper's.", ""]
    head = "| claim | verdict | our numbers | evidence |" + (f" {gpu_heading} |" if gpu else "")
    lines += [head, "|---" * (5 if gpu else 4) + "|"]
    for c in claims:
        mark = " †" if c.get("source") == "project" else ""
        row = f"| {c['claim']}{mark} | {verdict_cell(c)} | {c['evidence']} | {c['where']} |"
        lines.append(row + (f" {gpu.get(c['key'], '—')} |" if gpu else ""))
    return lines


# the benchmarks that chose the profile's student, recipe, teachers and over-fitting regime (their own outputs)
REGIME_EVIDENCE = (
    ("time_to_accuracy", "The CE student's recipe: CPU-seconds, steps and images to 89 % test top-1 and at the end of "
     "the run, the v2 recipe (today) against the one the profile adopts, on the report's seeds (one invocation, one "
     "machine)", "benchmarks/time_to_accuracy.py"),
    ("time_to_accuracy_techniques", "Each technique alone on the one-epoch bf16 base, on the validation split "
     "(seeds 10, 11): what chose the recipe", "benchmarks/time_to_accuracy.py"),
    ("time_to_accuracy_shorter", "The adopted recipe with per-channel lr x4, and on 40,000 of the 55,000 training "
     "images (a shorter run), on the validation split (seeds 10, 11): neither adopted",
     "benchmarks/time_to_accuracy.py"),
    ("time_to_accuracy_overfitting", "The over-fitting regime's CE student, v2 recipe against the adopted one: cost "
     "per run", "benchmarks/time_to_accuracy.py --regime overfitting"),
    ("student_frontier", "Binary students and short-run recipes on the full training set: test top-1 (full test "
     "set) against training cost", "benchmarks/student_frontier.py"),
    ("teacher_ladder", "Full-precision teachers: test top-1 and training cost", "benchmarks/teacher_ladder.py"),
    ("capacity_teachers", "Candidate teachers trained on the over-fitting regime's own subset of each choice seed "
     "(the student's images), against the binary CE student of that seed: validation lead, and the roles it allows",
     "benchmarks/capacity_teachers.py"),
    ("teachers_same_data", "Teachers trained on the over-fitting regime's 2,000 images (the student's own): below the "
     "CE student, so the report's teachers learn from the full training set", "benchmarks/teacher_ladder.py --subset"),
    ("eval_precision", "The adopted recipe's models evaluated in float32 and under bf16 autocast (validation split)",
     "benchmarks/eval_precision.py"),
    ("overfitting_regime", "The CE student on training subsets: train (eval mode) minus test top-1 per epoch",
     "benchmarks/overfitting_regime.py"),
)
# the benchmarks that test the verdicts themselves: at another run length, under other CPU kernels
ROBUSTNESS_EVIDENCE = (
    ("training_length", "Headline comparisons at two run lengths: Δ test top-1 with its 95 % CI and one-sided p",
     "benchmarks/training_length.py"),
    ("kernel_variance", "The same seeds under default and AVX2-capped CPU kernels: a CE student and a headline "
     "comparison per run, and the comparison's verdict under each", "benchmarks/kernel_variance.py"),
)


def _regime_section(out: Path, evidence=REGIME_EVIDENCE,
                    title: str = "How the student, recipe, teachers and regimes were chosen") -> list[str]:
    """A REPORT.md section from benchmarks' tables and figures in ``out`` (those that exist)."""
    import pandas as pd

    found = [(n, c, s) for n, c, s in evidence if (out / "tables" / f"{n}.csv").exists()]
    if not found:
        return []
    lines = ["", f"## {title}", ""]
    for name, caption, script in found:
        df = pd.read_csv(out / "tables" / f"{name}.csv")
        lines += [f"**{caption}** (`{script}`; [csv](tables/{name}.csv))", "", markdown_table(df), ""]
        if (out / "figures" / f"00_{name}.png").exists():
            lines += [f"![{caption}](figures/00_{name}.png)", ""]
    return lines


# the measurements the pre-registered protocol reads (bnext_lib.claims; the grey RandAugment operations of
# bnext_lib.augment): outputs of their benchmarks on choice seeds, kept beside the report's tables
PROTOCOL_EVIDENCE = ("variance_budget_overfitting", "variance_budget_full", "pairing_overfitting", "pairing_full",
                     "randaugment_grey_ops")


def report_files(out: str | os.PathLike) -> set[Path]:
    """Every file the last run of the report in ``out`` accounts for: what its studies' results name (the results
    files, their tables and figures, the executed notebooks), what assembly writes (REPORT.md, claims.csv,
    run.json, the regime-check and per-seed tables), and the evidence benchmarks' outputs REPORT.md cites (table,
    figure, log). Anything else under ``out`` is left over from an earlier run (:func:`stale_files`)."""
    out = Path(out)
    files = {out / n for n in ("REPORT.md", "claims.csv", "run.json", "README.md")}
    files |= {out / "tables" / n for n in ("regime_checks.csv", "claims_per_seed.csv")}
    for path in sorted((out / "results").glob("*.json")) if (out / "results").is_dir() else []:
        study = json.loads(path.read_text())
        files |= {path, out / "executed" / f"{study['study']}.ipynb", out / "executed" / f"{study['study']}.html"}
        files |= {out / t[k] for t in study.get("tables", []) for k in ("csv", "md")}
        files |= {out / f[k] for f in study.get("figures", []) for k in ("png", "svg")}
    for name, _, _ in REGIME_EVIDENCE + ROBUSTNESS_EVIDENCE:
        files |= {out / "tables" / f"{name}.csv", out / "figures" / f"00_{name}.png", out / "logs" / f"{name}.log"}
    files |= {out / "tables" / f"{name}.csv" for name in PROTOCOL_EVIDENCE}
    return files


def stale_files(out: str | os.PathLike) -> list[Path]:
    """The files under ``out`` that :func:`report_files` does not account for; other profiles' folders beside the
    cpu report (``gpu/``, ``paper/``, ``.scratch/``), the ledger, a part's staging folder (``.part/``) and ``logs/`` (the transcripts of whoever ran it: the runner's
    invocations, a device session's calls) are left out."""
    out = Path(out)
    others = {out / p for p in ("gpu", "paper", ".scratch")} if out.resolve() == report_dir("cpu").resolve() else set()
    # the ledgers are the runs' record (the report's, and the choice seeds'), not the last run's output
    others |= {out / "ledger", out / "choice-ledger", out / ".part"}
    known = report_files(out)
    return sorted(p for p in out.rglob("*") if p.is_file() and p not in known
                  and not any(o in p.parents for o in others) and out / "logs" not in p.parents)


def _number(v: float) -> str:
    # two decimals, but a small value (a p of 5e-4, a learning rate of 2e-3) in two significant digits, not "0.00"
    return f"{v:.2f}" if v == 0 or abs(v) >= 0.1 else f"{v:.2g}"


def markdown_table(df) -> str:
    """``df`` as a Markdown table for REPORT.md: whole-number columns (seeds, epochs, n) without decimals, other
    numbers as ``_number`` writes them, empty cells where a row has no value."""
    import pandas as pd

    shown, align = df.copy(), []
    for col in shown.columns:
        values = shown[col]
        numeric = pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)
        align.append("right" if numeric else "left")
        if numeric:
            whole = (values.dropna() % 1 == 0).all()
            shown[col] = values.map(lambda v: "" if pd.isna(v) else f"{v:.0f}" if whole else _number(v))
        else:
            shown[col] = values.map(lambda v: "" if v is None or (isinstance(v, float) and pd.isna(v)) else v)
    return shown.to_markdown(index=False, disable_numparse=True, colalign=align)


def _images_per_run(settings: Mapping[str, Any]) -> int | None:

    n = settings.get("train_subset")
    if n is None:
        n = {"fashion_mnist": 60000, "cifar10": 50000, "cifar100": 50000}.get(settings.get("dataset", ""))
    return n * settings["epochs"] if n and settings.get("epochs") and settings.get("dataset") in DATASETS else None


def _total_wall_s(run: Mapping[str, Any]) -> float:
    """The run's wall time: the notebooks' (``wall_s``, recorded by the runner), or ``total_wall_s`` where the
    whole ``make report`` was timed outside the runner (set-up, an invocation stopped before the runner recorded
    interrupted ones); ``note`` then says how."""
    return run.get("total_wall_s", run.get("wall_s", 0))


def _regime_words(settings: Mapping[str, Any]) -> str:
    return f"{settings.get('train_subset') or 'all'} training images x {_epochs(settings)}"


def _epochs(settings: Mapping[str, Any]) -> str:
    n = settings.get("epochs")
    return f"{n} epoch" + ("" if n == 1 else "s")


README_START, README_END = "<!-- report-headline:start -->", "<!-- report-headline:end -->"


def update_readme(out: str | os.PathLike = REPO_ROOT / "reports") -> None:
    """Rewrite the README's headline (between the markers) from the committed report's claims (an explicit step
    of ``python -m bnext_lib.report`` after a run into ``reports/``)."""
    studies, run = _read_results(Path(out))
    readme = REPO_ROOT / "README.md"
    if not readme.exists() or README_START not in readme.read_text():
        return
    s0, claims = studies[0], adjusted_claims(studies)
    counts = {v: sum(c["verdict"] == v for c in claims) for v in VERDICTS}
    over = next((s for s in studies if s.get("regime") == "overfitting"), None)
    regimes = f"{_regime_words(s0['settings'])} for the architecture study" + (
        f", {_regime_words(over['settings'])} for over-fitting, distillation and augmentation" if over else "")
    lines = [README_START, "", "### Headline: the paper's claims at laptop scale ([full report](reports/REPORT.md))",
             "", f"`make report` ({s0['profile']} profile: {s0['settings'].get('model')} on "
             f"{s0['settings'].get('dataset')}, {regimes}, seeds {s0['seeds']}{_ledger_words(s0['profile'])}, "
             f"{_total_wall_s(run) / 60:.0f} min on {run.get('machine', {}).get('cores', '?')} CPU cores) gives "
             + ", ".join(f"{counts[v]} {v}" for v in VERDICTS) + " claims (Holm-corrected):", "",
             "| claim | verdict |", "|---|---|"]
    for c in claims:
        lines.append(f"| {c['claim']}{' †' if c.get('source') == 'project' else ''} | {verdict_cell(c)} |")
    for name in ("01_ablation", "01_blocks"):
        table = next((t for s in studies for t in s["tables"] if t["name"] == name), None)
        md = REPO_ROOT / "reports" / table["md"] if table else None
        if md is not None and md.exists():
            lines += ["", f"**{table['caption']}**", "", md.read_text().rstrip()]
    figure = next((f for s in studies for f in s["figures"] if f["name"] == "01_ablation_curves"), None)
    if figure:
        lines += ["", f"![{figure['caption']}](reports/{figure['png']})", "", f"*{figure['caption']}*"]
    lines += ["", README_END]
    text = readme.read_text()
    head, rest = text.split(README_START, 1)
    tail = rest.split(README_END, 1)[1] if README_END in rest else rest
    if TODAY_START in tail and TODAY_END in tail:  # the reading under today's rules follows the headline
        before, after = tail.split(TODAY_START, 1)
        after = after.split(TODAY_END, 1)[1]
        if _from_ledger(studies):  # assembled under today's rules already: the v2 run's re-reading goes with it
            tail = before.rstrip("\n") + "\n\n" + after.lstrip("\n")
        else:
            tail = before + todays_rules_markdown(out) + after
    atomic_write_text(readme, head + "\n".join(lines) + tail)
