"""Time and memory to certify exploitability <= 1e-6 with workers.policies (issue #3).

    .venv/bin/python bench/bench_policies.py            # full grid (about 10-15 min)
    .venv/bin/python bench/bench_policies.py --quick    # small grid (about 1 min)
    .venv/bin/python bench/bench_policies.py --adversarial  # support = N cases (about 5 min)
    .venv/bin/python bench/bench_policies.py --k1       # every k = 1 case of both grids vs HiGHS

Populations (both seeded):

* ``gauss``: i.i.d. standard normal utilities ``U[t, i]`` -- the "impartial culture" of
  theory.md section 3 with ``T`` sampled types: hard, little shared structure.
* ``lowrank``: ``U = F G + 0.3 E`` with ``F`` (T, 8), ``G`` (8, N), ``E`` all standard
  normal -- personas and responses embedded in a shared 8-dim taste space plus
  idiosyncratic noise, which mimics real preference data (a few dominant dimensions).
* ``cyclic`` (adversarial, ``T = N``): Latin-square preferences ``U[t, i] = (i - t) mod N``
  with rows and columns relabelled at random, ``0.01`` Gaussian noise and Dirichlet(5)
  type weights (so that the uniform start of Hedge is not already the answer): every
  response is the favourite of one type, and the equilibrium's support is most of ``N``
  -- the worst case for a solver that exploits small supports.

For every case the solver ``solve_multiplayer(pop, k, tol=1e-6)`` is timed from the raw
utility matrix (``Population`` construction and its per-type sort included), best of
``REPEATS`` runs. Two baselines run in the same process tree:

* ``k = 1``: the maximal-lottery LP solved by HiGHS (``scipy.optimize.linprog``,
  ``method="highs"``), including building its N x N majority matrix from the utilities
  (``O(T N^2)``), time-limited to ``LP_LIMIT_S``; best of ``REPEATS`` runs alternating
  with the solver's (one run when the first takes 5 s or more).
* ``k > 1``: plain Hedge self-play ``pi <- pi * exp(eta g_pi)`` (theory.md section 3), time
  boxed to ``max(HEDGE_MIN_S, 10 x solver time)`` (at most ``HEDGE_MAX_S``) split evenly over
  ``eta in HEDGE_ETAS``; the best exploitability it reached (best iterate over steps and
  step sizes, last iterate and time-averaged policy) is reported -- generous to Hedge.

Memory: each measurement runs in a forked child; ``tracemalloc`` peak (NumPy buffers are
traced) and the growth of the child's peak RSS (which also sees HiGHS's C++ memory) are
reported. BLAS is pinned to one thread (``OPENBLAS_NUM_THREADS=1``) before NumPy is
imported: on 2 shared cores, spinning BLAS threads only add noise.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import argparse  # noqa: E402
import datetime  # noqa: E402
import multiprocessing as mp  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import tracemalloc  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import scipy  # noqa: E402
import scipy.optimize  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from workers.policies import Population, exploitability, solve_multiplayer  # noqa: E402
from workers.policies.population import _pick  # noqa: E402

TOL = 1e-6
REPEATS = 3
LP_LIMIT_S = 300.0
HEDGE_MIN_S = 3.0
HEDGE_MAX_S = 60.0
HEDGE_ETAS = (10.0, 100.0, 1000.0)

FULL_GRID = [
    *[
        ("gauss", t, n, k)
        for t, n in [(128, 256), (512, 1024), (1024, 2048)]
        for k in (1, 2, 4, 8, 16)
    ],
    *[("lowrank", t, n, k) for t, n in [(512, 1024), (1024, 2048)] for k in (1, 8, 16)],
]
ADVERSARIAL_GRID = [
    ("cyclic", 256, 256, 1),
    ("cyclic", 256, 256, 8),
    ("cyclic", 512, 512, 1),
    ("cyclic", 512, 512, 8),
]
QUICK_GRID = [
    ("gauss", 128, 256, 1),
    ("gauss", 128, 256, 8),
    ("gauss", 512, 1024, 1),
    ("gauss", 512, 1024, 8),
]


def make_population(
    kind: str, t: int, n: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Utilities (T, N) and type weights (T,) of one benchmark population."""
    rng = np.random.default_rng([seed, t, n])
    uniform = np.full(t, 1.0 / t)
    if kind == "gauss":
        return rng.standard_normal((t, n)), uniform
    if kind == "cyclic":
        u = (np.arange(n)[None, :] - np.arange(t)[:, None]) % n
        u = u[rng.permutation(t)][:, rng.permutation(n)] + 0.01 * rng.standard_normal(
            (t, n)
        )
        return u, rng.dirichlet(np.full(t, 5.0))
    f, g = rng.standard_normal((t, 8)), rng.standard_normal((8, n))
    return f @ g + 0.3 * rng.standard_normal((t, n)), uniform


