"""The streamed benchmark: one line per method and image, resume after a kill, tables, CLI."""

import json
import math

import pytest

from glancemap.evaluation import EvaluationMismatchError, MetricConfig, Run, run_evaluation, summarize, write_tables
from glancemap.images import list_images
from glancemap.methods import CenteredGaussian

FAST = MetricConfig(road_fractions=(0.2, 0.6), deletion_steps=2)


class _Counting:
    """Wraps a method, counting the images it explains; can die after a number of batches."""

    def __init__(self, inner, die_after: int | None = None):
        self.inner, self.die_after, self.images, self.calls = inner, die_after, 0, 0

    def __call__(self, images, targets=None):
        if self.die_after is not None and self.calls >= self.die_after:
            raise KeyboardInterrupt("killed")
        self.calls += 1
        self.images += len(images)
        return self.inner(images, targets)


def test_records_table_and_standard_error(tmp_path, tiny_backbone, tiny_explainer, image_folder):
    files = list_images([image_folder])[:6]
    run = Run(tmp_path / "ev", tiny_backbone, {"backbone": "tiny"}, FAST)
    run_evaluation(
        run, files, {"ptame": lambda: tiny_explainer, "gaussian": CenteredGaussian}, batch_size=4, progress=False
    )
    recs = [json.loads(line) for line in run.results.read_text().splitlines()]
    assert sorted((r["method"], r["file"]) for r in recs) == sorted(
        (m, str(f)) for m in ("ptame", "gaussian") for f in files
    )
    ptame = [r for r in recs if r["method"] == "ptame"]
    assert all(r["auxiliary forward/map"] == 1 and r["backbone forward/map"] == 0 for r in ptame)
    rows = {r["method"]: r for r in summarize(run.results)}
    ad = [r["AD@100"] for r in ptame]
    mean = sum(ad) / 6
    se = math.sqrt(sum((a - mean) ** 2 for a in ad) / 5 / 6)
    assert rows["ptame"]["n"] == 6
    assert rows["ptame"]["AD@100"] == pytest.approx(mean) and rows["ptame"]["AD@100 se"] == pytest.approx(se)
    md, csv_path = write_tables(list(rows.values()), tmp_path / "ev")
    assert "| P-TAME | 6 |" in md.read_text() and "Centred Gaussian" in md.read_text()
    assert csv_path.read_text().splitlines()[0].startswith("method,n,AD@100,AD@100 se")


def test_killed_run_resumes_without_recomputing(tmp_path, tiny_backbone, image_folder):
    files = list_images([image_folder])[:8]
    run = Run(tmp_path / "ev", tiny_backbone, {"backbone": "tiny"}, FAST)
    dying = _Counting(CenteredGaussian(), die_after=1)
    with pytest.raises(KeyboardInterrupt):
        run_evaluation(run, files, {"gaussian": lambda: dying}, batch_size=3, progress=False)
    assert len(run.results.read_text().splitlines()) == 3
    with open(run.results, "a") as fh:  # a write torn by the kill
        fh.write('{"method": "gaussian", "file": "x", "AD@1')
    again = _Counting(CenteredGaussian())
    run_evaluation(run, files, {"gaussian": lambda: again}, batch_size=3, progress=False)
    assert again.images == 5  # only the images not finished before
    recs = [json.loads(line) for line in run.results.read_text().splitlines()]
    assert sorted(r["file"] for r in recs) == sorted(map(str, files))
    # nothing left: the method is not even built
    run_evaluation(run, files, {"gaussian": lambda: pytest.fail("built for no work")}, progress=False)


def test_other_settings_refuse_the_folder(tmp_path, tiny_backbone, image_folder):
    files = list_images([image_folder])[:2]
    run_evaluation(
        Run(tmp_path / "ev", tiny_backbone, {"backbone": "tiny"}, FAST),
        files,
        {"gaussian": CenteredGaussian},
        progress=False,
    )
    other = MetricConfig(road_fractions=(0.2, 0.6), deletion_steps=2, imputation="linear")
    with pytest.raises(EvaluationMismatchError, match="imputation"):
        run_evaluation(
            Run(tmp_path / "ev", tiny_backbone, {"backbone": "tiny"}, other),
            files,
            {"gaussian": CenteredGaussian},
            progress=False,
        )
    # methods carry their own identity: a new one joins the folder, a changed one is refused
    run_evaluation(
        Run(tmp_path / "ev", tiny_backbone, {"backbone": "tiny"}, FAST, {"ptame": {"sha": "a"}}),
        files,
        {"gaussian": CenteredGaussian},
        progress=False,
    )
    with pytest.raises(EvaluationMismatchError, match="method ptame"):
        Run(tmp_path / "ev", tiny_backbone, {"backbone": "tiny"}, FAST, {"ptame": {"sha": "b"}}).open()


