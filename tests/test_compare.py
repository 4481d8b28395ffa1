"""``decoderlab-compare``: variants from varying keys, mean ± Student-t 95% CI over seeds, failed runs kept,
plots, and a self-contained HTML report checked in a real headless browser."""

from __future__ import annotations

import csv
import json
import math
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from decoderlab.compare import build_report, main
from decoderlab.compare.plots import band, ema
from decoderlab.compare.runs import load
from decoderlab.compare.stats import mean_ci, t975
from decoderlab.compare.table import group

BPB = {"learned": [2.10, 2.14, 2.12], "rope": [2.00, 2.03, 2.01]}


def fake_run(d: Path, positional: str, seed: int, bpb: float | None, status: str = "completed") -> None:
    """A run directory as decoderlab-train writes it (config, overrides, status, summary, metrics.csv)."""
    (d / ".hydra").mkdir(parents=True)
    cfg = {"seed": seed, "model": {"d_model": 16, "positional": {"name": positional}}, "logger": {"csv": {}}}
    (d / "config.yaml").write_text(yaml.safe_dump(cfg))
    (d / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(
        ["model.d_model=16", f"model/positional={positional}", f"seed={seed}", "logger=csv"]))
    (d / "status.json").write_text(json.dumps({"status": status}))
    rows = [("step", "train/loss", "val/loss", "val/bpb")]
    final = bpb if bpb is not None else 3.0
    rows += [(s, 3.0 - s / 100 + 0.05 * (s % 20 == 9), "", "") for s in range(9, 99, 10)]  # train-only rows
    rows += [(s, 2.5, final * 0.7 + (99 - s) / 200, final + (99 - s) / 100) for s in (49, 99)]
    with open(d / "metrics.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows)
    if status == "completed":
        summary = {"val_loss": final * 0.7, "val_bpb": final, "tokens_per_s": 1000.0 + seed, "wall_seconds": 10.0,
                   "total_seconds": 12.0, "train_seconds": 8.0, "steps": 100, "params": {"total": 5000, "non_embedding": 4000},
                   "choices": {"model/positional": positional, "logger": "csv"}}
        (d / "summary.json").write_text(json.dumps(summary))


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    sw = tmp_path / "sweep"
    n = 0
    for pos, values in BPB.items():
        for seed, bpb in enumerate(values):
            fake_run(sw / str(n), pos, seed, bpb)
            n += 1
    fake_run(sw / "6", "rope", 3, None, status="running")  # killed: never finished
    jobs = [{"num": 6, "dir": str(sw / "6"), "status": "failed", "reason": "killed by SIGKILL"},
            {"num": 7, "dir": str(sw / "7"), "status": "failed",
             "overrides": ["model.d_model=16", "model/positional=alibi", "seed=0", "logger=csv"],
             "reason": "invalid configuration: no alibi here"}]  # never got a directory
    (sw / "sweep_summary.json").write_text(json.dumps({"jobs": jobs}))
    (sw / ".attempts" / "1-old").mkdir(parents=True)  # set-aside attempts are not runs
    (sw / ".attempts" / "1-old" / "status.json").write_text('{"status": "failed"}')
    return sw


def test_student_t_quantiles_and_interval():
    for df, t in ((1, 12.706), (2, 4.303), (4, 2.776), (29, 2.045), (100, 1.984), (10_000, 1.960)):
        assert t975(df) == pytest.approx(t, abs=1e-3)
    ci = mean_ci([2.10, 2.14, 2.12])
    assert ci.mean == pytest.approx(2.12) and ci.n == 3
    assert ci.half == pytest.approx(4.3027 * 0.02 / math.sqrt(3), rel=1e-4)  # s = 0.02
    assert math.isnan(mean_ci([1.0]).half) and mean_ci([]).n == 0


def test_report_groups_by_varying_keys_with_seed_ci_and_keeps_failed_runs(sweep: Path, tmp_path: Path):
    files = build_report([sweep], tmp_path / "out")
    with open(files["csv"]) as f:
        table = {r["variant"]: r for r in csv.DictReader(f)}
    assert set(table) == {"model/positional=learned", "model/positional=rope", "model/positional=alibi"}
    for pos, values in BPB.items():
        row = table[f"model/positional={pos}"]
        ci = mean_ci(values)
        assert float(row["val_bpb_mean"]) == pytest.approx(ci.mean)
        assert float(row["val_bpb_ci95"]) == pytest.approx(ci.half)
        assert row["val_bpb_n"] == "3" and row["params_total"] == "5000"
    assert table["model/positional=rope"]["failed"] == "1"  # the killed seed: counted, not averaged
    assert table["model/positional=alibi"]["completed"] == "0"

    md = files["markdown"].read_text()
    assert "| model/positional=rope | 3/4 | " in md and "2.0133 ± " in md
    assert "killed by SIGKILL" in md and "invalid configuration: no alibi here" in md
    runs = list(csv.DictReader(open(files["runs_csv"])))
    assert len(runs) == 8 and sum(r["status"] == "failed" for r in runs) == 2
    for name in ("val_bpb_vs_step", "val_bpb_vs_time", "train_loss_vs_step"):
        assert files[name].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and files[name].stat().st_size > 5000

    page = files["html"].read_text()
    assert page.count("data:image/png;base64,") == 3
    assert not re.search(r"""(src|href)=["']?(https?:|//|file:)""", page) and "<script" not in page
    assert "killed by SIGKILL" in page and 'id="results"' in page


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="needs the chromium binary (apt-get install -y chromium)")
def test_html_report_renders_in_a_headless_browser(sweep: Path, tmp_path: Path):
    files = build_report([sweep], tmp_path / "out")
    # A copy with a probe that records, once the page has loaded, what the browser decoded.
    probe = tmp_path / "probe.html"
    probe.write_text(files["html"].read_text().replace("</body>", (
        "<script>addEventListener('load', () => document.body.setAttribute('data-probe', JSON.stringify({"
        "images: [...document.images].map(i => i.complete ? i.naturalWidth : -1),"
        "rows: document.querySelectorAll('#results tbody tr').length}))) </script></body>")))
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--no-first-run", f"--user-data-dir={tmp_path / 'chrome'}",
           "--virtual-time-budget=5000", "--dump-dom", probe.as_uri()]
    dom = subprocess.run(cmd, capture_output=True, text=True, timeout=120).stdout
    found = re.search(r"data-probe=\"([^\"]+)\"", dom)
    assert found, dom[:2000]
    probe_data = json.loads(found.group(1).replace("&quot;", '"'))
    assert probe_data["rows"] == 3
    assert len(probe_data["images"]) == 3 and all(w == 800 for w in probe_data["images"])  # decoded 8x4.8 in @100 dpi
    assert "killed by SIGKILL" in dom and "decoderlab comparison" in dom