# --------------------------------------------------------------------------------------
# measured work (runs in a forked child)
# --------------------------------------------------------------------------------------


def run_solver(u: np.ndarray, w: np.ndarray, k: int) -> dict:
    start = time.perf_counter()
    pop = Population(u, w)
    sol = solve_multiplayer(pop, k, tol=TOL)
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "exploitability": sol.exploitability,
        "converged": sol.converged,
        "support": int(sol.support.size),
        "n_iter": sol.n_iter,
    }


def majority_matrix(u: np.ndarray, w: np.ndarray) -> np.ndarray:
    """P[i, j] = sum_t w_t (1[U_ti > U_tj] + 1/2 1[U_ti = U_tj]), chunked over types.

    Built as fast as NumPy allows for a fair baseline: boolean comparisons of a chunk of
    types, contracted with the weights by ``einsum``; the equality term only for types
    that have ties (the diagonal 1/2 always).
    """
    n = u.shape[1]
    p = np.zeros((n, n))
    chunk = max(1, 32_000_000 // (n * n))
    srt = np.sort(u, axis=1)
    tied_types = np.flatnonzero((srt[:, 1:] == srt[:, :-1]).any(axis=1))
    for t0 in range(0, u.shape[0], chunk):
        ut = u[t0 : t0 + chunk]
        p += np.einsum("t,tij->ij", w[t0 : t0 + chunk], ut[:, :, None] > ut[:, None, :])
    for t in tied_types:
        p += 0.5 * w[t] * (u[t][:, None] == u[t][None, :])
    p[np.diag_indices(n)] = (
        0.5  # a response ties with itself for every type (weights sum to 1)
    )
    return p


def run_lp(u: np.ndarray, w: np.ndarray) -> dict:
    start = time.perf_counter()
    t, n = u.shape
    p = majority_matrix(u, w)
    built = time.perf_counter() - start
    a_ub = np.hstack([p, -np.ones((n, 1))])
    res = scipy.optimize.linprog(
        np.r_[np.zeros(n), 1.0],
        A_ub=a_ub,
        b_ub=np.zeros(n),
        A_eq=np.r_[np.ones(n), 0.0][None],
        b_eq=[1.0],
        bounds=[(0, None)] * n + [(None, None)],
        method="highs",
        options={"time_limit": LP_LIMIT_S},
    )
    seconds = time.perf_counter() - start
    pi = np.clip(res.x[:n], 0, None) if res.x is not None else np.full(n, 1.0 / n)
    pi /= pi.sum()
    return {
        "seconds": seconds,
        "build_seconds": built,
        "status": int(res.status),
        "exploitability": exploitability(Population(u, w), pi, 1),
    }


def run_hedge(u: np.ndarray, w: np.ndarray, k: int, budget_s: float) -> dict:
    pop = Population(u, w)
    n = pop.n_responses
    vstar = 1.0 / (k + 1)
    best = {
        "last": np.inf,
        "average": np.inf,
        "steps": 0,
        "eta": None,
        "reached_tol_s": None,
    }
    start = time.perf_counter()
    for eta in HEDGE_ETAS:
        t_end = time.perf_counter() + budget_s / len(HEDGE_ETAS)
        z = np.zeros(n)
        pi_sum = np.zeros(n)
        steps = 0
        while time.perf_counter() < t_end:
            pi = np.exp(z - z.max())
            pi /= pi.sum()
            g = _pick(pop, pi, k)
            pi_sum += pi
            steps += 1
            ex = float(g.max()) - vstar
            if ex < best["last"]:
                best.update(last=ex, eta=eta)
            if ex <= TOL and best["reached_tol_s"] is None:
                best["reached_tol_s"] = time.perf_counter() - start
            z += eta * g
        avg = pi_sum / steps
        best["average"] = min(best["average"], float(_pick(pop, avg, k).max()) - vstar)
        best["steps"] += steps
    best["seconds"] = time.perf_counter() - start
    return best


def _child(conn, fn_name: str, args: tuple) -> None:
    fn = {"solver": run_solver, "lp": run_lp, "hedge": run_hedge}[fn_name]
    u = args[0]
    u.setflags(write=False)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out = fn(*args)  # timing run, without tracemalloc overhead
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out["rss_growth_mb"] = (rss1 - rss0) / 1024.0
    if fn_name == "solver" or (fn_name == "lp" and out["seconds"] < 60.0):
        tracemalloc.start()
        fn(*args)
        out["traced_peak_mb"] = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
    conn.send(out)
    conn.close()


def measure(fn_name: str, *args) -> dict:
    ctx = mp.get_context("fork")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(child, fn_name, args))
    proc.start()
    out = parent.recv()
    proc.join()
    return out