def test_evaluate_command(tmp_path, tiny_explainer, image_folder, capsys):
    from glancemap.cli import main

    tiny_explainer.save(tmp_path / "expl")
    (image_folder / "broken.png").write_bytes(b"not a png")
    out = tmp_path / "ev"
    args = [
        "evaluate",
        "--data",
        str(image_folder),
        "--explainer",
        str(tmp_path / "expl"),
        "--out",
        str(out),
        "--methods",
        "ptame,gradcam,auxcam,rise,opticam",
        "--limit",
        "5",
        "--limit-for",
        "rise=3",
        "--rise-masks",
        "8",
        "--limit-for",
        "opticam=3",
        "--opticam-steps",
        "2",
        "--road-fractions",
        "0.3,0.6",
        "--deletion-steps",
        "2",
        "--batch-size",
        "2",
        "--no-progress",
        "--also",
        f"copy={tmp_path / 'expl'}",
    ]
    assert main(args) == 0
    text = capsys.readouterr().out
    for label in (
        "| P-TAME | 4 |",
        "| Grad-CAM | 4 |",
        "| Auxiliary CAM | 4 |",
        "| RISE | 2 |",
        "| Opti-CAM | 2 |",
        "| P-TAME (copy) | 4 |",
    ):
        assert label in text  # 5 files, one broken (it sorts first)
    assert (out / "table.csv").exists()
    rise = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines() if '"rise"' in x]
    assert all(r["backbone forward/map"] == 8 for r in rise)
    opti = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines() if '"opticam"' in x]
    assert opti and all((r["backbone forward/map"], r["backbone backward/map"]) == (3, 2) for r in opti)
    recs = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    same = {r["file"]: r["AD@100"] for r in recs if r["method"] == "ptame"}
    assert same == {r["file"]: r["AD@100"] for r in recs if r["method"] == "ptame-copy"}
    assert main(args + ["--methods", "bogus"]) == 2


def test_paired_differences_by_hand(tmp_path):
    from glancemap.evaluation import paired_differences, write_paired_table

    lines = [
        {"method": "ptame", "file": "a", "AD@100": 10.0},
        {"method": "ptame", "file": "b", "AD@100": 20.0},
        {"method": "gradcam", "file": "a", "AD@100": 15.0},
        {"method": "gradcam", "file": "b", "AD@100": 21.0},
        {"method": "gradcam", "file": "c", "AD@100": 99.0},
    ]  # c: not scored by ptame, left out
    path = tmp_path / "results.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    (row,) = paired_differences(path, "ptame")
    assert row["n"] == 2 and row["AD@100"] == pytest.approx(-3.0)  # diffs -5 and -1
    assert row["AD@100 se"] == pytest.approx(math.sqrt(8 / 1 / 2))
    assert "| Grad-CAM | 2 | -3.00 ± 2.00 |" in write_paired_table([row], "ptame", tmp_path / "p.md").read_text()


def test_evaluate_multi_scale_counts_passes_and_keeps_folders_apart(tmp_path, tiny_explainer, image_folder, capsys):
    from glancemap.cli import main

    tiny_explainer.save(tmp_path / "expl")
    out = tmp_path / "ev"
    base = [
        "evaluate",
        "--data",
        str(image_folder),
        "--explainer",
        str(tmp_path / "expl"),
        "--out",
        str(out),
        "--limit",
        "2",
        "--road-fractions",
        "0.5",
        "--deletion-steps",
        "0",
        "--no-progress",
    ]
    side = tiny_explainer.features.input_size[0] * 2
    assert main(base + ["--methods", "ptame,ptame-single", "--aux-sides", str(side // 2), str(side)]) == 0
    assert "| P-TAME (one pass) | 2 |" in capsys.readouterr().out
    recs = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    passes = {(r["method"], r["auxiliary forward/map"]) for r in recs}
    assert len(recs) == 4 and passes == {("ptame", 2), ("ptame-single", 1)}  # one pass per size
    maps_differ = {r["file"]: r["AD@100"] for r in recs if r["method"] == "ptame"}
    assert maps_differ != {r["file"]: r["AD@100"] for r in recs if r["method"] == "ptame-single"}
    run = json.loads((out / "run.json").read_text())
    assert run["methods"]["ptame"]["extra_aux_sizes"] == [[side, side]]
    assert "extra_aux_sizes" not in run["methods"]["ptame-single"]
    assert main(base + ["--methods", "ptame"]) == 2  # single-pass maps are another method: not mixed in
    assert "other settings" in capsys.readouterr().err
