"""Out-of-core cross-entropy through fastce.dask on a LocalCluster, against one in-memory call.

    python bench/dask_scale.py [--dir /tmp/fastce-dask] [--gib 2.5] [--classes 32768]

Writes (once; reused when present) float32 logits of about ``--gib`` GiB and int64 targets as
``.npy`` files, then measures

1. in memory: ``np.load`` the whole file, one ``fastce.cross_entropy`` call (in a subprocess,
   so its peak RSS is its own);
2. ``fastce.dask`` on ``LocalCluster(processes=True, n_workers=2, threads_per_worker=1)``
   reading the file with ``fastce.dask.from_npy``:
   a. batch-chunked (``(rows, -1)``, ~64 MiB chunks), fastce's kernels per chunk;
   b. vocab-parallel (``(rows, C / 4)``): every chunk holds a quarter of the vocabulary.

Memory is the peak of the summed RSS of every process of the run (client + scheduler, nannies,
workers), sampled every 20 ms with psutil; the workers' own peak is printed too.  The files sit
in the page cache after they are written, so this measures compute and data movement, not disk
reads.  Not collected by pytest (no ``test_`` prefix); not a CI job -- it takes minutes.
"""
import argparse
import json
import os
import subprocess
import sys
import threading
import time

import numpy as np

IN_MEMORY = r"""
import json, resource, sys, time
import numpy as np, fastce
t0 = time.perf_counter()
x = np.load(sys.argv[1]); t = np.load(sys.argv[2])
t1 = time.perf_counter()
times = []
cpu = []
for _ in range(int(sys.argv[3])):
    s, c = time.perf_counter(), time.process_time()
    loss = fastce.cross_entropy(x, t)
    times.append(time.perf_counter() - s); cpu.append(time.process_time() - c)
print(json.dumps(dict(load=t1 - t0, call=min(times), calls=times, cpu=min(cpu), loss=float(loss),
                      peak_rss=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)))
"""


