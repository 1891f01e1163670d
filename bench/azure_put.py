"""Wall time and peak RSS of one AzureBlobStorage.put of a generated stream to Azurite, to
size blocks and blocks in flight (issue 15) without the whole `make bench`.

    python -m bench.azure_put [--mib 300] [--block-mib 8] [--in-flight 2] [--get] [--read-mib 2]
                              [--trace] [--impl path/to/another/azure.py]

Prints RSS at start, after importing the SDK, the peak over the put (VmHWM, reset just
before it) and the wall time; --get then reads the object back, as the verification
after a backup does. --trace also prints what Python held at the traced peak
(tracemalloc; slower, so its time is not comparable). --impl loads AzureBlobStorage from
another file (e.g. `git show HEAD~1:app/services/storage/azure.py > /tmp/old.py`), to
compare versions.
"""

import argparse
import asyncio
import importlib.util
import os
import sys
import time
import tracemalloc
import uuid
from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Any

MIB = 1024 * 1024
AZURE_URL = os.environ.get("BACKVAULT_AZURE_ACCOUNT_URL",
                           "http://127.0.0.1:50110/devstoreaccount1")
# Azurite's fixed development key (public, documented by Microsoft).
AZURE_KEY = os.environ.get(
    "BACKVAULT_AZURE_ACCOUNT_KEY",
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==")


def say(text: str) -> None:
    sys.stdout.write(text + "\n")


def status_mib(field: str) -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return 0.0


def reset_peak() -> None:
    """VmHWM back to the current RSS (Linux: clear_refs 5, on our own process)."""
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")


async def source(total: int) -> AsyncGenerator[bytes, None]:
    """1 MiB chunks, each a new object as a pipeline's stage makes them."""
    block = os.urandom(MIB)
    sent = 0
    while sent < total:
        chunk = (sent // MIB).to_bytes(8, "big") + block[8:]
        sent += len(chunk)
        yield chunk
        await asyncio.sleep(0)


async def traced_peak(stop: asyncio.Event, best: list[tracemalloc.Snapshot]) -> None:
    top = 0
    while not stop.is_set():
        current, _ = tracemalloc.get_traced_memory()
        if current > top:
            top = current
            best[:] = [tracemalloc.take_snapshot()]
        await asyncio.sleep(0.02)


async def main(args: argparse.Namespace) -> None:
    start_rss = status_mib("VmRSS")
    if args.impl:
        spec = importlib.util.spec_from_file_location("azure_impl", args.impl)
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules["azure_impl"] = module
        spec.loader.exec_module(module)
        storage_class = module.AzureBlobStorage
    else:
        from app.services.storage.azure import AzureBlobStorage as storage_class
    imported_rss = status_mib("VmRSS")
    store = storage_class(AZURE_URL, "bench", prefix=f"put-{uuid.uuid4().hex[:8]}",
                             account_key=AZURE_KEY, max_object_bytes=1024 ** 3,
                             **({"blocks_in_flight": args.in_flight} if args.in_flight else {}))
    if args.read_mib:
        storage_module: Any = sys.modules[storage_class.__module__]
        storage_module.READ_SIZE = args.read_mib * MIB
    if args.block_mib:
        store.block_size = args.block_mib * MIB
    await store.prepare()
    warm_rss = status_mib("VmRSS")
    stop, best = asyncio.Event(), list[tracemalloc.Snapshot]()
    if args.trace:
        tracemalloc.start(8)
        sampler = asyncio.create_task(traced_peak(stop, best))
    reset_peak()
    began = time.perf_counter()
    await store.put("obj.bin", source(args.mib * MIB))
    took = time.perf_counter() - began
    peak = status_mib("VmHWM")
    stop.set()
    say(f"block {store.block_size // MIB} MiB x in flight "
          f"{getattr(store, 'blocks_in_flight', 1)}: {args.mib} MiB in {took:.2f} s "
          f"({args.mib / took:.0f} MiB/s); RSS start {start_rss:.0f} MiB, after import "
          f"{imported_rss:.0f}, warm {warm_rss:.0f}, peak during put {peak:.0f} MiB")
    if args.trace:
        await sampler
        show_traced(best)
    if args.get:  # as the verification after a backup reads it back
        stop, best = asyncio.Event(), list[tracemalloc.Snapshot]()
        if args.trace:
            tracemalloc.reset_peak()
            sampler = asyncio.create_task(traced_peak(stop, best))
        reset_peak()
        began = time.perf_counter()
        async with aclosing(store.get("obj.bin")) as chunks:
            async for _ in chunks:
                pass
        say(f"get: {args.mib} MiB in {time.perf_counter() - began:.2f} s; RSS peak during "
            f"get {status_mib('VmHWM'):.0f} MiB")
        stop.set()
        if args.trace:
            await sampler
            show_traced(best)
    await store.delete("obj.bin")


def show_traced(best: list[tracemalloc.Snapshot]) -> None:
    _, traced = tracemalloc.get_traced_memory()
    say(f"traced peak {traced / MIB:.1f} MiB; held at the sampled peak:")
    for stat in best[0].statistics("traceback")[:6] if best else []:
        say(f"  {stat.size / MIB:7.1f} MiB in {stat.count} blocks")
        for line in stat.traceback.format()[-6:]:
            say("     " + line)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--mib", type=int, default=300)
    parser.add_argument("--block-mib", type=int, default=0)
    parser.add_argument("--in-flight", type=int, default=0)
    parser.add_argument("--trace", action="store_true")
    parser.add_argument("--impl", default="")
    parser.add_argument("--get", action="store_true", help="then read it back")
    parser.add_argument("--read-mib", type=int, default=0, help="bytes per ranged GET")
    asyncio.run(main(parser.parse_args()))
