"""Pipeline stages: round trips, stock-tool compatibility, back-pressure, failures."""

import asyncio
import hashlib
import os
import subprocess
import sys
from collections.abc import AsyncGenerator
from pathlib import Path

import pyrage
import pytest

from app.config import CompressionAlgorithm
from app.services.artifacts.compress import compress, decompress
from app.services.artifacts.encrypt import EncryptionError, decrypt, encrypt, load_identities
from app.services.artifacts.read import opened
from app.services.artifacts.stages import (
    CHUNK,
    Digest,
    SizeLimitExceeded,
    buffered,
    collect,
    from_bytes,
    limited,
    rechunk,
)
from app.services.databases.backup import sealed_file
from app.services.databases.manifest import format_chain
from app.services.databases.postgres.source import pipe, whole_chunks
from app.services.jobs.runner import Progress
from tests.support.settings import make_settings

PAYLOAD = b"".join(f"row {i} {'x' * (i % 50)} {os.urandom(8).hex()}\n".encode()
                   for i in range(60_000))


@pytest.fixture(scope="module")
def identity(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    ident = pyrage.x25519.Identity.generate()
    path = tmp_path_factory.mktemp("age") / "key.txt"
    path.write_text(f"# test key\n{ident}\n")
    return path, str(ident.to_public())


@pytest.mark.parametrize("algorithm", list(CompressionAlgorithm))
async def test_compress_round_trip(algorithm: CompressionAlgorithm) -> None:
    level = 6 if algorithm is CompressionAlgorithm.gzip else 3
    packed = await collect(compress(from_bytes(PAYLOAD, 65536), algorithm, level))
    if algorithm is not CompressionAlgorithm.none:
        assert len(packed) < len(PAYLOAD) / 2
    assert await collect(decompress(from_bytes(packed, 4096), algorithm)) == PAYLOAD


@pytest.mark.parametrize(("algorithm", "tool"), [(CompressionAlgorithm.zstd, "zstd"),
                                                 (CompressionAlgorithm.gzip, "gzip")])
async def test_stock_tools_open_our_streams(identity: tuple[Path, str],
                                            algorithm: CompressionAlgorithm, tool: str,
                                            tmp_path: Path) -> None:
    key, recipient = identity
    stream = encrypt(compress(from_bytes(PAYLOAD), algorithm, 3), [recipient])
    artifact = tmp_path / "artifact"
    artifact.write_bytes(await collect(stream))
    assert artifact.read_bytes().startswith(b"age-encryption.org/v1\n")
    out = subprocess.run(f"age -d -i {key} {artifact} | {tool} -d -c", shell=True,
                         capture_output=True, check=True)
    assert out.stdout == PAYLOAD


async def test_we_open_stock_tool_streams(identity: tuple[Path, str], tmp_path: Path) -> None:
    key, recipient = identity
    source = tmp_path / "plain"
    source.write_bytes(PAYLOAD)
    made = subprocess.run(f"zstd -q -c -19 {source} | age -r {recipient}", shell=True,
                          capture_output=True, check=True).stdout
    stream = decompress(decrypt(from_bytes(made, 1000), load_identities(key)),
                        CompressionAlgorithm.zstd)
    assert await collect(stream) == PAYLOAD


async def test_wrong_identity_is_a_clear_error(identity: tuple[Path, str],
                                               tmp_path: Path) -> None:
    _, recipient = identity
    other = tmp_path / "other.txt"
    other.write_text(str(pyrage.x25519.Identity.generate()) + "\n")
    sealed = await collect(encrypt(from_bytes(PAYLOAD), [recipient]))
    with pytest.raises(EncryptionError, match="does not match a recipient"):
        await collect(decrypt(from_bytes(sealed), load_identities(other)))


async def test_flipped_bit_fails_decryption(identity: tuple[Path, str]) -> None:
    key, recipient = identity
    sealed = bytearray(await collect(encrypt(from_bytes(PAYLOAD), [recipient])))
    sealed[len(sealed) // 2] ^= 0x01
    with pytest.raises(EncryptionError):
        await collect(decrypt(from_bytes(bytes(sealed)), load_identities(key)))


async def test_truncated_zstd_fails() -> None:
    packed = await collect(compress(from_bytes(PAYLOAD), CompressionAlgorithm.zstd, 3))
    with pytest.raises(Exception, match="(?i)truncat|incomplete|premature|end of"):
        await collect(decompress(from_bytes(packed[:-100]), CompressionAlgorithm.zstd))


async def test_truncated_gzip_fails() -> None:
    packed = await collect(compress(from_bytes(PAYLOAD), CompressionAlgorithm.gzip, 6))
    with pytest.raises(Exception, match="truncated"):
        await collect(decompress(from_bytes(packed[:-100]), CompressionAlgorithm.gzip))


async def test_digest_and_limit() -> None:
    digest = Digest()
    assert await collect(digest.tap(from_bytes(PAYLOAD))) == PAYLOAD
    import hashlib
    assert digest.hexdigest == hashlib.sha256(PAYLOAD).hexdigest()
    assert digest.size == len(PAYLOAD)
    with pytest.raises(SizeLimitExceeded, match="size limit of 1 MB"):
        await collect(limited(from_bytes(PAYLOAD), 1024 * 1024))


async def test_upstream_failure_reaches_the_consumer_through_every_stage(
        identity: tuple[Path, str]) -> None:
    _, recipient = identity

    async def dying() -> AsyncGenerator[bytes, None]:
        yield PAYLOAD[:100_000]
        raise RuntimeError("source died mid-dump")

    stream = buffered(encrypt(compress(buffered(dying()), CompressionAlgorithm.zstd, 3),
                              [recipient]))
    with pytest.raises(RuntimeError, match="source died mid-dump"):
        await collect(stream)


async def test_slow_consumer_slows_the_producer() -> None:
    produced = 0

    async def fast() -> AsyncGenerator[bytes, None]:
        nonlocal produced
        for _ in range(1000):
            produced += 1
            yield b"x" * 1024

    stream = buffered(fast(), depth=4)
    first = await anext(stream)
    assert first == b"x" * 1024
    await asyncio.sleep(0.05)
    # The queue holds 4 chunks; the producer waits with at most one more in hand.
    assert produced <= 6
    await stream.aclose()


async def test_consumer_leaving_early_stops_worker_threads(identity: tuple[Path, str]) -> None:
    _, recipient = identity

    async def endless() -> AsyncGenerator[bytes, None]:
        block = os.urandom(1 << 16)
        while True:
            yield block

    stream = encrypt(endless(), [recipient])
    for _ in range(5):
        await anext(stream)
    await asyncio.wait_for(stream.aclose(), timeout=5)


async def test_rechunk_coalesces_small_pieces_and_passes_whole_chunks() -> None:
    pieces = [PAYLOAD[i:i + 1000] for i in range(0, 300_000, 1000)]
    out = await collect_list(rechunk(from_list(pieces), 65536))
    assert b"".join(out) == PAYLOAD[:300_000]
    assert all(len(c) >= 65536 for c in out[:-1])
    assert len(out) == 300_000 // 65536 + 1
    whole = PAYLOAD[:65536]
    assert (await collect_list(rechunk(from_list([whole]), 65536)))[0] is whole


async def test_pipe_reads_come_in_whole_chunks() -> None:
    # A writer that flushes 8 KiB at a time, as pg_dump does.
    reader, write_fd = pipe()
    script = ("import sys\nfor _ in range(400):\n"
              "    sys.stdout.buffer.write(b'x' * 8192); sys.stdout.buffer.flush()\n")
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", script, stdout=write_fd)
    os.close(write_fd)
    try:
        sizes = [len(c) for c in await collect_list(whole_chunks(reader))]
    finally:
        reader.close()
    assert await proc.wait() == 0
    assert sizes == [CHUNK] * 3 + [400 * 8192 - 3 * CHUNK]


async def from_list(pieces: list[bytes]) -> AsyncGenerator[bytes, None]:
    for piece in pieces:
        yield piece


async def collect_list(chunks: AsyncGenerator[bytes, None]) -> list[bytes]:
    return [chunk async for chunk in chunks]


@pytest.mark.parametrize(("algorithm", "encrypted"), [
    (CompressionAlgorithm.zstd, True), (CompressionAlgorithm.gzip, True),
    (CompressionAlgorithm.none, True), (CompressionAlgorithm.zstd, False)])
async def test_a_sealed_file_is_stored_as_the_pipeline_stores_it(
        identity: tuple[Path, str], algorithm: CompressionAlgorithm, encrypted: bool,
        tmp_path: Path) -> None:
    key, recipient = identity
    settings = make_settings(
        compression={"algorithm": algorithm},
        encryption={"recipients": [recipient] if encrypted else [], "identity_file": str(key)})
    plain = tmp_path / "000000010000000000000003"
    plain.write_bytes(PAYLOAD)
    digest, progress = Digest(), Progress()
    stored = await collect(sealed_file(settings, plain, digest, progress))
    assert digest.hexdigest == hashlib.sha256(stored).hexdigest()
    assert (progress.bytes_read, progress.bytes_written) == (len(PAYLOAD), len(stored))
    assert stored.startswith(b"age-encryption.org/v1\n") == encrypted
    chain = format_chain(settings, "wal")
    assert await collect(opened(from_bytes(stored, 4096), chain, settings)) == PAYLOAD
    if algorithm is CompressionAlgorithm.zstd:
        (tmp_path / "stored").write_bytes(stored)
        decrypt_step = f"age -d -i {key} {tmp_path / 'stored'} | " if encrypted else \
            f"cat {tmp_path / 'stored'} | "
        out = subprocess.run(decrypt_step + "zstd -d -c", shell=True, capture_output=True,
                             check=True)
        assert out.stdout == PAYLOAD


async def test_a_sealed_file_that_is_gone_raises_file_not_found(
        identity: tuple[Path, str], tmp_path: Path) -> None:
    # The archiver counts on it: a partial segment completed meanwhile is shipped whole.
    settings = make_settings(encryption={"recipients": [identity[1]]})
    with pytest.raises(FileNotFoundError):
        await collect(sealed_file(settings, tmp_path / "gone", Digest(), Progress()))


async def test_leaving_a_sealed_file_early_stops_its_thread(
        identity: tuple[Path, str], tmp_path: Path) -> None:
    settings = make_settings(encryption={"recipients": [identity[1]]},
                             compression={"algorithm": CompressionAlgorithm.none})
    big = tmp_path / "big"
    big.write_bytes(os.urandom(8 * CHUNK))
    stream = sealed_file(settings, big, Digest(), Progress())
    await anext(stream)
    # Closing waits for the worker thread: it returns only once that thread has ended.
    await asyncio.wait_for(stream.aclose(), timeout=5)
