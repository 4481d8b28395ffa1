"""How a run starts wandb without ever blocking on it: the mode, the credential check, the bounded online start.

* No key (``WANDB_API_KEY``, ``WANDB_IDENTITY_TOKEN_FILE`` or a ``~/.netrc`` login for the wandb host) and
  ``WANDB_MODE`` unset: offline (wandb would otherwise wait forever at an account prompt).
* ``WANDB_MODE=online`` with no key: a :class:`ConfigError` at composition, before anything runs.
* A key and no network: the server is probed first (:data:`PROBE_TIMEOUT_S`); unreachable, the run logs offline at
  once with a one-line warning saying how to sync it later. A server that answers the probe but not wandb's start
  gets :data:`INIT_TIMEOUT_S` (wandb's own default is 90 s) and then the same fallback.

Offline runs keep the run's wandb id (:func:`decoderlab.resume.wandb_id`): ``wandb sync`` uploads them as the same
run a later online resume continues.
"""

from __future__ import annotations

import logging
import netrc
import os
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from decoderlab.errors import ConfigError

log = logging.getLogger("decoderlab")

DEFAULT_HOST = "https://api.wandb.ai"
PROBE_TIMEOUT_S = 5.0  # no network: the whole cost of trying online
INIT_TIMEOUT_S = 5.0  # wandb waits this plus its own ~10 s grace when the server answers but never starts the run


def _mode() -> str:
    return os.environ.get("WANDB_MODE", "").strip().lower()


def base_url() -> str:
    """The wandb server this process talks to (``WANDB_BASE_URL``, else wandb's cloud)."""
    return os.environ.get("WANDB_BASE_URL") or DEFAULT_HOST


def _netrc_has_login(url: str) -> bool:
    """Whether ``~/.netrc`` (or ``$NETRC``) holds a password for ``url``'s host, as ``wandb login`` writes it."""
    path = Path(os.environ.get("NETRC") or Path.home() / ".netrc")
    host = urlsplit(url).netloc
    try:
        creds = netrc.netrc(str(path)).authenticators(host)
    except (OSError, netrc.NetrcParseError):
        return False
    return bool(creds and creds[2])


def has_credentials() -> bool:
    """Whether wandb could log in without a prompt."""
    return bool(os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE")
                or _netrc_has_login(base_url()))


def wandb_offline_default() -> bool:
    """Offline unless a key is set or the user asked for online: wandb must never prompt or wait."""
    mode = _mode()
    if mode == "disabled":
        return False  # wandb.init honours WANDB_MODE=disabled itself; offline=True would overwrite it
    if mode in ("offline", "dryrun"):
        return True
    return not (os.environ.get("WANDB_API_KEY") or mode == "online")


def check_credentials() -> None:
    """Raise :class:`ConfigError` when ``WANDB_MODE=online`` but wandb has no key to log in with."""
    if _mode() == "online" and not has_credentials():
        raise ConfigError(f"WANDB_MODE=online but no wandb API key for {base_url()}: set WANDB_API_KEY, run "
                          "`wandb login`, or unset WANDB_MODE to log offline (`wandb sync` uploads later)")


def reachable(url: str, timeout: float = PROBE_TIMEOUT_S) -> bool:
    """Whether an HTTP server answers at ``url`` within ``timeout`` (any status counts; proxies are honoured)."""
    try:
        urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout).close()
    except urllib.error.HTTPError:
        return True  # it answered
    except (OSError, ValueError):  # refused, timed out, no route, no DNS, a malformed URL
        return False
    return True


def start_wandb(make: Callable[[bool], Any], offline: bool) -> Any:
    """The WandbLogger from ``make(offline)``, its wandb run started now when online; offline if that fails.

    Only rank zero starts the run (the other ranks' loggers never talk to wandb).
    """
    logger = make(offline)
    if offline or _mode() == "disabled" or not _rank_zero():
        return logger
    why = None if reachable(base_url()) else f"cannot reach {base_url()}"
    if why is None:
        os.environ.setdefault("WANDB_INIT_TIMEOUT", str(INIT_TIMEOUT_S))  # read by wandb.init; the user's wins
        why = _try_start(logger)
    if why is None:
        return logger
    logger = make(True)
    run_dir = Path(logger.experiment.dir).parent  # .../wandb/offline-run-<time>-<id>
    log.warning("wandb: %s; logging offline instead, upload later with: wandb sync %s", why, run_dir)
    return logger


def _try_start(logger: Any) -> str | None:
    """Start ``logger``'s wandb run; the reason it failed (wandb torn down for a clean retry), or None."""
    import wandb  # lazy: optional and slow

    try:
        logger.experiment  # noqa: B018 - the property calls wandb.init
    except TypeError as e:  # wandb.init's word for a misspelled logger.wandb.* keyword
        raise ConfigError(f"logger: {e}") from None
    except Exception as e:  # noqa: BLE001 - CommError on a timeout, UsageError, AuthenticationError, ...
        wandb.teardown()  # the failed run keeps its id "in use" in wandb's service otherwise
        return f"could not start online ({str(e).splitlines()[0]})"
    return None


def _rank_zero() -> bool:
    from lightning.pytorch.utilities import rank_zero_only

    return getattr(rank_zero_only, "rank", 0) == 0
