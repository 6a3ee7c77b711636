"""The ledger: records that outlive the machine, are checked before use, are trained once, and let a report be
built in parts."""
import multiprocessing as mp
import time

import pytest
import torch

from bnext_lib.config import config_hash
from bnext_lib.ledger import Ledger, LedgerError, dumps, weights_sha256
from bnext_lib.runs import Run, RunsWaiting, run_many, run_one
from tiny import tiny_config


@pytest.fixture
def trained(tmp_path):
    """A tiny run, recorded in a ledger of its own."""
    ledger = Ledger(tmp_path / "ledger")
    run = run_one(tiny_config(seed=3), tmp_path / "runs", ledger)
    return ledger, run


@pytest.mark.slow
def test_a_record_holds_what_the_report_and_an_auditor_need(trained):
    ledger, run = trained
    record = ledger.get(run.config)
    assert record == run.record and record["digest"] == config_hash(run.config) == run.digest
    assert record["config"]["threads"] == 1 and "out" not in record["config"]  # rounding-relevant, not where
    assert record["machine"]["cpu"] and record["machine"]["torch"] == torch.__version__ and record["commit"]
    assert record["history"][-1] == record["final"] and record["trace"] and record["wall_s"] > 0
    assert record["weights_sha256"] == weights_sha256(run.weights()) and record["params"] > 0
    text = ledger.path(run.digest).read_text()
    assert text == dumps(record) and "/tmp" not in text  # plain, diffable JSON without absolute paths
    assert ledger.write_index().read_text().splitlines()[0].startswith("digest,model,seed")


@pytest.mark.slow
def test_the_ledger_is_read_before_this_machine_s_run_cache_and_training(trained, tmp_path, monkeypatch):
    """A new machine (an empty run cache) finds the run in the ledger and trains nothing."""
    import bnext_lib.runs as runs_mod

    ledger, run = trained
    monkeypatch.setattr(runs_mod, "train", lambda *a, **k: pytest.fail("a recorded run was trained again"))
    again = run_many([run.config], tmp_path / "new-machine", ledger=ledger, verbose=False)[0]
    assert again.record == run.record and again.folder is None
    with pytest.raises(LedgerError, match="neither committed nor on this machine"):
        again.load_model()  # a student's weights stay on the machine that trained it


