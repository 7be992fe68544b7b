"""Weights by name or URL: `--weights imagenet` (the file a spec's `keras:` section records,
keras' released one) and `--weights URL --weights-sha256 HEX` (any file), downloaded with
`keras.utils.get_file` into Keras' own cache (`$KERAS_HOME/models`, else `~/.keras/models`),
so a file a user already has from keras.applications is used offline and nothing is
downloaded twice.

Every file is checked against its hash before it is used: a cached file that does not match
is an error that leaves the file where it is (it may be the user's), a download that does
not match is removed. Each failure is one line (exit 2) naming the URL and the path where
the file can be put by hand.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import socket
import sys
from pathlib import Path
from urllib.parse import urlparse

from ...core.errors import Location, SpecError

NAME = re.compile(r"[a-z][a-z0-9_]*")
URL = re.compile(r"https?://[^\s'\"]+")
HEX = re.compile(r"[0-9a-fA-F]{64}")
TIMEOUT_S = 60  # a stalled connection is an error, not a hang


def is_reference(weights) -> bool:
    """Whether `weights` names published weights or a URL rather than a file."""
    if weights is None or not isinstance(weights, str):
        return False
    return bool(URL.fullmatch(weights)) or (bool(NAME.fullmatch(weights)) and not Path(weights).exists())


def cache_dir() -> Path:
    """Where keras.utils.get_file keeps models: `$KERAS_HOME/models` or `~/.keras/models`
    (`/tmp/.keras/models` when that is not writable, as Keras does)."""
    base = os.path.expanduser(os.environ.get("KERAS_HOME") or os.path.join("~", ".keras"))
    if not os.path.exists(base) and os.access(os.path.dirname(base) or ".", os.W_OK):
        os.makedirs(base, exist_ok=True)
    if not os.access(base, os.W_OK):
        base = os.path.join("/tmp", ".keras")
    return Path(base) / "models"


def file_hash(path: Path, algorithm: str) -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _algorithm(hex_hash: str) -> str:
    return "sha256" if len(hex_hash) == 64 else "md5"


def resolve(weights, graph=None, sha256: str | None = None, say=None) -> str | None:
    """The local file for `weights`: a name (`imagenet`) of the spec's published weights, a
    URL (with `sha256`), or a path as it is (checked against `sha256` when given)."""
    where = Location("--weights")
    if sha256 is not None and not HEX.fullmatch(sha256):
        raise SpecError(f"--weights-sha256 must be 64 hexadecimal digits (got {sha256[:80]!r})",
                        Location("--weights-sha256"))
    if weights is None:
        if sha256 is not None:
            raise SpecError("--weights-sha256 checks the file of --weights; give --weights too",
                            Location("--weights-sha256"))
        return None
    w = os.fspath(weights)
    if URL.fullmatch(w):
        if sha256 is None:
            raise SpecError(f"a URL needs --weights-sha256 HEX, the file's sha256 (nothing is loaded unchecked): {w}",
                            where)
        return str(fetch(w, sha256.lower(), say=say))
    if NAME.fullmatch(w) and not Path(w).exists():
        return str(published(w, graph, say=say))
    if sha256 is not None:
        p = Path(w)
        if p.is_file() and file_hash(p, "sha256") != sha256.lower():
            raise SpecError(f"the file's sha256 is not {sha256.lower()} (it is {file_hash(p, 'sha256')})",
                            Location(w))
    return w


def for_command_line(weights, sha256: str | None, say=None):
    """--weights as the library takes it: a URL (with --weights-sha256) fetched into Keras'
    cache, a file checked against --weights-sha256; a name (imagenet) is the spec's, resolved
    where the spec is lowered (`resolve` with its graph)."""
    if weights is not None and NAME.fullmatch(weights) and not os.path.exists(weights):
        if sha256 is not None:
            raise SpecError("--weights-sha256 checks a file or URL; published weights by name carry their own hash",
                            Location("--weights-sha256"))
        return weights
    return resolve(weights, None, sha256=sha256, say=say)


def published(name: str, graph, say=None) -> Path:
    """The spec's published weights `name`, with or without the classifier as the spec is."""
    keras_twin = (graph.meta.get("keras") if graph is not None else None) or {}
    spec_name = graph.name if graph is not None else "this spec"
    files = (keras_twin.get("weights") or {}).get(name)
    if not files:
        known = sorted((keras_twin.get("weights") or {}))
        what = (f"its published weights: {', '.join(known)}" if known else
                "it records no published weights (only specs that are a keras.applications network do: "
                "`archspec list` shows which)")
        raise SpecError(f"no published weights named {name!r} for {spec_name}; {what}; or give a weights "
                        f"file or --weights URL --weights-sha256 HEX", Location("--weights"))
    include_top = graph.meta.get("include_top", True)
    key = "top" if include_top else "no_top"
    entry = files.get(key) or files.get("no_top" if include_top else "top")
    if entry is None:
        raise SpecError(f"{spec_name}'s {name} weights have no file {'with' if include_top else 'without'} the "
                        f"classifier", Location("--weights"))
    return fetch(entry["url"], entry["hash"], say=say)


