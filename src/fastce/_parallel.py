"""How many OpenMP threads a kernel call gets: the one place for that rule.

Two things decide it:

- Size.  Starting an OpenMP team costs a few microseconds; below a per-family crossover (in
  elements) one thread wins, so the kernel runs on the calling thread without a team.
- fork().  libgomp's thread pool does not survive fork(): in a child process, the first
  parallel region that the parent's pool would have served waits forever for threads that no
  longer exist.  That is what ``multiprocessing`` (fork start method, the Linux default before
  Python 3.14) and data-loader workers do.  A child created by fork therefore runs every fastce
  kernel on its calling thread (correct results, no deadlock); children started with "spawn" or
  "forkserver" are fresh processes and use threads as usual.  A team of one thread never touches
  the pool, so it is safe in a forked child.
"""
import os

from . import _threads

# Below this many elements a kernel runs on the calling thread: starting an OpenMP team costs
# more than the work.  Measured (fused CE, C = 10 and 1000): two threads tie one at 4K elements
# and win from 8K on.
PARALLEL_MIN_ELEMENTS = 1 << 13

_forked_child = False


def _after_fork_in_child():
    global _forked_child
    _forked_child = True


if hasattr(os, "register_at_fork"):         # POSIX; Windows has no fork
    os.register_at_fork(after_in_child=_after_fork_in_child)


def in_forked_child():
    """True in a process created by fork() from one that imported fastce."""
    return _forked_child


def get_num_threads():
    """Number of threads fastce kernels use for large inputs.

    The OpenMP runtime's setting (``OMP_NUM_THREADS``, ``threadpoolctl.threadpool_limits``);
    1 without OpenMP and in a child process created by ``fork()`` (see the module docstring).
    """
    if _forked_child:
        return 1
    return _threads.get_num_threads()


def nthreads(n_elements, min_elements=PARALLEL_MIN_ELEMENTS):
    """Threads for a kernel call over `n_elements` elements: 1 below the crossover."""
    if n_elements < min_elements or _forked_child:
        return 1
    return _threads.get_num_threads()