def cpu_model():
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def make_data(d, gib, C, seed=0):
    os.makedirs(d, exist_ok=True)
    N = int(gib * 2**30 // (4 * C))
    xp, tp = os.path.join(d, f"logits_{N}x{C}.npy"), os.path.join(d, f"target_{N}.npy")
    if not (os.path.exists(xp) and os.path.exists(tp)):
        rng = np.random.default_rng(seed)
        x = np.lib.format.open_memmap(xp + ".part", mode="w+", dtype=np.float32, shape=(N, C))
        step = max(1, (64 << 20) // (4 * C))
        for s in range(0, N, step):
            x[s:s + step] = rng.standard_normal((min(step, N - s), C), dtype=np.float32) * 3
        x.flush()
        del x
        os.replace(xp + ".part", xp)
        np.save(tp, rng.integers(0, C, N))
    return xp, tp, N


def cpu_seconds(pids):
    """user + system CPU seconds so far of the processes `pids` (all their threads)."""
    import psutil
    total = 0.0
    for pid in pids:
        t = psutil.Process(pid).cpu_times()
        total += t.user + t.system
    return total


class PeakRSS:
    """Peak summed RSS of this process and all its descendants, and of the workers alone."""

    def __init__(self, worker_pids=()):
        import psutil
        self.psutil = psutil
        self.me = psutil.Process()
        self.worker_pids = set(worker_pids)
        self.peak = self.peak_workers = 0
        self._stop = threading.Event()

    def sample(self):
        procs = [self.me] + self.me.children(recursive=True)
        total = workers = 0
        for p in procs:
            try:
                rss = p.memory_info().rss
            except self.psutil.Error:
                continue
            total += rss
            if p.pid in self.worker_pids:
                workers += rss
        self.peak = max(self.peak, total)
        self.peak_workers = max(self.peak_workers, workers)

    def __enter__(self):
        self.sample()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        return self

    def _run(self):
        while not self._stop.wait(0.02):
            self.sample()

    def __exit__(self, *exc):
        self._stop.set()
        self.thread.join()
        self.sample()


def gib(b):
    return f"{b / 2**30:.2f} GiB"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dir", default="/tmp/fastce-dask-bench")
    ap.add_argument("--gib", type=float, default=2.5)
    ap.add_argument("--classes", type=int, default=32768)
    ap.add_argument("--chunk-mib", type=float, default=64.0,
                    help="batch-chunked chunk size (vocab-parallel: --vocab-chunk-mib)")
    # 32 MiB: 80 tasks; 8 MiB (320 tasks) measured 3.7 against 2.2 worker CPU-s, distributed's
    # per-task cost (the float64 copy of a chunk is a pooled buffer: no size limit from glibc)
    ap.add_argument("--vocab-chunk-mib", type=float, default=32.0)
    ap.add_argument("--mmap", action="store_true",
                    help="from_npy(mmap=True): map whole-row chunks instead of reading them "
                         "into pooled buffers (os.preadv, the default)")
    ap.add_argument("--distributed-malloc", action="store_true",
                    help="keep distributed's worker malloc settings (trim threshold 64 KiB)")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--json", help="also write the results here")
    a = ap.parse_args(argv)

    import dask
    import fastce.dask as fcd
    from distributed import Client, LocalCluster

    xp, tp, N = make_data(a.dir, a.gib, a.classes)
    C = a.classes
    size = os.path.getsize(xp)
    print(f"# {cpu_model()}, {os.cpu_count()} CPUs (shared: a busy machine, timings are noisy)")
    print(f"# logits {N} x {C} float32 = {gib(size)} on disk ({xp}), page-cached")
    res = dict(cpu=cpu_model(), N=N, C=C, bytes=size)

    r = json.loads(subprocess.run([sys.executable, "-c", IN_MEMORY, xp, tp, str(a.repeat)],
                                  capture_output=True, text=True, check=True).stdout)
    res["in_memory"] = r
    print(f"in-memory  : load {r['load']:.2f} s, one fastce call {r['call']:.2f} s "
          f"(CPU {r['cpu']:.2f} s) "
          f"({size / r['call'] / 2**30:.2f} GiB/s), peak RSS {gib(r['peak_rss'])}")

    rows = max(1, int(a.chunk_mib * 2**20 // (4 * C)))
    vrows = max(1, int(a.vocab_chunk_mib * 2**20 // (4 * (C // 4))))
    cases = {
        "batch-chunked": (rows, -1),
        "vocab-parallel (C/4 per chunk)": (vrows, C // 4),
    }
    mmap = a.mmap
    res["mmap"] = mmap
    # distributed starts workers with MALLOC_TRIM_THRESHOLD_=64 KiB, which also switches off
    # glibc's adaptive mmap threshold: every chunk-sized buffer is then a fresh mmap, first-touch
    # page-faulted (on this VM that costs as much as the kernel) and unmapped again.  With the
    # mmap threshold at its 32 MiB maximum and a 256 MiB trim threshold, freed chunk buffers are
    # reused; memory stays bounded by the chunks in flight plus the trim threshold.
    environ = {} if a.distributed_malloc else {
        "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": str(256 << 20),
        "distributed.nanny.pre-spawn-environ.MALLOC_MMAP_THRESHOLD_": str(32 << 20)}
    res["worker_environ"] = environ
    print(f"# from_npy(mmap={mmap}); chunks of ~{a.chunk_mib:g} MiB batch-chunked, "
          f"{a.vocab_chunk_mib:g} MiB vocab-parallel; worker malloc: "
          f"{'distributed defaults' if a.distributed_malloc else environ}")
    with dask.config.set(environ), \
            LocalCluster(processes=True, n_workers=2, threads_per_worker=1,
                         dashboard_address=None, memory_limit="4GiB") as cluster, \
            Client(cluster) as client:
        worker_pids = set(client.run(os.getpid).values())
        print("# worker environ:", set(client.run(lambda: (os.environ.get("MALLOC_TRIM_THRESHOLD_"),
                                                         os.environ.get("MALLOC_MMAP_THRESHOLD_"),
                                                         os.environ.get("OMP_NUM_THREADS"))
                                             ).values()))
        client.run(lambda: __import__("fastce.dask"))        # imports out of the timing
        idle = PeakRSS(worker_pids)
        idle.sample()
        res["idle"] = dict(total=idle.peak, workers=idle.peak_workers)
        print(f"cluster idle: RSS of all processes {gib(idle.peak)} "
              f"(workers {gib(idle.peak_workers)}): interpreters, numpy, dask, distributed")
        for name, chunks in cases.items():
            times, cpus, peak, peak_w = [], [], 0, 0
            for _ in range(a.repeat):
                x = fcd.from_npy(xp, chunks=chunks, mmap=mmap)
                t = fcd.from_npy(tp, chunks=(x.chunks[0],), mmap=mmap)
                with PeakRSS(worker_pids) as mem:
                    s, c = time.perf_counter(), cpu_seconds(worker_pids)
                    loss = float(fcd.cross_entropy(x, t).compute())
                    times.append(time.perf_counter() - s)
                    cpus.append(cpu_seconds(worker_pids) - c)
                peak, peak_w = max(peak, mem.peak), max(peak_w, mem.peak_workers)
            best = min(times)
            ulp = abs(loss - r["loss"]) / float(np.spacing(np.float32(r["loss"])))
            res[name] = dict(chunks=[int(c) for c in x.chunksize], times=times, cpu=cpus,
                             peak_total=peak, peak_workers=peak_w, loss=loss)
            print(f"{name:31s}: chunks {x.chunksize} ({len(x.chunks[0]) * len(x.chunks[1])} "
                  f"tasks), {best:.2f} s = {best / r['call']:.2f}x the in-memory call "
                  f"({best / (r['call'] + r['load']):.2f}x load + call); workers' CPU "
                  f"{min(cpus):.2f} s = {min(cpus) / r['cpu']:.2f}x the call's; peak RSS of all "
                  f"processes {gib(peak)} (workers {gib(peak_w)}); "
                  f"loss {loss:.7g} vs {r['loss']:.7g} ({ulp:.0f} ulp)")
    # the same graphs on dask's threaded scheduler in this process (2 threads, no workers):
    # what the task overhead of a process cluster costs on this machine
    import resource
    for name, chunks in cases.items():
        x = fcd.from_npy(xp, chunks=chunks, mmap=mmap)
        t = fcd.from_npy(tp, chunks=(x.chunks[0],), mmap=mmap)
        times, cpus = [], []
        for _ in range(a.repeat):
            s, c = time.perf_counter(), time.process_time()
            fcd.cross_entropy(x, t).compute(scheduler="threads", num_workers=2)
            times.append(time.perf_counter() - s)
            cpus.append(time.process_time() - c)
        res[name + " [threads]"] = dict(times=times, cpu=cpus)
        print(f"{name + ' [threads]':31s}: {min(times):.2f} s = {min(times) / r['call']:.2f}x "
              f"the in-memory call; CPU {min(cpus):.2f} s = {min(cpus) / r['cpu']:.2f}x the "
              f"call's; peak RSS of this process so far "
              f"{gib(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=1)
    return res


if __name__ == "__main__":
    dask_scale = main()