@pytest.mark.parametrize("damage, message", [
    (lambda text: text[: len(text) // 2], "truncated or not JSON"),
    (lambda text: "\x00\x01 not json", "truncated or not JSON"),
    (lambda text: text.replace('"schema": 1', '"schema": 9'), "schema 9, this code reads schema 1"),
    (lambda text: text.replace('"weights_sha256"', '"weights"'), "missing weights_sha256"),
    (lambda text: text.replace('"seed": 3', '"seed": 4'), "its configuration's digest is"),
])
@pytest.mark.slow
def test_a_damaged_record_is_named_in_one_line_and_never_used(trained, tmp_path, monkeypatch, damage, message):
    import bnext_lib.runs as runs_mod

    ledger, run = trained
    path = ledger.path(run.digest)
    path.write_text(damage(path.read_text()))
    monkeypatch.setattr(runs_mod, "train", lambda *a, **k: pytest.fail("trained over a damaged record"))
    with pytest.raises(LedgerError, match=message) as e:
        run_many([run.config], tmp_path / "new-machine", ledger=ledger, verbose=False)
    assert str(path) in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(LedgerError, match=message):
        list(ledger.records())


@pytest.mark.slow
def test_a_run_only_in_this_machine_s_cache_reaches_the_ledger_without_training(trained, tmp_path, monkeypatch):
    import bnext_lib.runs as runs_mod

    _, run = trained
    fresh = Ledger(tmp_path / "another-ledger")
    monkeypatch.setattr(runs_mod, "train", lambda *a, **k: pytest.fail("a run of the run cache was trained again"))
    again = run_many([run.config], tmp_path / "runs", ledger=fresh, verbose=False)[0]
    assert fresh.get(run.config) == again.record == run.record


def test_a_record_is_checked_before_it_is_written(tmp_path):
    with pytest.raises(LedgerError, match="missing"):
        Ledger(tmp_path).put({"schema": 1, "digest": "abc"})
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
def test_committed_weights_are_checked_against_their_hash(trained):
    ledger, run = trained
    state = run.weights()
    ledger.put_weights(run.digest, state)
    loaded = ledger.load_weights(run.digest, run.record["weights_sha256"])
    assert all(torch.equal(loaded[k], v) for k, v in state.items())
    tampered = dict(state, **{k: v + 1 for k, v in list(state.items())[:1]})
    ledger.put_weights(run.digest, tampered)
    with pytest.raises(LedgerError, match="is not the recorded"):
        ledger.load_weights(run.digest, run.record["weights_sha256"])


@pytest.mark.slow
def test_a_committed_teacher_reproduces_its_recorded_accuracy_exactly(tmp_path, monkeypatch):
    """A student's teacher is committed with its weights; on a new machine the student loads it from the ledger,
    and the loaded teacher's test top-1 is the recorded one, to the last digit."""
    import bnext_lib.runs as runs_mod
    from bnext_lib.train import evaluate, evaluation_splits

    ledger = Ledger(tmp_path / "ledger")
    cfg = tiny_config(teachers=("timm:resnet10t",), teacher_epochs=1)
    student = run_one(cfg, tmp_path / "runs", ledger)
    teacher = student.record["teachers"]["timm:resnet10t"]
    assert ledger.weights_path(teacher["digest"]).exists()
    monkeypatch.setattr(runs_mod, "train", lambda *a, **k: pytest.fail("a committed teacher was trained again"))
    loaded = runs_mod.load_teachers(cfg, tmp_path / "new-machine", ledger)["timm:resnet10t"]
    assert (loaded.digest, loaded.weights_sha256) == (teacher["digest"], teacher["weights_sha256"])
    t_run = Run.load(runs_mod.teacher_config("timm:resnet10t", cfg), tmp_path / "new-machine", ledger)
    splits, augmenter = evaluation_splits(t_run.config)
    _, top1 = evaluate(loaded.model, splits["test"], augmenter, torch.device("cpu"))
    assert top1 == t_run.final["test_top1"] == teacher["test_top1"]


@pytest.mark.slow
def test_a_new_engine_numerics_version_does_not_mix_with_older_records(trained, tmp_path, monkeypatch):
    """Bumping NUMERICS (a change that moves a run's numbers) changes every digest: the older record is not found
    under the new one, so the run trains again instead of being mixed in; the older record stays, readable."""
    import bnext_lib.config as config_mod

    ledger, run = trained
    monkeypatch.setattr(config_mod, "NUMERICS", 2)
    assert config_hash(run.config) != run.digest and not ledger.has(run.config)
    with pytest.raises(LedgerError, match="its configuration's digest is"):
        ledger.read(ledger.path(run.digest))  # under the new engine the old record is named, never used


def test_a_deadline_leaves_runs_for_the_next_part(tmp_path, monkeypatch):
    """Under a deadline a run whose expected cost would not fit is not started: run_many raises RunsWaiting (with
    ``partial``: None in its place), and nothing half-trained is recorded."""
    import bnext_lib.runs as runs_mod

    ledger = Ledger(tmp_path / "ledger")
    monkeypatch.setenv(runs_mod.DEADLINE_ENV, str(time.time() - 1))
    monkeypatch.setattr(runs_mod, "train", lambda *a, **k: pytest.fail("a run was started past the deadline"))
    cfgs = [tiny_config(seed=s) for s in (0, 1)]
    with pytest.raises(RunsWaiting, match="2 run\\(s\\) wait for the next part") as e:
        run_many(cfgs, tmp_path / "runs", ledger=ledger, verbose=False)
    assert e.value.configs == cfgs and e.value.done == 0
    assert run_many(cfgs, tmp_path / "runs", ledger=ledger, verbose=False, partial=True) == [None, None]
    assert not list(ledger.records())


@pytest.mark.slow
def test_the_expected_cost_comes_from_recorded_runs_of_the_same_variant_and_machine_kind(trained):
    ledger, run = trained
    kind = "AMD EPYC [avx2]"
    record = dict(run.record, machine=dict(run.record["machine"], cpu="AMD EPYC", isa=["avx2"]), wall_s=100.0)
    ledger.put(record)
    other = tiny_config(seed=8)  # the same variant at another seed
    assert ledger.estimate(other, kind) == 100.0
    assert ledger.estimate(other, "another CPU []") == 100.0  # no run of this kind: any machine's
    assert ledger.estimate(tiny_config(epochs=5), kind) is None  # nothing alike recorded


def _train_in_a_process(args):
    """In a spawned process: ask for the run, leaving a marker file for every training that really starts."""
    import os

    import bnext_lib.runs as runs_mod

    cfg, root, ledger_root, markers = args
    real = runs_mod.train

    def counted(*a, **k):
        (markers / f"trained-by-{os.getpid()}").write_text("")
        return real(*a, **k)

    runs_mod.train = counted
    return run_one(cfg, root, Ledger(ledger_root)).digest


@pytest.mark.slow
def test_two_processes_asking_for_one_digest_train_it_once(tmp_path):
    cfg = tiny_config(seed=11, epochs=2)
    markers = tmp_path / "markers"
    markers.mkdir()
    ctx = mp.get_context("spawn")
    with ctx.Pool(2) as pool:
        digests = pool.map(_train_in_a_process, [(cfg, tmp_path / "runs", tmp_path / "ledger", markers)] * 2)
    assert digests == [config_hash(cfg)] * 2
    assert len(list(markers.iterdir())) == 1  # the second process waited on the digest's lock and found the record
    assert len(list((tmp_path / "ledger").glob("*.json"))) == 1


def test_tests_never_touch_this_machine_s_run_cache_or_a_committed_ledger():
    from bnext_lib.ledger import ledger_dir
    from bnext_lib.runs import runs_root

    for path in (runs_root(), ledger_dir("cpu"), ledger_dir("smoke")):
        assert "build" in path.parts, path  # build/test/ (build/test-avx2/ ... under make test-portable)


@pytest.mark.slow
def test_a_student_waits_with_its_teacher_and_only_then(trained, tmp_path, monkeypatch):
    """Under a deadline, a teacher whose recorded cost would not fit waits, and so do its students; a student whose
    teacher fits trains in the same part."""
    import dataclasses

    import bnext_lib.runs as runs_mod
    from bnext_lib.config import teacher_config
    from bnext_lib.ledger import record_config

    ledger, run = trained
    slow = tiny_config(teachers=("timm:resnet10t",), teacher_epochs=1)
    quick = tiny_config(teachers=("timm:mobilenetv3_small_050",), teacher_epochs=1)
    # the slow teacher's kind of run was recorded as taking a day (another subset draw: the same variant)
    other = dataclasses.replace(teacher_config("timm:resnet10t", slow), subset_seed=1)
    ledger.put(dict(run.record, config=record_config(other), digest=config_hash(other), wall_s=86400.0))
    monkeypatch.setenv(runs_mod.DEADLINE_ENV, str(time.time() + 600))
    runs = run_many([slow, quick], tmp_path / "runs", ledger=ledger, verbose=False, partial=True)
    assert runs[0] is None and runs[1] is not None
    assert not ledger.has(teacher_config("timm:resnet10t", slow)) and ledger.has(quick)


def test_a_part_counts_the_compilation_once_per_graph(monkeypatch):
    """A compiled run's record says what its first step cost beyond an ordinary one; the estimate of a warm run
    leaves that out, and the first run of a graph in a part (``cold``) pays it."""
    from bnext_lib.ledger import compile_seconds, graph_key, record_config

    cfg = tiny_config(compile=True)
    record = {"config": record_config(cfg), "machine": {"cpu": "AMD EPYC", "isa": ["avx2"]}, "wall_s": 350.0,
              "history": [{"first_step_s": 105.2, "train_images_s": 160.0}]}
    assert compile_seconds(record) == pytest.approx(105.2 - 32 / 160.0)
    assert compile_seconds(dict(record, config=record_config(tiny_config()))) == 0.0  # not compiled
    assert compile_seconds(dict(record, history=[{"train_images_s": 160.0}])) == 0.0  # recorded before timing
    ledger = Ledger("unused")
    monkeypatch.setattr(Ledger, "records", lambda self, skip_bad=False: iter([record]))
    expected = ledger.estimator("AMD EPYC [avx2]")
    warm = 350.0 - compile_seconds(record)
    assert expected(tiny_config(compile=True, seed=3)) == pytest.approx(warm)
    assert expected(tiny_config(compile=True, seed=3), cold=True) == pytest.approx(350.0)
    assert graph_key(tiny_config(compile=True, seed=3, order_seed=9)) == graph_key(cfg)  # seeds share a graph
    # a run that computes its loss landscape when it finishes pays that too, at its recorded cost (a block run of
    # the cpu report: ~230 s beside ~300 s of training, which a part's budget had left out)
    timed = dict(record, derived_s={"landscape_a": 200.0, "landscape_b": 40.0})
    monkeypatch.setattr(Ledger, "records", lambda self, skip_bad=False: iter([timed]))
    expected = ledger.estimator("AMD EPYC [avx2]")
    assert expected(tiny_config(compile=True, seed=3), derived=["landscape_a", "landscape_b"]) == pytest.approx(
        warm + 240.0)
    assert expected(tiny_config(compile=True, seed=3), derived=["landscape_never_timed"]) == pytest.approx(warm)


def test_a_part_prices_a_variant_the_report_never_recorded_from_the_choice_ledger(monkeypatch, tmp_path):
    """Notebook 04's augmentation runs had been trained on choice seeds (the recipe's choice) before the report
    trained one: a part's budget reads their cost from the choice ledger beside the report's, after its own
    ledger, instead of starting them with no estimate; a variant neither recorded still has none."""
    from bnext_lib.ledger import choice_ledger_beside, ledger_dir, record_config

    for env in (None, str(tmp_path)):  # the committed folders, and a scratch $BNEXT_LEDGER
        if env:
            monkeypatch.setenv("BNEXT_LEDGER", env)
        else:
            monkeypatch.delenv("BNEXT_LEDGER", raising=False)
        assert choice_ledger_beside(ledger_dir("cpu")) == ledger_dir("cpu", choice=True)
    report, choice = Ledger(tmp_path / "ledger"), Ledger(tmp_path / "choice-ledger")
    overfit, full = tiny_config(train_subset=1000, epochs=12), tiny_config(seed=2)
    kind = {"cpu": "AMD EPYC", "isa": ["avx2"]}
    held = {report.root: [{"config": record_config(full), "machine": kind, "wall_s": 385.0}],
            choice.root: [{"config": record_config(tiny_config(train_subset=1000, epochs=12, seed=1000)),
                           "machine": kind, "wall_s": 485.0},
                          {"config": record_config(tiny_config(seed=1000)), "machine": kind, "wall_s": 900.0}]}
    monkeypatch.setattr(Ledger, "records", lambda self, skip_bad=False: iter(held[self.root]))
    assert report.estimator("AMD EPYC [avx2]")(overfit) is None
    expected = report.estimator("AMD EPYC [avx2]", also=[Ledger(choice_ledger_beside(report.root))])
    assert expected(overfit) == pytest.approx(485.0)
    assert expected(full) == pytest.approx(385.0)  # the report's own records first
    assert expected(tiny_config(model="bnext_nano", train_subset=7)) is None


def test_a_part_prices_a_student_of_more_teachers_than_recorded_on_the_line_through_fewer(monkeypatch):
    """Notebook 03's two-teacher students had no run alike recorded when a part started them, so they started with
    no estimate and ran the part past its budget: they are priced on the line through the recorded CE and
    one-teacher students of the same shape (each teacher adds its forward pass to every step); with a single
    number of teachers recorded there is no line, and no estimate."""
    from bnext_lib.ledger import record_config

    kind = {"cpu": "AMD EPYC", "isa": ["avx2"]}
    # recorded at notebook 02's rhythm (its curves evaluate every 6 epochs), asked for at notebook 03's (at the end)
    ce = tiny_config(train_subset=1000, epochs=12, eval_every=6)
    one = tiny_config(train_subset=1000, epochs=12, eval_every=6, teachers=("timm:resnet10t",))
    two = tiny_config(train_subset=1000, epochs=12, eval_every=12,
                      teachers=("timm:resnet10t", "timm:mobilenetv3_small_050"))
    held = [{"config": record_config(ce), "machine": kind, "wall_s": w} for w in (480.0, 484.0, 490.0)]
    held += [{"config": record_config(one), "machine": kind, "wall_s": w, "derived_s": {"slice": 20.0}}
             for w in (575.0, 580.0)]
    monkeypatch.setattr(Ledger, "records", lambda self, skip_bad=False: iter(held))
    expected = Ledger("unused").estimator("AMD EPYC [avx2]")
    assert expected(two) == pytest.approx(484.0 + 2 * (577.5 - 484.0))
    assert expected(two, derived=["slice"]) == pytest.approx(484.0 + 2 * (577.5 - 484.0) + 20.0)
    assert expected(tiny_config(train_subset=1000, epochs=12, eval_every=6, seed=4)) == pytest.approx(484.0)
    assert expected(tiny_config(train_subset=1000, epochs=24, teachers=two.teachers)) is None  # another shape
    held[3:] = []
    assert Ledger("unused").estimator("AMD EPYC [avx2]")(two) is None  # one number of teachers: no line


def test_the_ledger_summary_counts_cpu_hours_by_each_run_s_threads(monkeypatch, tmp_path):
    """Worker-hours are wall time; CPU-hours weigh each run's wall time by the torch threads it trained with (a run
    recorded without a thread count counts one), so that ledgers trained with one and with two threads a run add up."""
    from bnext_lib.ledger import record_config

    amd = {"cpu": "AMD EPYC", "isa": ["avx2"], "torch_threads": 1}
    held = [{"config": record_config(tiny_config()), "machine": amd, "wall_s": 1800.0, "commit": "a" * 40},
            {"config": record_config(tiny_config(seed=1)), "machine": dict(amd, torch_threads=2), "wall_s": 1800.0,
             "commit": "b" * 40},
            {"config": record_config(tiny_config(seed=2)), "machine": {"cpu": "AMD EPYC", "isa": ["avx2"]},
             "wall_s": 3600.0, "commit": "a" * 40}]
    monkeypatch.setattr(Ledger, "records", lambda self, skip_bad=False: iter(held))
    s = Ledger(tmp_path).summary()
    assert (s["runs"], s["hours"], s["cpu_hours"]) == (3, 2.0, 2.5)
    assert s["machines"] == {"AMD EPYC [avx2]": 3} and s["commits"] == ["aaaaaaa", "bbbbbbb"]


@pytest.mark.slow
def test_a_record_missing_a_derived_value_is_completed_by_training_it_again_identically(trained, tmp_path):
    """A new machine of the record's kind asks for a value of the run's weights the record lacks (another direction
    seed of its landscape): it re-trains the run, which must come out identical (SHA-256), and completes the record;
    on another kind of machine it is named, never guessed."""
    from bnext_lib.ledger import same_machine

    ledger, run = trained
    spec = ("landscape", 3, 1.0, 16, 5)
    fresh = run_many([run.config], tmp_path / "new-machine", ledger=ledger, verbose=False,
                     derive={run.digest: [spec]})[0]
    assert "landscape_s3_w1_n16_seed5" in fresh.record["derived"] and fresh.record["final"] == run.record["final"]
    assert "landscape_s3_w1_n16_seed5" in ledger.get(run.config)["derived"]
    assert ledger.get(run.config)["derived_s"]["landscape_s3_w1_n16_seed5"] > 0  # its cost, for a part's estimate
    other = dict(run.record["machine"], cpu="another CPU")
    assert same_machine(run.record["machine"], run.record["machine"]) and not same_machine(other, run.record["machine"])
    ledger.put(dict(ledger.get(run.config), machine=other))
    with pytest.raises(LedgerError, match="re-trained identically to recover them"):
        run_many([run.config], tmp_path / "third-machine", ledger=ledger, verbose=False,
                 derive={run.digest: [("landscape", 3, 1.0, 16, 6)]})


@pytest.mark.slow
def test_the_audit_re_trains_a_run_identically_and_catches_a_record_that_lies(trained, tmp_path, capsys):
    """make audit's path: a run re-trained on a machine of its kind must be identical (exit 0); a record whose
    metrics were edited by hand is caught (exit 1); elsewhere the tolerance is the profile's measured spread."""
    from bnext_lib import audit

    ledger, run = trained
    assert audit.main(["--ledger", str(ledger.root), "--digest", run.digest]) == 0
    out = capsys.readouterr().out
    assert "identical" in out and "1 of 1 runs within tolerance" in out
    ledger.put(dict(run.record, final=dict(run.record["final"], test_top1=run.record["final"]["test_top1"] + 0.5)))
    assert audit.main(["--ledger", str(ledger.root), "--digest", run.digest]) == 1
    assert f"outside: {run.digest}" in capsys.readouterr().out
    spread = tmp_path / "kernel_variance.csv"
    spread.write_text("variant,seed,difference\nCE,0,0.4\nCE,1,-0.9\n")
    other = dict(run.record["machine"], cpu="another CPU")
    assert audit.tolerance(dict(run.record, machine=other), run.record["machine"], spread)[0] == pytest.approx(0.9)
    assert audit.tolerance(run.record, run.record["machine"], spread)[0] == 0.0
    with pytest.raises(FileNotFoundError, match="cross-kernel spread"):
        audit.tolerance(dict(run.record, machine=other), run.record["machine"], tmp_path / "none.csv")


def test_the_audit_samples_what_fits_its_budget_and_at_least_three_runs():
    """The seeded sample takes the runs whose recorded times fit the budget, then the next ones in the same order
    that alone fit it, until three are taken; the same seed gives the same sample, named runs are taken as named."""
    from bnext_lib.audit import choose

    records = [{"digest": f"{i:016x}", "wall_s": s} for i, s in enumerate([500, 480, 510, 90, 530, 3700])]
    order = choose(records, seed=0, budget_s=1e9, at_least=0)  # everything fits: the seeded order itself
    assert len(order) == 6 and order == choose(records, seed=0, budget_s=1e9)  # the floor adds nothing
    # 540 s: the first run of the order that fits, no second one beside it; then the order's next two that alone fit
    three = choose(records, seed=0, budget_s=540)
    assert three == [r for r in order if r["wall_s"] <= 540][:3] and three == choose(records, seed=0, budget_s=540)
    # 100 s: only the 90-s run fits, alone or not: the floor never adds a run the budget could not hold
    assert [r["wall_s"] for r in choose(records, seed=0, budget_s=100)] == [90]
    assert len(choose(records, seed=0, budget_s=600, at_least=10)) == 5  # all that alone fit, no error
    assert [r["digest"] for r in choose(records, 0, 60, digests=["0000000000000004"])] == ["0000000000000004"]
    with pytest.raises(ValueError, match="not in the ledger: ff"):
        choose(records, 0, 60, digests=["ff"])