def fetch(url: str, hex_hash: str | None, say=None) -> Path:
    """The file at `url`, from Keras' cache when it is there with this hash, else downloaded
    there by keras.utils.get_file and checked. `hex_hash` None (a file keras.applications
    publishes without one): taken as keras takes it, its sha256 reported."""
    fname = os.path.basename(urlparse(url).path)
    if not fname or fname in (".", "..") or not re.fullmatch(r"[A-Za-z0-9_.\-]+", fname):
        raise SpecError(f"the URL names no file to cache ({url})", Location("--weights"))
    say = say or (lambda m: print(m, file=sys.stderr))
    target = cache_dir() / fname
    if hex_hash is None:
        got = target if target.is_file() else _download(url, None, target, say)
        say(f"keras publishes no hash for {url}; the file used, {got}, has sha256 {file_hash(got, 'sha256')}")
        return got
    algorithm = _algorithm(hex_hash)
    if target.exists():
        if target.is_file() and file_hash(target, algorithm) == hex_hash:
            return target
        # a file that is not the published one: never replaced or deleted here (it may be the user's)
        raise SpecError(f"{target} is in Keras' cache but its {algorithm} is not {hex_hash}, the hash of {url}; "
                        f"move it away to download the file again", Location("--weights"))
    return _download(url, hex_hash, target, say)


def _download(url: str, hex_hash: str | None, target: Path, say) -> Path:
    """keras.utils.get_file into `target`'s directory; its failures as one located line."""
    from keras.utils import get_file  # Keras only: the package's own helpers import this module

    by_hand = f"put the file there by hand: {target}"
    algorithm = _algorithm(hex_hash) if hex_hash else "sha256"
    say(f"downloading {url} into {target}")
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(TIMEOUT_S)
    try:
        with contextlib.redirect_stdout(sys.stderr):  # keras' progress bar: stdout stays the command's
            got = get_file(target.name, url, file_hash=hex_hash, cache_subdir="models",
                                       cache_dir=str(target.parent.parent))
    except ValueError as exc:  # downloaded, but the hash does not match: not kept
        with contextlib.suppress(OSError):
            target.unlink()
        raise SpecError(f"the file downloaded from {url} does not have the {algorithm} {hex_hash} "
                        f"({' '.join(str(exc).split())[:120]}); nothing was kept; {by_hand}",
                        Location("--weights")) from None
    except Exception as exc:  # unreachable, HTTP error, interrupted: keras removed the partial file
        reason = str(exc).replace(f"URL fetch failure on {url}: ", "").removeprefix("None -- ")
        reason = " ".join(reason.replace(" -- ", " ").split())[:200]  # keras' "404 -- Not Found": "404 Not Found"
        raise SpecError(f"cannot download {url}: {reason}; {by_hand}", Location("--weights")) from None
    finally:
        socket.setdefaulttimeout(old)
    return Path(got)
