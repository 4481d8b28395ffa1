"""Plugin discovery: folder plugins, entry-point plugins, broken plugins warn, autoload can be turned off."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

PROBE = "from decoderlab.plugins import load_plugins; from decoderlab.components import NORM; " \
        "s = load_plugins(); print(sorted(NORM.names())); print(s)"

PLUGIN = textwrap.dedent('''
    from dataclasses import dataclass
    from torch import nn
    from decoderlab.components.norms import NORM
    from decoderlab.registry import ComponentConfig

    @dataclass
    class IdConfig(ComponentConfig):
        pass

    @NORM.register("{name}", IdConfig)
    def build(cfg, dims):
        """Identity norm (test plugin)."""
        return nn.Identity()
''')


def _probe(env: dict) -> subprocess.CompletedProcess:
    import os

    return subprocess.run([sys.executable, "-c", PROBE], env={**os.environ, **env}, capture_output=True,
                          text=True, timeout=120)


def test_file_plugin_in_plugin_dir_registers(tmp_path: Path):
    (tmp_path / "mynorm.py").write_text(PLUGIN.format(name="mynorm"))
    out = _probe({"DECODERLAB_PLUGIN_PATH": str(tmp_path)})
    assert out.returncode == 0, out.stderr
    assert "'mynorm'" in out.stdout.splitlines()[0]


def test_broken_plugin_warns_by_name_and_others_still_load(tmp_path: Path):
    (tmp_path / "good.py").write_text(PLUGIN.format(name="goodnorm"))
    (tmp_path / "broken.py").write_text("raise RuntimeError('boom at import')\n")
    out = _probe({"DECODERLAB_PLUGIN_PATH": str(tmp_path)})
    assert out.returncode == 0, out.stderr
    assert "'goodnorm'" in out.stdout.splitlines()[0]
    assert "decoderlab plugin" in out.stderr and "broken.py" in out.stderr and "boom at import" in out.stderr


def test_plugin_clashing_with_core_name_is_skipped_with_warning(tmp_path: Path):
    (tmp_path / "clash.py").write_text(PLUGIN.format(name="layernorm"))
    out = _probe({"DECODERLAB_PLUGIN_PATH": str(tmp_path)})
    assert out.returncode == 0
    assert "duplicate model/norm component 'layernorm'" in out.stderr


def test_entry_point_plugin_from_installed_package(tmp_path: Path):
    pkg = tmp_path / "site"
    (pkg / "acme_norms").mkdir(parents=True)
    (pkg / "acme_norms" / "__init__.py").write_text(PLUGIN.format(name="acmenorm"))
    dist = pkg / "acme_norms-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-norms\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[decoderlab.plugins]\nacme = acme_norms\n")
    out = _probe({"PYTHONPATH": str(pkg), "DECODERLAB_PLUGIN_PATH": ""})
    assert out.returncode == 0, out.stderr
    assert "'acmenorm'" in out.stdout.splitlines()[0]
    assert "entry_point:acme=acme_norms" in out.stdout


def test_autoload_can_be_turned_off(tmp_path: Path):
    (tmp_path / "mynorm.py").write_text(PLUGIN.format(name="mynorm"))
    out = _probe({"DECODERLAB_PLUGIN_PATH": str(tmp_path), "DECODERLAB_NO_PLUGINS": "1"})
    assert out.returncode == 0
    assert "'mynorm'" not in out.stdout


SHADOW_PROBE = textwrap.dedent('''
    import importlib, json, sys
    from decoderlab.plugins import load_plugins
    from decoderlab.components import NORM
    status = load_plugins()
    dyt = NORM.get("dyt").source
    print(json.dumps({"names": NORM.names(), "status": status, "dyt_module": dyt,
                      "dyt_file": sys.modules[dyt].__file__}))
''')


def test_a_plugin_of_the_same_file_name_in_another_folder_does_not_hide_the_shipped_one(tmp_path: Path):
    """./plugins/dyt.py (the user's, registering mydyt) beside the shipped plugins/dyt.py: both run, both register,
    and the module name a checkpoint records for each imports that same file in a fresh process."""
    import json
    import os

    shipped = Path(__file__).resolve().parents[1] / "plugins" / "dyt.py"
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "dyt.py").write_text(PLUGIN.format(name="mydyt"))
    env = {k: v for k, v in os.environ.items() if k not in ("DECODERLAB_PLUGIN_PATH", "DECODERLAB_NO_PLUGINS")}
    run = subprocess.run([sys.executable, "-c", SHADOW_PROBE], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout.splitlines()[-1])
    assert {"dyt", "mydyt"} <= set(out["names"]), out
    assert out["status"] == {f"file:{(tmp_path / 'plugins' / 'dyt.py').resolve()}": "ok", f"file:{shipped}": "ok"}
    assert Path(out["dyt_file"]).resolve() == shipped
    # A checkpoint records NORM.get("dyt").source; loading it imports that module by name (no plugin autoload).
    for module, expected in ((out["dyt_module"], shipped), ("decoderlab_plugin_dyt", tmp_path / "plugins" / "dyt.py")):
        probe = f"import importlib, decoderlab; print(importlib.import_module({module!r}).__file__)"
        got = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True,
                             env={**env, "DECODERLAB_NO_PLUGINS": "1"}, timeout=120)
        assert got.returncode == 0, got.stderr
        assert Path(got.stdout.strip()).resolve() == expected.resolve()


RANGED_PLUGIN = textwrap.dedent('''
    from dataclasses import dataclass
    from torch import nn
    from decoderlab.components.norms import NORM
    from decoderlab.registry import ComponentConfig

    @dataclass
    class KConfig(ComponentConfig):
        {ranges}
        k: float = 0.5

    @NORM.register("{name}", KConfig)
    def build(cfg, dims):
        """Identity norm (test plugin)."""
        return nn.Identity()
''')


def test_a_plugin_with_malformed_ranges_is_a_broken_plugin_warning_not_a_traceback(tmp_path: Path):
    from conftest import run_cli

    (tmp_path / "badr.py").write_text(RANGED_PLUGIN.format(name="badr", ranges='RANGES = {"k": "0..1"}'))
    out = run_cli(["decoderlab-train", "model/norm=badr", "logger=csv"], cwd=tmp_path,
                  env={"DECODERLAB_PLUGIN_PATH": str(tmp_path)})
    assert out.returncode != 0 and "Traceback" not in out.stderr, out.stderr
    assert "decoderlab plugin" in out.stderr and "badr.py" in out.stderr and "range '0..1' is not" in out.stderr
    assert "model/norm=badr: unknown option" in out.stderr


def test_a_plugin_numeric_field_without_a_range_warns_and_fails_the_battery(tmp_path: Path):
    import os

    (tmp_path / "nr.py").write_text(RANGED_PLUGIN.format(name="nr", ranges=""))
    env = {**os.environ, "DECODERLAB_NO_PLUGINS": ""}
    out = subprocess.run([sys.executable, "-m", "decoderlab.testing", "--plugins", str(tmp_path), "-q",
                          "-m", "not slow", "-k", "ranges"], env=env, capture_output=True, text=True, timeout=300)
    assert "model/norm/nr" in out.stderr and "numeric field(s) k declare no range" in out.stderr
    assert out.returncode == 1, out.stdout + out.stderr
    assert "model/norm=nr: numeric field(s) k have no declared range" in out.stdout


def test_the_battery_passes_a_plugin_whose_ranges_cover_its_fields(tmp_path: Path):
    import os

    (tmp_path / "okr.py").write_text(RANGED_PLUGIN.format(name="okr", ranges='RANGES = {"k": "(0, 1)"}'))
    out = subprocess.run([sys.executable, "-m", "decoderlab.testing", "--plugins", str(tmp_path), "-q",
                          "-m", "not slow", "-k", "ranges"], env={**os.environ, "DECODERLAB_NO_PLUGINS": ""},
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and "1 passed" in out.stdout, out.stdout + out.stderr
