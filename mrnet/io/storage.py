"""The one door to storage: local paths and ``s3://bucket/prefix`` URIs.

Every artifact is written atomically: the writer fills a temporary file and the
file appears under its final name only when complete (``os.replace`` locally,
a single ``put``/multipart upload on S3, which S3 makes visible atomically).
This is the only module that imports boto3, and only when an ``s3://`` URI is used.
Credentials, endpoint and region come from the standard AWS environment/config.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

S3 = "s3://"
UNREADABLE_LOCK_SECONDS = 10.0  # a lock appears whole (a link, an S3 put): one unreadable for longer is debris
log = logging.getLogger(__name__)


def is_s3(uri: str) -> bool:
    return str(uri).startswith(S3)


def absolute(path: str | None) -> str | None:
    """A relative local path is relative to $MRNET_HOME (default: the working directory)."""
    if path is None or is_s3(path) or os.path.isabs(path):
        return path
    return str(Path(os.environ.get("MRNET_HOME", os.getcwd())) / path)


def join(root: str, *parts: str) -> str:
    root = str(root).rstrip("/")
    return "/".join([root, *[str(p).strip("/") for p in parts]])


def _split_s3(uri: str) -> tuple[str, str]:
    bucket, _, key = uri[len(S3):].partition("/")
    return bucket, key


def s3_client():
    import boto3  # only here: mrnet's single boto3 import

    return boto3.client("s3", endpoint_url=os.environ.get("AWS_ENDPOINT_URL") or None)


def _bucket_exists(bucket: str) -> bool:
    import botocore.exceptions as bx

    try:
        s3_client().head_bucket(Bucket=bucket)
        return True
    except bx.ClientError:
        return False


@contextlib.contextmanager
def _s3_errors(uri: str, action: str):
    """botocore's errors → one clear message naming the URI (and what to check)."""
    import boto3.exceptions
    import botocore.exceptions as bx

    try:
        yield
    except boto3.exceptions.S3UploadFailedError as exc:  # upload_file wraps the ClientError
        if "NoSuchBucket" in str(exc):
            raise FileNotFoundError(f"S3 bucket {_split_s3(uri)[0]!r} does not exist ({action} {uri}); create it "
                                    "or fix the artifact_root") from None
        raise
    except bx.ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        bucket = _split_s3(uri)[0]
        if code == "NoSuchBucket":
            raise FileNotFoundError(f"S3 bucket {bucket!r} does not exist ({action} {uri}); create it or fix "
                                    "the artifact_root") from None
        if code in ("404", "NoSuchKey", "NotFound"):  # a HEAD's 404 does not say which is missing
            if not _bucket_exists(bucket):
                raise FileNotFoundError(f"S3 bucket {bucket!r} does not exist ({action} {uri}); create it or fix "
                                        "the artifact_root") from None
            raise FileNotFoundError(f"artifact not found: {uri}") from None
        if code in ("403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            raise PermissionError(f"S3 refused to {action} {uri} ({code}): check the AWS credentials") from None
        raise
    except bx.NoCredentialsError:
        raise PermissionError(f"no AWS credentials to {action} {uri}: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY "
                              "or an AWS profile") from None
    except bx.EndpointConnectionError as exc:
        raise ConnectionError(f"cannot reach S3 to {action} {uri}: {exc} (AWS_ENDPOINT_URL="
                              f"{os.environ.get('AWS_ENDPOINT_URL', 'unset')})") from None


@contextlib.contextmanager
def atomic_path(uri: str, suffix: str = "") -> Iterator[Path]:
    """Yield a temp local path to write; publish it at ``uri`` only if the block succeeds."""
    if is_s3(uri):
        tmpdir = Path(tempfile.mkdtemp(prefix="mrnet-up-"))
        tmp = tmpdir / ("obj" + suffix)
        try:
            yield tmp
            bucket, key = _split_s3(uri)
            with _s3_errors(uri, "write"):
                s3_client().upload_file(str(tmp), bucket, key)
        finally:
            shutil.rmtree(tmpdir, ignore_errors=True)
        return
    final = Path(uri)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp" + suffix, dir=final.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600: readers (a UI, MLflow) need the umask's mode
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()


def _umask() -> int:
    """The process umask: from /proc on Linux (no race with other threads), else set and put back."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_parquet(frame, uri: str) -> str:
    """A DataFrame as Parquet at ``uri``, published only once complete."""
    with atomic_path(uri, suffix=".parquet") as tmp:
        frame.to_parquet(tmp, index=False)
    return uri


def put_file(path: str | Path, uri: str) -> str:
    """Publish a finished local file at ``uri`` (a copy, or one upload to S3), atomically: large
    artifacts built in a scratch folder (an index's vectors) go out without being read into memory."""
    with atomic_path(uri, suffix=Path(path).suffix) as tmp:
        shutil.copyfile(path, tmp)
    return uri


def write_bytes(uri: str, data: bytes) -> str:
    with atomic_path(uri) as tmp:
        tmp.write_bytes(data)
    return uri


def write_text(uri: str, text: str) -> str:
    return write_bytes(uri, text.encode("utf-8"))


def exists(uri: str) -> bool:
    if is_s3(uri):
        bucket, key = _split_s3(uri)
        try:
            with _s3_errors(uri, "check"):
                s3_client().head_object(Bucket=bucket, Key=key)
            return True
        except FileNotFoundError:
            return False
    return Path(uri).exists()


def size(uri: str) -> int:
    """The bytes of one file or object (FileNotFoundError naming it when there is none)."""
    if is_s3(uri):
        bucket, key = _split_s3(uri)
        with _s3_errors(uri, "check"):
            return int(s3_client().head_object(Bucket=bucket, Key=key)["ContentLength"])
    path = Path(uri)
    if not path.is_file():
        raise FileNotFoundError(f"artifact not found: {uri}")
    return path.stat().st_size


def modified(uri: str) -> float:
    """When a file or object was last written (epoch seconds); now if it is gone meanwhile."""
    import time

    try:
        if is_s3(uri):
            bucket, key = _split_s3(uri)
            with _s3_errors(uri, "check"):
                return s3_client().head_object(Bucket=bucket, Key=key)["LastModified"].timestamp()
        return Path(uri).stat().st_mtime
    except FileNotFoundError:
        return time.time()


def _s3_pages(uri: str, **list_args):
    """(key prefix, each page of list_objects_v2) under an ``s3://`` folder-like prefix."""
    bucket, key = _split_s3(uri.rstrip("/") + "/")
    with _s3_errors(uri, "list"):
        for page in s3_client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key, **list_args):
            yield key, page


def children(uri: str) -> list[str]:
    """The names directly under a folder (local) or prefix (S3), sorted; [] when there is none.
    Readers list run folders with it (e.g. the releases page), so S3 and local disk read alike."""
    if not is_s3(uri):
        path = Path(uri)
        return sorted(p.name for p in path.iterdir()) if path.is_dir() else []
    names: set[str] = set()
    for key, page in _s3_pages(uri, Delimiter="/"):
        names |= {p["Prefix"][len(key):].rstrip("/") for p in page.get("CommonPrefixes", [])}
        names |= {o["Key"][len(key):] for o in page.get("Contents", [])}
    return sorted(n for n in names if n)


def sizes(uri: str) -> dict[str, int]:
    """Every file under a folder (local) or prefix (S3): {path relative to ``uri``: bytes}."""
    if not is_s3(uri):
        root = Path(uri)
        return {str(p.relative_to(root)): p.stat().st_size for p in root.rglob("*") if p.is_file()} if root.is_dir() else {}
    return {o["Key"][len(key):]: int(o["Size"]) for key, page in _s3_pages(uri) for o in page.get("Contents", [])}


def delete(uri: str) -> None:
    """Remove one file or object; one that is not there is no error (empty local folders stay:
    remove_empty_dirs). S3 answers a delete of a missing key with success, so no HEAD first."""
    if is_s3(uri):
        bucket, key = _split_s3(uri)
        with _s3_errors(uri, "delete"):
            s3_client().delete_object(Bucket=bucket, Key=key)
        return
    Path(uri).unlink(missing_ok=True)


def remove_empty_dirs(uri: str) -> None:
    """Local only (S3 has no folders): remove ``uri`` and the empty folders under it, bottom up."""
    root = Path(uri)
    if is_s3(uri) or not root.is_dir():
        return
    for folder in sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        with contextlib.suppress(OSError):
            folder.rmdir()
    with contextlib.suppress(OSError):
        root.rmdir()


def create_once(uri: str, text: str) -> bool:
    """Write ``uri`` only if nothing is there, atomically against any other writer (a lock): a new
    file with O_EXCL locally, a conditional put (If-None-Match) on S3. False if it already exists."""
    if is_s3(uri):
        import botocore.exceptions as bx

        bucket, key = _split_s3(uri)
        try:
            with _s3_errors(uri, "lock"):
                s3_client().put_object(Bucket=bucket, Key=key, Body=text.encode(), IfNoneMatch="*")
            return True
        except bx.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("PreconditionFailed", "ConditionalRequestConflict", "412"):
                return False
            raise
    path = Path(uri)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:  # written whole before it is visible: a full disk fails here, with no lock
            fh.write(text)
        os.chmod(name, 0o666 & ~_umask())
        os.link(name, path)  # fails if the lock exists; never an empty or half-written one
        return True
    except FileExistsError:
        return False
    except OSError as err:
        if err.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP):
            raise
        return _create_exclusive(path, text)  # a file system without hard links
    finally:
        os.unlink(name)


