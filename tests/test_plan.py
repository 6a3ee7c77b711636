"""The plan (bnext_lib/plan.py): the whole report's runs counted before anything trains, the choices it reads from
recorded runs, and a notebook that asks for a run the plan does not count is caught."""
import pytest

from bnext_lib import plan
from bnext_lib.config import config_hash
from bnext_lib.profiles import get_profile
from bnext_lib.study import Study, report_studies


def test_the_plan_counts_every_notebook_s_runs_once(tmp_path):
    """At the cpu profile, from the profile alone: notebook 01 trains 4 ablation arms, 3 earlier blocks beside
    BNext, 2 smaller sizes and sign from the first step at every seed, and prefetches the teachers and the
    over-fitting regime's CE student; 02 distils from each teacher; 03 trains its 7 recipes but the 3 the profile
    cuts; 04 its regime's CE student, those 4 recipes again at the 3 choice seeds (its recipe's choice, never on
    report seeds), and its 7 presets but the cut flip-only one, plus 4 float-twin presets. Shared runs (the teachers,
    CE only) count once."""
    p = get_profile("cpu")
    seeds, teachers = len(p.headline_seeds), len(p.teachers)
    assert len(p.seeds) == seeds  # the cpu profile runs every comparison at the headline seeds
    recipes = [r for r in plan.distillation_recipes(p.teachers) if not p.cut_reason(r)]
    presets = [x for x in plan.PRESETS if not p.cut_reason(f"{p.sizes[0]} / {x}")]
    assert (len(recipes), len(presets)) == (4, 6)  # two, fixed; two, instance; consecutive; flip: cut (CPU_CUT)
    choice = len(p.choice_seeds)
    assert choice == 3 and not set(p.choice_seeds) & set(p.seeds)
    n = plan.count(report_studies("cpu", tmp_path / "empty"))
    first = teachers + seeds + seeds * (4 + 3 + 2 + 1)
    second = teachers + seeds * (1 + teachers)
    third = teachers + seeds * len(recipes)
    fourth = teachers + seeds + choice * len(recipes) + seeds * (len(presets) + len(plan.HEADLINE_PRESETS))
    assert n["notebooks"] == {"01_architecture_study": [0, first], "02_overfitting_analysis": [0, second],
                              "03_distillation": [0, third], "04_augmentation_ablation": [0, fourth]}
    # 02's teachers and CE only are 01's prefetch, its students distilled from each teacher its own; 03 adds its
    # two-teacher recipe (single weak and single strong are 02's); 04 adds its recipe choice and its presets
    assert n["total"] == first + seeds * teachers + seeds * 1 + fourth - teachers - seeds == 140
    assert n["recorded"] == 0 and len(n["assumed"]) == 2
    assert n["unknown"] == n["total"] and n["missing_s"] == 0  # an empty ledger knows no run's cost

    class Costs:  # a ledger that has recorded runs alike of every student without teachers: 100 s each, and 10 s
        def estimator(self, kind, levels=(0, 1, 2)):  # for each loss-landscape slice recorded of runs alike
            return lambda cfg, cold=False, derived=(): (None if cfg.teachers or cfg.model.startswith("timm:")
                                                        else 100.0 + 10.0 * len(derived))

    n = plan.count(report_studies("cpu", tmp_path / "empty"), also=[Costs()])
    distilled = seeds * teachers + seeds * 1 + choice * 3  # 02's of one teacher, 03's of two, 04's choice's three
    assert n["unknown"] == teachers + distilled  # 04's presets run under 'CE only' here: no teachers
    # notebook 01 slices the landscapes of BNext and the 3 earlier blocks at every seed, one slice per direction
    directions = p.landscape["directions"]
    assert n["missing_s"] == 100.0 * (n["total"] - n["unknown"]) + 10.0 * directions * seeds * (1 + 3)


def test_the_plan_reads_the_ladder_and_the_recipe_from_recorded_runs(tmp_path, monkeypatch):
    """With the teachers recorded, the ladder is their measured order (not the profile's); with every recipe
    recorded at the choice seeds, notebook 04's recipe is the best mean validation top-1 there, the first of equals;
    the same recipes at the report's seeds do not choose it."""
    s = Study("03_distillation", profile="smoke", regime="overfitting", ledger=tmp_path / "ledger")
    weak, mid, strong = s.teachers
    measured = {weak: 80.0, mid: 70.0, strong: 90.0}  # the profile's middle teacher measured weakest
    base = s.config(teachers=tuple(s.teachers))
    from bnext_lib.config import teacher_config
    records = {config_hash(teacher_config(n, base)): {"final": {"val_top1": v, "test_top1": v}}
               for n, v in measured.items()}
    monkeypatch.setattr(plan, "_recorded", lambda ledger, cfg: records.get(config_hash(cfg)))
    chosen = plan.choices(s)
    assert chosen.ladder == [mid, weak, strong] and "recipe" in chosen.assumed[0]
    recipes = plan.distillation_recipes(chosen.ladder)
    for label, overrides in recipes.items():  # notebook 03's runs, at the report's seeds: no choice
        for c in s.configs(overrides, headline=label in plan.DISTILLATION_HEADLINE):
            records[config_hash(c)] = {"final": {"val_top1": 99.0 if label == "CE only" else 0.0}}
    assert "recipe" in plan.choices(s).assumed[0]
    for k, (label, overrides) in enumerate(plan.recipe_choice(recipes).items()):
        score = 60.0 if label in ("two, fixed 0.5/0.5", "two, adaptive (batch)") else 50.0 + k / 10
        for c in s.configs(overrides, seeds=s.choice_seeds):
            records[config_hash(c)] = {"final": {"val_top1": score}}
    chosen = plan.choices(s)
    assert chosen.recipe == "two, fixed 0.5/0.5" and chosen.assumed == []
    assert plan.ladder_order(["a", "b"], [None, 1.0], [2.0, 1.0]) == ["b", "a"]  # no validation split: test top-1


def test_a_study_that_asks_for_a_run_the_plan_does_not_count_warns(tmp_path):
    """Study.finish holds what the notebook asked for against the plan: an unplanned run, or a planned one never
    asked for, warns (an error under the notebooks' nbval run), because the report's "n of N" would be wrong."""
    s = Study("02_overfitting_analysis", profile="smoke", regime="overfitting", out_dir=tmp_path,
              ledger=tmp_path / "ledger")
    planned = {config_hash(c) for c in plan.notebook_runs(s)}
    s.asked = set(planned)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s.finish()
    s.asked = planned | {"0123456789abcdef"}
    with pytest.warns(UserWarning, match=r"1 run\(s\) asked but not planned \(0123456789abcdef\), 0 planned"):
        s.finish()
    s.asked = planned - {next(iter(planned))}
    with pytest.warns(UserWarning, match=r"0 run\(s\) asked but not planned \(\), 1 planned but not asked"):
        s.finish()


def test_planning_writes_nothing(tmp_path):
    """Opening studies and counting the report creates no folder: a study's record makes its folders when it
    first writes."""
    Study("01_architecture_study", profile="smoke", out_dir=tmp_path / "out", ledger=tmp_path / "ledger")
    plan.count(report_studies("smoke", tmp_path / "ledger"))
    assert not (tmp_path / "out").exists() and not (tmp_path / "ledger").exists()
