"""Datasets on S3-compatible storage, against a real S3 server on 127.0.0.1 (moto's standalone
server in a subprocess), configured the standard way: AWS_* environment variables and
AWS_ENDPOINT_URL. Covers generate, verify, byte-for-byte reads, resume, corruption, the local
read cache (``filecache::`` / ``simplecache::``) and the commands.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import nibabel
import numpy as np
import pytest
import torch

pytest.importorskip("s3fs")
pytest.importorskip("moto.server")
boto3 = pytest.importorskip("boto3")

import fsspec  # noqa: E402

import synthgen  # noqa: E402
from synthgen.cli import main  # noqa: E402
from synthgen.engines import get_engine  # noqa: E402
from synthgen.errors import SynthgenError  # noqa: E402
from synthgen.runner import generate  # noqa: E402

from tests.conftest import shard_bytes  # noqa: E402
from tests.helpers import free_port

BUCKET = "synthgen-test"
N, SHARD, SEED, SIZE = 6, 2, 3, 32  # three shards of two samples at 32^3
REQUEST = re.compile(r'"(GET|PUT|HEAD|DELETE|POST) (\S+) HTTP/')


class S3Server:
    """moto's S3 server on 127.0.0.1:port in a subprocess, its request log in a file."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.log = workdir / "moto.log"
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, cwd=workdir)
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        deadline = time.monotonic() + 30
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"moto server exited: {self.log.read_text()[-2000:]}")
            try:
                opener.open(self.endpoint + "/", timeout=1).read()
                return
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("moto server did not answer within 30 s") from None
                time.sleep(0.1)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)

    def mark(self) -> int:
        """A position in the request log; see :meth:`requests_since`."""
        return self.log.stat().st_size

    def requests_since(self, mark: int) -> list[tuple[str, str]]:
        """(method, path) of the requests logged after ``mark`` (waits for the log to settle:
        the server logs a request after answering it)."""
        size, settled = -1, 0
        while settled < 3:
            time.sleep(0.05)
            current = self.log.stat().st_size
            settled = settled + 1 if current == size else 0
            size = current
        with open(self.log, "rb") as log:
            log.seek(mark)
            text = log.read().decode(errors="replace")
        return [(m.group(1), m.group(2).split("?")[0]) for m in REQUEST.finditer(text)]


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A running S3 server with one bucket; the AWS environment points at it (dummy
    credentials, no profile files, no instance metadata lookups)."""
    workdir = tmp_path_factory.mktemp("s3")
    server = S3Server(workdir)
    with pytest.MonkeyPatch.context() as patch:
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_DEFAULT_PROFILE"):
            patch.delenv(name, raising=False)
        patch.setenv("AWS_ACCESS_KEY_ID", "testing")
        patch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        patch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        patch.setenv("AWS_REGION", "us-east-1")
        patch.setenv("AWS_ENDPOINT_URL", server.endpoint)
        patch.setenv("AWS_EC2_METADATA_DISABLED", "true")
        patch.setenv("AWS_CONFIG_FILE", str(workdir / "no-aws-config"))
        patch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(workdir / "no-aws-credentials"))
        patch.setenv("NO_PROXY", "127.0.0.1,localhost")
        patch.setenv("no_proxy", "127.0.0.1,localhost")
        patch.setenv("XDG_CACHE_HOME", str(workdir / "xdg-cache"))  # filecache:: default
        fsspec.AbstractFileSystem.clear_instance_cache()
        try:
            boto3.client("s3").create_bucket(Bucket=BUCKET)
            yield server
        finally:
            fsspec.AbstractFileSystem.clear_instance_cache()
            server.stop()


def make(out: str, **kwargs: object):
    return generate(get_engine("random-shapes", size=SIZE), out, N, seed=SEED, shard_size=SHARD,
                    backend="local", progress=False, **kwargs)


def bucket_objects(prefix: str) -> dict[str, bytes]:
    """{key relative to prefix: bytes} of the objects under ``prefix/`` in the bucket."""
    client = boto3.client("s3")
    listing = client.list_objects_v2(Bucket=BUCKET, Prefix=prefix + "/")
    return {item["Key"][len(prefix) + 1:]: client.get_object(Bucket=BUCKET, Key=item["Key"])["Body"].read()
            for item in listing.get("Contents", [])}


def assert_same_samples(dataset: synthgen.store.Dataset, reference: synthgen.store.Dataset,
                        indices: range | list[int]) -> None:
    for index in indices:
        mine, theirs = dataset[index], reference[index]
        assert mine.keys() == theirs.keys()
        for field in mine:
            assert mine[field].dtype == theirs[field].dtype
            assert mine[field].tobytes() == theirs[field].tobytes(), (index, field)


@pytest.fixture(scope="module")
def local_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("local") / "ds.zarr"
    make(str(out))
    return out


@pytest.fixture(scope="module")
def remote_dataset(s3: S3Server) -> str:
    """The same dataset as ``local_dataset``, generated straight to S3 (never modified)."""
    url = f"s3://{BUCKET}/ds.zarr"
    report = make(url)
    assert (report.written_shards, report.skipped_shards) == (3, 0)
    return url


def test_generate_to_s3_verifies_and_matches_local_bytes(remote_dataset: str, local_dataset: Path) -> None:
    dataset = synthgen.open_dataset(remote_dataset)
    assert dataset.is_complete and dataset.committed == [0, 1, 2]
    assert dataset.verify().ok
    reference = synthgen.open_dataset(str(local_dataset))
    assert_same_samples(dataset, reference, range(N))
    for shard in range(3):
        mine, theirs = dataset.read_shard(shard), reference.read_shard(shard)
        assert all(mine[f].tobytes() == theirs[f].tobytes() for f in mine)
    # every stored object (zarr metadata and shard objects) is the same bytes as on a local disk
    remote = {k: v for k, v in bucket_objects("ds.zarr").items() if not k.startswith("_commits/")}
    assert remote == shard_bytes(local_dataset)


def test_resume_rewrites_only_the_uncommitted_shard(s3: S3Server, local_dataset: Path) -> None:
    url = f"s3://{BUCKET}/resume.zarr"
    make(url)
    boto3.client("s3").delete_object(Bucket=BUCKET, Key="resume.zarr/_commits/shard-000001.json")
    assert synthgen.open_dataset(url).committed == [0, 2]
    mark = s3.mark()
    report = make(url)
    assert (report.written_shards, report.skipped_shards, report.samples_written) == (1, 2, 2)
    written = {path for method, path in s3.requests_since(mark) if method == "PUT"}
    fields = list(synthgen.open_dataset(url).fields)
    expected = {f"/{BUCKET}/resume.zarr/_commits/shard-000001.json"}
    expected |= {p for p in written if any(p.startswith(f"/{BUCKET}/resume.zarr/{f}/c/1/") for f in fields)}
    assert written == expected and len(expected) == 1 + len(fields)
    dataset = synthgen.open_dataset(url)
    assert dataset.verify().ok
    assert_same_samples(dataset, synthgen.open_dataset(str(local_dataset)), range(N))


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_corrupt_shard_object_is_named_by_verify_and_reader(
        s3: S3Server, capsys: pytest.CaptureFixture[str], damage: str) -> None:
    from synthgen.stream import ShardStream

    url = f"s3://{BUCKET}/corrupt-{damage}.zarr"
    make(url)
    key = f"corrupt-{damage}.zarr/fixed/c/1/0/0/0"
    client = boto3.client("s3")
    data = client.get_object(Bucket=BUCKET, Key=key)["Body"].read()
    if damage == "truncate":
        damaged = data[: len(data) // 2]
    else:  # one byte in the middle of sample 3's raw chunk (the shard's second; each is SIZE^3 float16 + crc32c)
        middle = SIZE ** 3 * 2 + 4 + SIZE ** 3
        damaged = data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1:]
    client.put_object(Bucket=BUCKET, Key=key, Body=damaged)
    dataset = synthgen.open_dataset(url)
    report = dataset.verify()
    assert not report.ok
    assert len(report.problems) == 1 and report.problems[0].startswith("shard 1 field fixed")
    with pytest.raises(SynthgenError, match=r"shard 1 of field fixed .*corrupt at sample 3 .*synthgen verify"):
        dataset[3]
    with pytest.raises(SynthgenError, match=r"shard 1 of field fixed .*corrupt"):
        list(ShardStream(url, fields=("fixed",)))
    assert dataset[0]["fixed"].shape == (SIZE,) * 3  # the other shards still read
    assert main(["verify", url]) == 1
    err = capsys.readouterr().err
    assert "shard 1 field fixed" in err and "1 bad shard(s) of 3 committed (1)" in err


@pytest.mark.parametrize("codec", ["zstd", "none"])  # the default, lz4, is every other test's
def test_each_label_codec_streams_and_verifies_on_s3(s3: S3Server, local_dataset: Path, codec: str) -> None:
    from synthgen.stream import ShardStream

    url = f"s3://{BUCKET}/codec-{codec}.zarr"
    make(url, label_codec=codec)
    dataset, reference = synthgen.open_dataset(url), synthgen.open_dataset(str(local_dataset))
    assert dataset.info.label_codec == codec and dataset.verify().ok
    assert_same_samples(dataset, reference, range(N))
    for batch in ShardStream(url, fields=("fixed", "fixed_labels"), batch_size=2):
        for row, index in enumerate(batch["index"].tolist()):
            for field in ("fixed", "fixed_labels"):
                assert batch[field][row].numpy().tobytes() == reference[index][field].tobytes()


@pytest.mark.parametrize("protocol", ["filecache", "simplecache"])
def test_cache_url_fetches_each_shard_object_once(
        s3: S3Server, remote_dataset: str, local_dataset: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, protocol: str) -> None:
    monkeypatch.setitem(fsspec.config.conf, protocol, {"cache_storage": str(tmp_path / "cache")})
    url = f"{protocol}::{remote_dataset}"
    reference = synthgen.open_dataset(str(local_dataset))

    def shard_gets(mark: int) -> list[str]:
        return [path for method, path in s3.requests_since(mark) if method == "GET" and "/c/" in path]

    mark = s3.mark()
    dataset = synthgen.open_dataset(url)
    assert dataset.committed == [0, 1, 2]
    assert_same_samples(dataset, reference, [0, 1])
    first = shard_gets(mark)
    assert len(first) == len(dataset.fields) and all(p.split("/c/")[1].startswith("0/") for p in first)

    mark = s3.mark()
    assert_same_samples(dataset, reference, [1, 0])
    assert dataset.read_shard(0)["fixed"].shape == (SHARD, SIZE, SIZE, SIZE)
    again = synthgen.open_dataset(url)  # a new reader (as a new process would be) finds them too
    assert_same_samples(again, reference, [0])
    assert shard_gets(mark) == []
    cached = sorted(p for p in (tmp_path / "cache").rglob("*") if p.is_file())
    assert len(cached) == len(dataset.fields) and all("/c/0/" in str(p) for p in cached)

    # verify through the cache fetches the rest once, then everything is local
    assert dataset.verify().ok
    mark = s3.mark()
    assert_same_samples(dataset, reference, range(N))
    assert dataset.verify().ok
    assert shard_gets(mark) == []


def test_cache_urls_are_read_only(s3: S3Server, remote_dataset: str,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SynthgenError, match=r"cannot be written; write to s3://"):
        make(f"simplecache::s3://{BUCKET}/never.zarr")
    assert bucket_objects("never.zarr") == {}
    before = bucket_objects("ds.zarr")
    code = main(["generate", "--engine", "random-shapes", "--n", str(N), "--size", str(SIZE),
                 "--seed", str(SEED), "--shard-size", str(SHARD), "--backend", "local", "--quiet",
                 "--overwrite", "--out", f"filecache::{remote_dataset}"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "cannot be written" in err
    assert bucket_objects("ds.zarr") == before
    with pytest.raises(SynthgenError, match=r"blockcache:: cache is not supported"):
        synthgen.open_dataset(f"blockcache::{remote_dataset}")


def test_commands_on_s3(remote_dataset: str, local_dataset: Path, tmp_path: Path,
                        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", remote_dataset]) == 0
    out = capsys.readouterr().out
    assert "3/3 committed" in out and "random-shapes" in out
    assert main(["verify", remote_dataset]) == 0
    assert "all 3 shards OK" in capsys.readouterr().out
    assert main(["preview", remote_dataset, "--samples", "0:2", "--out", str(tmp_path / "p.png")]) == 0
    assert (tmp_path / "p.png").stat().st_size > 0
    assert main(["export", remote_dataset, "--sample", "3", "--out", str(tmp_path / "remote")]) == 0
    assert main(["export", str(local_dataset), "--sample", "3", "--out", str(tmp_path / "local")]) == 0
    capsys.readouterr()
    nifti = sorted(p.name for p in (tmp_path / "local").glob("*.nii.gz"))
    assert nifti and nifti == sorted(p.name for p in (tmp_path / "remote").glob("*.nii.gz"))
    for name in nifti:
        assert np.array_equal(np.asanyarray(nibabel.load(tmp_path / "remote" / name).dataobj),
                              np.asanyarray(nibabel.load(tmp_path / "local" / name).dataobj))


def test_missing_bucket_is_one_line_error(s3: S3Server, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["generate", "--engine", "random-shapes", "--n", "2", "--size", str(SIZE),
                 "--backend", "local", "--quiet", "--out", "s3://no-such-bucket/x.zarr"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "create the bucket" in err
    code = main(["info", "s3://no-such-bucket/x.zarr"])
    err = capsys.readouterr().err
    assert code == 2 and "not a synthgen dataset" in err


def test_cache_directories(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """filecache:: keeps objects across runs under XDG_CACHE_HOME unless fsspec's cache_storage
    is configured; simplecache:: uses one temporary directory per process."""
    from synthgen.store.cache import cache_directory

    monkeypatch.delitem(fsspec.config.conf, "filecache", raising=False)
    monkeypatch.delitem(fsspec.config.conf, "simplecache", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_directory("filecache") == str(tmp_path / "xdg" / "synthgen" / "objects")
    session = cache_directory("simplecache")
    assert os.path.isdir(session) and cache_directory("simplecache") == session
    monkeypatch.setitem(fsspec.config.conf, "filecache", {"cache_storage": str(tmp_path / "mine")})
    assert cache_directory("filecache") == str(tmp_path / "mine")


def test_cache_over_a_local_path_with_concurrent_readers(local_dataset: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The cache prefix works over any fsspec location; threads reading one shard at once get
    complete bytes and download each object once."""
    from concurrent.futures import ThreadPoolExecutor

    from fsspec.implementations.local import LocalFileSystem

    monkeypatch.setitem(fsspec.config.conf, "simplecache", {"cache_storage": str(tmp_path / "cache")})
    downloads: list[str] = []
    real = LocalFileSystem.get_file

    def counting(self: LocalFileSystem, path1: str, path2: str, *args: object, **kwargs: object) -> None:
        downloads.append(path1)
        time.sleep(0.05)  # widen the window in which other threads ask for the same object
        real(self, path1, path2, *args, **kwargs)

    monkeypatch.setattr(LocalFileSystem, "get_file", counting)
    dataset = synthgen.open_dataset(f"simplecache::{local_dataset}")
    reference = synthgen.open_dataset(str(local_dataset)).read_shard(1)
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: dataset.read_shard(1), range(16)))
    for result in results:
        assert all(result[f].tobytes() == reference[f].tobytes() for f in reference)
    fetched = {p.relative_to(tmp_path / "cache") for p in (tmp_path / "cache").rglob("*") if p.is_file()}
    assert len(fetched) == len(reference) and len(downloads) == len(set(downloads)) == len(reference)
    assert dataset.verify().ok


def test_stream_from_s3_through_the_cache_fetches_each_shard_object_once(
        s3: S3Server, remote_dataset: str, local_dataset: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from torch.utils.data import DataLoader

    from synthgen.stream import ShardStream

    monkeypatch.setitem(fsspec.config.conf, "filecache", {"cache_storage": str(tmp_path / "cache")})
    url = f"filecache::{remote_dataset}"
    fields = ("fixed", "fixed_labels")

    def epoch(path: str) -> list[dict]:
        stream = ShardStream(path, fields=fields, seed=1, batch_size=2)
        return list(DataLoader(stream, batch_size=None, num_workers=2))

    mark = s3.mark()
    remote, local = epoch(url), epoch(str(local_dataset))
    for a, b in zip(remote, local, strict=True):
        assert torch.equal(a["index"], b["index"])
        for field in fields:
            assert torch.equal(a[field], b[field]), field
    gets = [path for method, path in s3.requests_since(mark) if method == "GET" and "/c/" in path]
    # whole objects only; two workers reading one shard at the same moment may both fetch it
    # (fsspec's file cache has no lock across processes), never more often than there are workers
    assert len(set(gets)) == 3 * len(fields) and len(gets) <= 2 * len(set(gets)), gets