def _create_exclusive(path: Path, text: str) -> bool:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666 & ~_umask())
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    return True


@contextlib.contextmanager
def lock(uri: str, stale_seconds: float, what: str, wait_seconds: float = 0.0) -> Iterator[None]:
    """Hold the lock object ``uri`` (``create_once``) for the block, waiting up to ``wait_seconds``
    for a holder to finish. A lock left by a process that died (same host, its pid gone) or older
    than ``stale_seconds`` is taken over; a live one is a RuntimeError that names its holder, so two
    writers (gc, a promotion) never interleave."""
    import socket
    import time

    me = {"host": socket.gethostname(), "pid": os.getpid(), "at": time.time(), "what": what}
    deadline, waited = time.monotonic() + wait_seconds, False
    while not create_once(uri, json.dumps(me)):
        try:
            held = json.loads(read_text(uri))
        except FileNotFoundError:
            continue  # released meanwhile: try to take it again
        except ValueError:  # a lock is written whole before it is visible: an unreadable one is left by a writer
            held = {"what": "an unreadable lock", "at": modified(uri), "unreadable": True}  # that died mid-write
        dead = held.get("host") == me["host"] and not _alive(int(held.get("pid", 0)))
        age = time.time() - float(held.get("at", 0))
        if dead or age > stale_seconds or (held.get("unreadable") and age > UNREADABLE_LOCK_SECONDS):
            log.warning("taking over %s, left by %s (pid %s on %s)", uri, held.get("what", "?"), held.get("pid"),
                        held.get("host"))
            delete(uri)
            continue
        holder = (f"{held.get('what', '?')} (pid {held.get('pid')} on {held.get('host')}, "
                  f"since {time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(held.get('at', 0)))} UTC)")
        if time.monotonic() >= deadline:
            raise RuntimeError(f"{uri} is held by {holder}; try again once it is done")
        if not waited:
            log.info("waiting up to %.0f s for %s, held by %s", wait_seconds, uri, holder)
        waited = True
        time.sleep(1.0)
    try:
        yield
    finally:
        delete(uri)


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def local_path(uri: str, cache_dir: str | None = None) -> Path:
    """A local file with the object's content (downloads ``s3://`` objects to a cache)."""
    if not is_s3(uri):
        path = Path(uri)
        if not path.exists():
            raise FileNotFoundError(f"artifact not found: {uri}")
        return path
    bucket, key = _split_s3(uri)
    cache = Path(cache_dir or os.environ.get("MRNET_CACHE", tempfile.gettempdir())) / "mrnet-s3"
    target = cache / bucket / key
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(str(target)) as tmp, _s3_errors(uri, "read"):
        s3_client().download_file(bucket, key, str(tmp))
    return target


def read_bytes(uri: str) -> bytes:
    return local_path(uri).read_bytes()


def read_text(uri: str) -> str:
    return read_bytes(uri).decode("utf-8")


def read_json(uri: str) -> dict | list | None:
    """A JSON file's content, or None when there is none: one read, not a check and a read."""
    try:
        return json.loads(read_text(uri))
    except FileNotFoundError:
        return None


def file_record(path: str | Path) -> dict:
    """``{"bytes", "sha256"}`` of a finished local file, taken where it is written (its temp copy, before it is
    published): a manifest records it so that readers and ``mrnet verify`` can check the file, and the writer
    never reads it back from a store."""
    return {"bytes": Path(path).stat().st_size, "sha256": sha256_file(path)}


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()
