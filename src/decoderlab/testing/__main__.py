"""``python -m decoderlab.testing [--plugins DIR]... [--all] [pytest args]``: the conformance battery for plugins.

Without ``--all`` only components that do not come from the decoderlab package are tested (yours); the
``torch.compile`` checks are included (``-m "not slow"`` skips them). Any other argument goes to pytest.
"""

from __future__ import annotations

import argparse
import os
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m decoderlab.testing", description=__doc__)
    parser.add_argument("--plugins", action="append", default=[], metavar="DIR",
                        help="plugin folder (repeatable); default: $DECODERLAB_PLUGIN_PATH, else ./plugins")
    parser.add_argument("--all", action="store_true", help="test the core components too")
    args, pytest_args = parser.parse_known_args(argv)
    missing = [p for p in args.plugins if not os.path.isdir(p)]
    if missing:
        print(f"plugin folder(s) not found: {', '.join(missing)}", file=sys.stderr)
        return 2
    if args.plugins:
        os.environ["DECODERLAB_PLUGIN_PATH"] = os.pathsep.join(os.path.abspath(p) for p in args.plugins)
    os.environ.pop("DECODERLAB_NO_PLUGINS", None)
    from decoderlab.plugins import load_plugins, plugin_dirs
    from decoderlab.testing.battery import ONLY_ENV, registered_cases

    broken = {k: v for k, v in load_plugins().items() if v != "ok"}
    if broken:
        for plugin, err in broken.items():
            print(f"plugin failed to load: {plugin}: {err}", file=sys.stderr)
        return 1
    if not args.all:
        os.environ[ONLY_ENV] = "plugins"
        if not any(not c.is_core for c in registered_cases()):
            where = ", ".join(str(d) for d in plugin_dirs()) or "(no plugin folder)"
            print(f"no plugin components found in {where} or the 'decoderlab.plugins' entry points; "
                  "pass --plugins DIR, or --all to test the core", file=sys.stderr)
            return 2
    try:
        import pytest
    except ImportError:
        print("the conformance battery runs under pytest: pip install 'decoderlab[dev]' (or pytest)", file=sys.stderr)
        return 2
    return int(pytest.main([
        "--pyargs", "decoderlab.testing", "-p", "no:cacheprovider",
        "-W", "ignore::pytest.PytestAssertRewriteWarning",  # decoderlab (and hydra) were imported to load plugins
        *pytest_args,
    ]))


if __name__ == "__main__":
    raise SystemExit(main())
