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