# --------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (
        f"{os.cpu_count()} cores (nproc), {model}; Python {platform.python_version()}, NumPy {np.__version__}, "
        f"SciPy {scipy.__version__}; load average at start {load:.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="small grid (about a minute)"
    )
    parser.add_argument(
        "--adversarial",
        action="store_true",
        help="only the cyclic (support = N) populations (about 5 min)",
    )
    parser.add_argument(
        "--k1",
        action="store_true",
        help="only the k = 1 cases of the full and adversarial grids (against HiGHS)",
    )
    args = parser.parse_args()
    grid = (
        QUICK_GRID
        if args.quick
        else ADVERSARIAL_GRID
        if args.adversarial
        else [c for c in FULL_GRID + ADVERSARIAL_GRID if c[3] == 1]
        if args.k1
        else FULL_GRID
    )
    flags = (
        " --quick" if args.quick else " --adversarial" if args.adversarial else " --k1" if args.k1 else ""
    )
    print(f"# {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC")
    print(f"# machine: {machine()}")
    print(f"# command: .venv/bin/python bench/bench_policies.py{flags}")
    print()
    print(
        "| population | T | N | k | solver s (best of 3) | exploitability | support | iters | traced peak MB "
        "| peak / (8 T N) | baseline | baseline s | baseline result | solver speed-up |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---|---:|")
    for kind, t, n, k in grid:
        u, w = make_population(kind, t, n)
        runs, lps = [], []
        for _ in range(REPEATS):  # at k = 1 solver and LP alternate, so load drifts hit both
            runs.append(measure("solver", u, w, k))
            if k == 1 and (not lps or lps[0]["seconds"] < 5.0):
                lps.append(measure("lp", u, w))
        best = min(runs, key=lambda r: r["seconds"])
        traced = max(r["traced_peak_mb"] for r in runs)
        ok = all(r["converged"] for r in runs)
        cells = [
            kind,
            str(t),
            str(n),
            str(k),
            f"{best['seconds']:.3f}" + ("" if ok else " (NOT converged)"),
            f"{best['exploitability']:.1e}",
            str(best["support"]),
            str(best["n_iter"]),
            f"{traced:.1f}",
            f"{traced * 2**20 / (8 * t * n):.1f}",
        ]
        if k == 1:
            lp = min(lps, key=lambda r: r["seconds"])  # best of REPEATS unless >= 5 s
            status = {
                0: "optimal",
                1: "iteration limit",
                2: "infeasible",
                3: "unbounded",
                4: "numerical trouble",
            }
            cells += [
                "HiGHS LP (incl. N x N matrix)",
                f"{lp['seconds']:.3f}",
                f"{status.get(lp['status'], lp['status'])}, expl {lp['exploitability']:.1e}, "
                f"matrix {lp['build_seconds']:.2f} s, traced {lp.get('traced_peak_mb', float('nan')):.0f} MB, "
                f"RSS +{lp['rss_growth_mb']:.0f} MB",
                f"{lp['seconds'] / best['seconds']:.1f}x",
            ]
        else:
            budget = min(HEDGE_MAX_S, max(HEDGE_MIN_S, 10.0 * best["seconds"]))
            hedge = measure("hedge", u, w, k, budget)
            reached = (
                f"reached 1e-6 at {hedge['reached_tol_s']:.2f} s"
                if hedge["reached_tol_s"] is not None
                else f"best last iterate {hedge['last']:.1e}, time-average {hedge['average']:.1e}"
            )
            speedup = (
                f"{hedge['reached_tol_s'] / best['seconds']:.1f}x"
                if hedge["reached_tol_s"] is not None
                else f"> {hedge['seconds'] / best['seconds']:.0f}x"
            )
            cells += [
                f"Hedge, eta in {HEDGE_ETAS}",
                f"{hedge['seconds']:.1f} (box)",
                f"{reached}, {hedge['steps']} steps (best eta {hedge['eta']:g})",
                speedup,
            ]
        print("| " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
