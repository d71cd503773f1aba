"""Worker CPU of the batch-chunked fastce.dask cross-entropy against one in-memory call, by chunk
size and read mode (preadv copies into pooled buffers vs mapped views), interleaved, on one
LocalCluster.

    python bench/dask_chunk_sweep.py [--dir /tmp/fastce-dask-bench] [--repeat 3]

Uses the files bench/dask_scale.py writes (run it first).  CPU seconds (all threads of the two
worker processes; process_time for the in-memory call, which runs on fastce's OpenMP threads)
are the figure to read on a shared machine: wall times there follow the load.  Every dask
result is checked to be the in-memory loss, bit for bit.  Not collected by pytest.
"""
import argparse
import glob
import json
import os
import time

import numpy as np


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dir", default="/tmp/fastce-dask-bench")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--sizes", default="16,32,64,128", help="chunk sizes in MiB")
    a = ap.parse_args(argv)

    import dask
    import psutil
    from distributed import Client, LocalCluster

    import fastce
    import fastce.dask as fcd
    from dask_scale import cpu_model

    xp = sorted(glob.glob(os.path.join(a.dir, "logits_*.npy")))[0]
    tp = sorted(glob.glob(os.path.join(a.dir, "target_*.npy")))[0]
    x = np.array(fcd.NpyFile(xp)[:])
    t = np.load(tp)
    C = x.shape[1]
    print(f"# {cpu_model()}, {os.cpu_count()} CPUs (shared: timings are noisy); "
          f"{x.shape[0]} x {C} {x.dtype} ({x.nbytes / 2**30:.2f} GiB), page-cached")

    def cpu(pids):
        return sum(sum(psutil.Process(p).cpu_times()[:2]) for p in pids)

    res = {"cpu": cpu_model(), "in-memory": []}
    cfg = {"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": str(256 << 20),
           "distributed.nanny.pre-spawn-environ.MALLOC_MMAP_THRESHOLD_": str(32 << 20)}
    configs = [(mode, int(m)) for m in a.sizes.split(",") for mode in ("copy", "mmap")]
    with dask.config.set(cfg), \
            LocalCluster(processes=True, n_workers=2, threads_per_worker=1,
                         dashboard_address=None, memory_limit="4GiB") as cluster, \
            Client(cluster) as client:
        pids = list(client.run(os.getpid).values())
        client.run(lambda: __import__("fastce.dask"))
        for _ in range(a.repeat):
            s, c = time.perf_counter(), time.process_time()
            want = float(fastce.cross_entropy(x, t))
            res["in-memory"].append((time.perf_counter() - s, time.process_time() - c))
            for mode, mib in configs:
                rows = max(1, int(mib * 2**20 // (x.itemsize * C)))
                xd = fcd.from_npy(xp, chunks=(rows, -1), mmap=mode == "mmap")
                td = fcd.from_npy(tp, chunks=(xd.chunks[0],), mmap=mode == "mmap")
                s, c = time.perf_counter(), cpu(pids)
                got = float(fcd.cross_entropy(xd, td).compute())
                res.setdefault(f"{mode} {mib} MiB ({len(xd.chunks[0])} tasks)", []).append(
                    (time.perf_counter() - s, cpu(pids) - c))
                assert got == want, (mode, mib, got, want)
    for name, runs in res.items():
        if name == "cpu":
            continue
        w = [r[0] for r in runs]
        c = [r[1] for r in runs]
        print(f"{name:26s}: wall {min(w):.2f}-{max(w):.2f} s, CPU {min(c):.2f}-{max(c):.2f} s")
    return res


if __name__ == "__main__":
    print(json.dumps(main()))
