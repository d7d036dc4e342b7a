"""The containerlab runtime's images: build them, or load the copy built from the same sources.

``make images`` runs :func:`ensure_images`.  On a machine with a Docker engine and a registry this is a
plain ``docker build`` of ``images/router`` and ``images/ks``.  Two things differ inside the sandbox
kernel (docs/sandbox.md), where the engine's storage is a tmpfs that ends with the sandbox:

* no registry is reachable, so the Dockerfiles' base (``FROM debian:trixie-slim``) is imported from a
  Debian root made with ``debootstrap --variant=minbase`` (:data:`BASE_ROOT`, archived by
  ``scripts/base-root.sh``); the Dockerfiles build unchanged on a user's machine, which pulls that base;
* each built image is saved to :data:`CACHE_DIR` under the hash of everything it is built from, and the
  next sandbox loads it instead of building it again.

Each image carries the label ``dmvpn-lab.source-hash``, so a stale image is rebuilt, never used.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from dmvpn_lab.lab.converge import wait_until

REPO = Path(__file__).resolve().parents[3]
BASE_IMAGE = "debian:trixie-slim"  # what both Dockerfiles start FROM
BASE_ROOT = Path(os.environ.get("DMVPN_LAB_BASE_ROOT", "/var/lib/dmvpn-lab/images/trixie-root"))
CACHE_DIR = Path(os.environ.get("DMVPN_LAB_IMAGE_CACHE", "/var/lib/dmvpn-lab/images"))
HASH_LABEL = "dmvpn-lab.source-hash"
# The build context the Dockerfiles read (.dockerignore keeps the rest out): what the hash covers.
CONTEXT = ("pyproject.toml", "README.md", "src/dmvpn_lab", "images")

Progress = Callable[[str], None]


class ImageError(RuntimeError):
    """An image could not be built or loaded; the message says what to do."""


DOCKERFILE = "images/Dockerfile"


@dataclass(frozen=True)
class Image:
    tag: str
    target: str  # the Dockerfile's stage


KS = Image("dmvpn-lab/ks:0.2", "ks")
ROUTER = Image("dmvpn-lab/router:0.2", "router")  # built FROM the ks stage: ks first
ALL = (KS, ROUTER)


def source_hash(repo: Path = REPO) -> str:
    """Hash of every file in the build context (names and contents), caches and bytecode left out."""
    digest = hashlib.sha256()
    for entry in CONTEXT:
        path = repo / entry
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        for file in files:
            rel = file.relative_to(repo).as_posix()
            if "__pycache__" in rel or rel.endswith(".pyc") or ".egg-info" in rel:
                continue
            digest.update(rel.encode() + b"\0" + file.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def _docker(*args: str, timeout: float = 900, input_file: Path | None = None) -> subprocess.CompletedProcess[str]:
    stdin = input_file.open("rb") if input_file else None
    try:
        result = subprocess.run(["docker", *args], stdin=stdin, capture_output=True, timeout=timeout, check=False)
    finally:
        if stdin:
            stdin.close()
    return subprocess.CompletedProcess(
        result.args, result.returncode, result.stdout.decode(errors="replace"), result.stderr.decode(errors="replace")
    )


def engine_ready(timeout: float = 60.0) -> None:
    """Wait until ``docker info`` answers; raise with what to do if it never does."""

    def answers() -> str | None:
        return None if _docker("info", "--format", "{{.ServerVersion}}", timeout=30).returncode == 0 else "no answer"

    wait_until(
        answers,
        what="the Docker engine",
        timeout=timeout,
        interval=0.5,
        error=ImageError,
    )


def image_hash(tag: str) -> str | None:
    result = _docker("image", "inspect", "--format", f'{{{{index .Config.Labels "{HASH_LABEL}"}}}}', tag, timeout=60)
    return result.stdout.strip() or None if result.returncode == 0 else None


def cache_file(image: Image, digest: str) -> Path:
    return CACHE_DIR / f"{image.tag.replace('/', '_').replace(':', '_')}-{digest}.tar"


def ensure_base(progress: Progress) -> None:
    """Make ``debian:trixie-slim`` available: already there, pulled, or imported from :data:`BASE_ROOT`."""
    if _docker("image", "inspect", BASE_IMAGE, timeout=60).returncode == 0:
        return
    if os.environ.get("DMVPN_LAB_SANDBOX") != "1":
        progress(f"pulling {BASE_IMAGE}")
        pulled = _docker("pull", BASE_IMAGE, timeout=600)
        if pulled.returncode == 0:
            return
        progress(f"  pull failed ({pulled.stderr.strip()[-200:]}); importing it from {BASE_ROOT}")
    archive = BASE_ROOT.with_name(BASE_ROOT.name + ".tar")
    if not archive.exists():
        raise ImageError(
            f"no registry for {BASE_IMAGE} and no Debian root archive at {archive}: run `scripts/base-root.sh` "
            "(debootstrap) or `make setup`"
        )
    progress(f"importing {BASE_IMAGE} from {archive}")
    imported = _docker("import", str(archive), BASE_IMAGE, timeout=900)
    if imported.returncode != 0:
        raise ImageError(f"docker import of {archive} failed: {imported.stderr[-500:]}")


def ensure_images(progress: Progress = print, *, keep_cache: bool | None = None) -> dict[str, str]:
    """Every image present and built from the current sources; returns how each was obtained."""
    engine_ready()
    digest = source_hash()
    # Kept for the next sandbox; not on a CI machine, which starts empty and ends with the run.
    in_sandbox = os.environ.get("DMVPN_LAB_SANDBOX") == "1"
    keep = in_sandbox and os.environ.get("CI") != "true" if keep_cache is None else keep_cache
    how: dict[str, str] = {}
    for image in ALL:
        started = time.monotonic()
        if image_hash(image.tag) == digest:
            how[image.tag] = "present"
            continue
        cached = cache_file(image, digest)
        stale = [old for old in CACHE_DIR.glob(cache_file(image, "*").name) if old != cached]
        if cached.exists():
            progress(f"loading {image.tag} from {cached}")
            loaded = _docker("load", "-i", str(cached), timeout=600)
            if loaded.returncode == 0 and image_hash(image.tag) == digest:
                how[image.tag] = f"loaded in {time.monotonic() - started:.1f}s"
                continue
            progress(f"  {cached} is unusable ({loaded.stderr.strip()[-200:]}); building instead")
        ensure_base(progress)
        argv = ["docker", "build", "-f", DOCKERFILE, "--target", image.target, "-t", image.tag]
        progress(f"building {image.tag} (stage {image.target} of {DOCKERFILE})")
        built = subprocess.run(
            [*argv, "--label", f"{HASH_LABEL}={digest}", "."],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=False,
        )
        if built.returncode != 0:
            raise ImageError(f"docker build of {image.tag} failed:\n{(built.stdout + built.stderr)[-3000:]}")
        how[image.tag] = f"built in {time.monotonic() - started:.1f}s"
        if keep:
            CACHE_DIR.mkdir(parents=True, exist_ok=True)
            for old in stale:
                old.unlink(missing_ok=True)
            saved = _docker("save", "-o", str(cached), image.tag, timeout=600)
            if saved.returncode != 0:
                progress(f"  could not keep {image.tag} in {cached}: {saved.stderr.strip()[-200:]}")
        progress(f"{image.tag}: {how[image.tag]}")
    return how


def main() -> int:
    """``make images``: here when a Docker engine answers, else in the sandbox kernel's own engine."""
    from dmvpn_lab.lab import preflight, sandbox

    if not preflight.in_sandbox() and not preflight.docker_engine_answers():
        ok, how = sandbox.available()
        if not ok:
            print(f"error: no Docker engine answers here and no sandbox kernel runs one: {how}", file=sys.stderr)
            return 1
        print("no Docker engine here: building in the sandbox kernel's engine (kept in the image cache)")
        return sandbox.run([sys.executable, "-m", "dmvpn_lab.lab.images"], docker=True)
    try:
        for tag, how in ensure_images().items():
            print(f"{tag}: {how}")
    except ImageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