def test_a_moved_sweep_keeps_its_launcher_records(sweep: Path, tmp_path: Path):
    moved = tmp_path / "elsewhere"
    shutil.copytree(sweep, moved)
    shutil.rmtree(sweep)  # the recorded absolute job paths no longer exist
    runs = list(csv.DictReader(open(build_report([moved], tmp_path / "out")["runs_csv"])))
    assert len(runs) == 8  # no job counted twice
    assert next(r for r in runs if r["dir"].endswith("/6"))["reason"] == "killed by SIGKILL"


def test_cli_writes_the_report_and_bad_input_is_a_clear_error(sweep: Path, tmp_path: Path, capsys):
    main([str(sweep / "0"), str(sweep / "3"), "--out", str(tmp_path / "two")])  # run directories work too
    assert (tmp_path / "two" / "report.html").is_file()
    with pytest.raises(SystemExit) as e:
        main([str(tmp_path / "nope")])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "error: no such directory" in err and "Traceback" not in err
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit):
        main([str(tmp_path / "empty")])
    assert "no run directories" in capsys.readouterr().err


def _csv(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


def test_metric_chooses_the_ranking(sweep: Path, tmp_path: Path):
    by_bpb = _csv(build_report([sweep], tmp_path / "a")["csv"])
    assert [r["variant"] for r in by_bpb] == ["model/positional=rope", "model/positional=learned",
                                               "model/positional=alibi"]  # lower bpb first; no value last
    md = (tmp_path / "a" / "report.md").read_text()
    assert "ranked by val bits/byte (lower is better)" in md and "| 1 | model/positional=rope |" in md
    assert "| - | model/positional=alibi |" in md
    files = build_report([sweep], tmp_path / "c", metric="val_loss")
    assert files["val_loss_vs_step"].is_file() and "val_bpb_vs_step" not in files
    with pytest.raises(SystemExit):
        main([str(sweep), "--metric", "nope"])


def test_metric_higher_is_better_for_throughput(tmp_path: Path):
    sw = tmp_path / "sw"
    fake_run(sw / "0", "learned", 5, 2.0)  # tokens/s 1005
    fake_run(sw / "1", "rope", 0, 2.5)  # tokens/s 1000
    assert [r["variant"] for r in _csv(build_report([sw], tmp_path / "o", metric="tokens_per_s")["csv"])] == [
        "model/positional=learned", "model/positional=rope"]
    assert [r["variant"] for r in _csv(build_report([sw], tmp_path / "p", metric="val_bpb")["csv"])] == [
        "model/positional=learned", "model/positional=rope"]
    fake_run(sw / "2", "rope", 30, 1.0)  # tokens/s 1030 and bpb 1.0 pull rope's means ahead on both
    assert _csv(build_report([sw], tmp_path / "q", metric="tokens_per_s")["csv"])[0]["variant"] == \
        "model/positional=rope"


def test_two_seeds_show_the_range_not_a_t_interval(tmp_path: Path):
    sw = tmp_path / "sw"
    fake_run(sw / "0", "rope", 0, 2.0)
    fake_run(sw / "1", "rope", 1, 2.2)
    fake_run(sw / "2", "learned", 0, 2.5)
    files = build_report([sw], tmp_path / "o")
    md = files["markdown"].read_text()
    assert "2.1000 [2.0000–2.2000]" in md and "±" not in md.split("| rank")[1]
    assert "2.5000 |" in md  # one seed: the value alone
    row = _csv(files["csv"])[0]
    assert (float(row["val_bpb_min"]), float(row["val_bpb_max"])) == (2.0, 2.2)
    variants, _ = group(load([sw]))
    _, mean, low, high = band(next(v for v in variants if "rope" in v.label), "step")
    assert (low[-1], high[-1]) == pytest.approx((2.0, 2.2))  # the plotted band is the range too
    three = mean_ci([2.0, 2.2, 2.1])
    assert three.fmt(2).count("±") == 1 and three.low == pytest.approx(2.1 - three.half)


def test_train_loss_curve_is_smoothed_and_drawn_for_short_runs(tmp_path: Path):
    assert ema([3.0, 3.0, 3.0]) == pytest.approx([3.0, 3.0, 3.0])  # debiased: no pull toward 0
    smooth = ema([1.0, 0.0, 1.0, 0.0])
    assert smooth[0] == 1.0 and max(smooth[1:]) - min(smooth[1:]) < 1.0  # the zig-zag is damped
    sw = tmp_path / "sw"
    fake_run(sw / "0", "rope", 0, 2.0)
    variants, _ = group(load([sw]))
    x, mean, _, _ = band(variants[0], "step", "train_loss")
    assert len(x) == 10 and mean[0] > mean[-1]  # every logged training loss, though only 2 validations


def test_train_and_total_time_columns_match_the_sweep_table(sweep: Path, tmp_path: Path):
    summary = json.loads((sweep / "sweep_summary.json").read_text())
    summary["jobs"].append({"num": 0, "dir": str(sweep / "0"), "status": "completed", "seconds": 42.5})
    (sweep / "sweep_summary.json").write_text(json.dumps(summary))
    files = build_report([sweep], tmp_path / "out")
    runs = {Path(r["dir"]).name: r for r in _csv(files["runs_csv"])}
    assert float(runs["0"]["total_seconds"]) == 42.5  # the launcher's start-to-exit time, as the sweep table
    assert float(runs["1"]["total_seconds"]) == 12.0  # no launcher record: the start to exit the run recorded
    assert float(runs["0"]["train_seconds"]) == 8.0
    summary = json.loads((sweep / "2" / "summary.json").read_text())
    del summary["total_seconds"]  # a run from before total_seconds: its fit wall time is not its total time
    (sweep / "2" / "summary.json").write_text(json.dumps(summary))
    runs = {Path(r["dir"]).name: r for r in _csv(build_report([sweep], tmp_path / "again")["runs_csv"])}
    assert runs["2"]["total_seconds"] == "" and float(runs["2"]["train_seconds"]) == 8.0
    md = files["markdown"].read_text()
    assert "| train s | total s |" in md and "wall s" not in md


@pytest.mark.parametrize("bad", [math.nan, math.inf])
@pytest.mark.parametrize("metric", ["val_bpb", "tokens_per_s"])
def test_a_diverged_run_is_failed_with_its_reason_and_never_ranked(tmp_path: Path, bad: float, metric: str):
    """A run that ended "completed" with a NaN (or infinite) val loss is failed, even by a figure it has (tokens/s)."""
    sw = tmp_path / "sweep"
    fake_run(sw / "0", "learned", 0, 2.1)
    fake_run(sw / "1", "rope", 0, 1.0)
    summary = json.loads((sw / "1" / "summary.json").read_text())
    summary.update(val_loss=bad, val_bpb=bad, tokens_per_s=1e9)  # the fastest run, and diverged
    (sw / "1" / "summary.json").write_text(json.dumps(summary))  # json writes NaN / Infinity as decoderlab does
    files = build_report([sw], tmp_path / "out", metric=metric)
    runs = {Path(r["dir"]).name: r for r in _csv(files["runs_csv"])}
    assert runs["1"]["status"] == "failed" and f"val_loss is {bad}" in runs["1"]["reason"]
    assert runs["0"]["status"] == "completed"
    report = {r["variant"]: r for r in _csv(files["csv"])}
    assert report["model/positional=rope"]["completed"] == "0" and report["model/positional=rope"]["failed"] == "1"
    assert next(iter(report)) == "model/positional=learned"  # ranked first: the only run that counts
    assert "## Failed runs" in files["markdown"].read_text()


def test_unfinished_runs_are_listed_with_what_became_of_them(tmp_path: Path):
    """Interrupted (signal and step of max_steps), no status.json, still running (lock held) or killed: each
    listed under "Failed runs" with a reason, never ranked."""
    from decoderlab import rundir

    sw = tmp_path / "sw"
    fake_run(sw / "0", "rope", 0, 2.0)
    for n in (1, 2, 3, 4):
        fake_run(sw / str(n), "rope", n, None, status="running")
    cfg = yaml.safe_load((sw / "1" / "config.yaml").read_text())
    (sw / "1" / "config.yaml").write_text(yaml.safe_dump({**cfg, "trainer": {"max_steps": 3000}}))
    (sw / "1" / "status.json").write_text(json.dumps({"status": "interrupted", "signal": "SIGTERM", "step": 76}))
    (sw / "2" / "status.json").unlink()
    held = rundir.lock(sw / "3")
    try:
        files = build_report([sw], tmp_path / "out")
    finally:
        held.release()
    md = files["markdown"].read_text()
    failed = md.split("## Failed runs")[1]
    assert f"`{sw / '1'}`: interrupted by SIGTERM at step 76 of 3000\n" in failed
    assert f"`{sw / '2'}`: no readable status.json (outcome unknown)\n" in failed
    assert f"`{sw / '3'}`: still running (a live process holds its run directory)\n" in failed
    assert f"`{sw / '4'}`: failed: stopped while running (killed?) and never finished" in failed
    runs = {Path(r["dir"]).name: r for r in _csv(files["runs_csv"])}
    assert [runs[n]["status"] for n in "01234"] == ["completed", "interrupted", "unknown", "running", "failed"]
    assert _csv(files["csv"])[0]["completed"] == "1"  # only the completed run counts
    assert "interrupted by SIGTERM at step 76 of 3000" in files["html"].read_text()


def test_a_group_by_key_no_run_has_is_a_one_line_error_with_the_closest_keys(sweep: Path, tmp_path: Path, capsys):
    with pytest.raises(SystemExit) as e:
        main([str(sweep), "--out", str(tmp_path / "o"), "--group-by", "choice/model/positionall"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "--group-by 'choice/model/positionall' is a config key of no run; did you mean choice/model/positional" \
        in " ".join(err.split()) and "Traceback" not in err and len(err.strip().splitlines()) <= 2
    assert not (tmp_path / "o" / "report.md").exists()
    main([str(sweep), "--out", str(tmp_path / "o"), "--group-by", "choice/model/positional, seed"])  # valid keys
    variants = {r["variant"] for r in _csv(tmp_path / "o" / "report.csv")}
    assert "model/positional=rope,seed=0" not in variants and "choice/model/positional=rope,seed=0" in variants


@pytest.mark.parametrize("where", ["file", "proc", "under_a_file"])
def test_an_out_that_cannot_be_a_folder_is_a_one_line_error_naming_it(sweep: Path, tmp_path: Path, capsys, where):
    (tmp_path / "taken").write_text("x")
    out = {"file": tmp_path / "taken", "proc": Path("/proc/decoderlab-x"), "under_a_file": tmp_path / "taken" / "r"}[where]
    with pytest.raises(SystemExit) as e:
        main([str(sweep), "--out", str(out)])
    assert e.value.code == 2
    err = " ".join(capsys.readouterr().err.split())
    assert err.startswith("error: ") and str(out) in err and "Traceback" not in err


def test_the_console_title_keeps_the_min_max_note(sweep: Path, tmp_path: Path, capsys):
    build_report([sweep], tmp_path / "out")
    printed = " ".join(capsys.readouterr().out.split())
    assert "(mean ± 95% CI over 3+ seeds, [min–max] over 2)" in printed
