"""Fit the two rational functions of fastce's exp-free float32 tanh (src/fastce/_simd.h).

Why two: a single u P(u^2)/Q(u^2) on [0, 9.1] needs degrees 4/4 for the approximation alone,
but near tanh = 1 every Horner step's rounding error survives in full (the top terms dominate
at large u^2), and the float evaluation measured 5.8 / 6.2 ulp.  So the kernel splits |u| at
T = 1.25:
  A. |u| < T:   tanh(u) = u + u s c(s),  s = u^2,  c(s) = (tanh(u)/u - 1)/s ~ PA(s) / QA(s)
                (the correction term is at most 0.47 of the result, which damps the
                rounding errors of the rational by that factor);
  B. |u| >= T:  t = tanh(u/2) = u PB(s) / QB(s), then tanh(u) = 2t/(1+t^2) = 1 - R with
                R = (QB - u PB)^2 / (QB^2 + (u PB)^2) in [0, 0.15]; the errors of PB and QB
                cancel to first order in that form and R's own rounding errors are scaled by R.
Both are minimax in relative error of the rational itself.  Method: rational Remez in mpmath
(50 digits) in the scaled variable x = s / s_max in [x_lo, 1]: with m = deg P, n = deg Q the
unknowns are the free coefficients (q_0 = 1) and the levelled error E, solved on one more
reference point than unknowns from the linearised equations
    P(x_i) - f_i Q(x_i) = (-1)^i E f_i Q_prev(x_i)       (Q_prev from the previous solve,
                                                         iterated until E settles),
then the references move to the alternating extrema of P/(Q f) - 1 (dense grid + golden
section) until max |error| / |E| - 1 < 1e-6.  Rounding the coefficients to the dtype: one at a
time (highest degree first, alternating P and Q), each rounded coefficient is fixed and the
Remez is re-run on the remaining free ones, so the fit absorbs the rounding of the ones before.

    python tools/fit_tanh.py              # the two float32 fits used in _simd.h (~1 min)
    python tools/fit_tanh.py f32 A 2 2 1.5625           # explore: dtype, part, m, n, s range
    python tools/fit_tanh.py f32 B 3 4 1.5625 82.81
The float64 tanh is still exp-based: no float64 degrees were settled (the same scheme needs
much higher degrees for 53 bits; `f64 A|B ...` runs the fit for a try).
"""
import sys

import mpmath as mp
import numpy as np

mp.mp.dps = 50


def f_small(s):
    """c(s) = (tanh(sqrt s)/sqrt s - 1) / s, c(0) = -1/3."""
    if s < mp.mpf("1e-12"):
        return -mp.mpf(1) / 3 + 2 * s / 15 - 17 * s * s / 315
    r = mp.sqrt(s)
    return (mp.tanh(r) / r - 1) / s


def f_half(s):
    """tanh(sqrt(s)/2) / sqrt(s)."""
    r = mp.sqrt(s)
    return mp.tanh(r / 2) / r


def peval(c, x):
    acc = mp.mpf(0)
    for a in reversed(c):
        acc = acc * x + a
    return acc


class Fit:
    def __init__(self, f, s_lo, s_hi, m, n):
        self.f, self.S, self.m, self.n = f, mp.mpf(s_hi), m, n
        self.xlo = mp.mpf(s_lo) / self.S
        self.fixed = {}                     # ('p'|'q', k) -> value, in the scaled variable
        self.fixed[("q", 0)] = mp.mpf(1)
        K = 2000
        lo = self.xlo
        self.grid = sorted(set([lo + (1 - lo) * mp.mpf(i) / K for i in range(K + 1)] +
                               [lo + (1 - lo) * (1 - mp.cos(mp.pi * i / K)) / 2
                                for i in range(K + 1)]))
        self.fv = {}

    def fval(self, x):
        if x not in self.fv:
            self.fv[x] = self.f(x * self.S)
        return self.fv[x]

    def coeffs(self, sol):
        pc = [self.fixed.get(("p", k), sol.get(("p", k))) for k in range(self.m + 1)]
        qc = [self.fixed.get(("q", k), sol.get(("q", k))) for k in range(self.n + 1)]
        return pc, qc

    def err(self, pc, qc, x):
        return peval(pc, x) / (peval(qc, x) * self.fval(x)) - 1

    def solve(self, refs, qprev):
        free = [("p", k) for k in range(self.m + 1) if ("p", k) not in self.fixed] + \
               [("q", k) for k in range(self.n + 1) if ("q", k) not in self.fixed]
        N = len(free) + 1
        A = mp.matrix(N, N)
        b = mp.matrix(N, 1)
        for i, x in enumerate(refs):
            g = self.fval(x)
            for j, (w, k) in enumerate(free):
                A[i, j] = x ** k if w == "p" else -g * x ** k
            A[i, N - 1] = -((-1) ** i) * g * peval(qprev, x)
            rhs = 0
            for (w, k), v in self.fixed.items():
                rhs += -v * x ** k if w == "p" else g * v * x ** k
            b[i] = rhs
        sol = mp.lu_solve(A, b)
        return {key: sol[j] for j, key in enumerate(free)}, sol[N - 1], N

    def extrema(self, pc, qc):
        g = self.grid
        e = [self.err(pc, qc, x) for x in g]
        out = []
        for i in range(len(g)):
            if 0 < i < len(g) - 1:
                if not (abs(e[i]) >= abs(e[i - 1]) and abs(e[i]) >= abs(e[i + 1])):
                    continue
                sgn = 1 if e[i] > 0 else -1
                a, c = g[i - 1], g[i + 1]
                gr = (mp.sqrt(5) - 1) / 2
                fn = lambda x: -sgn * self.err(pc, qc, x)
                x1, x2 = c - gr * (c - a), a + gr * (c - a)
                f1, f2 = fn(x1), fn(x2)
                for _ in range(30):
                    if f1 < f2:
                        c, x2, f2 = x2, x1, f1
                        x1 = c - gr * (c - a)
                        f1 = fn(x1)
                    else:
                        a, x1, f1 = x1, x2, f2
                        x2 = a + gr * (c - a)
                        f2 = fn(x2)
                xm = (a + c) / 2
                out.append((xm, self.err(pc, qc, xm)))
            else:
                out.append((g[i], e[i]))
        return out

    def remez(self, refs=None):
        nfree = self.m + self.n + 2 - len(self.fixed)
        N = nfree + 1
        if refs is None or len(refs) != N:
            lo = self.xlo
            refs = [lo + (1 - lo) * (1 - mp.cos(mp.pi * i / (N - 1))) / 2 for i in range(N)]
        qprev = [mp.mpf(1)]
        best = None
        for it in range(40):
            for _ in range(6):
                sol, E, _ = self.solve(refs, qprev)
                pc, qc = self.coeffs(sol)
                qprev = qc
            ext = self.extrema(pc, qc)
            emax = max(abs(e) for _, e in ext)
            if best is None or emax < best[0]:
                best = (emax, pc, qc, refs)
            alt = []
            for x, e in ext:
                if alt and (alt[-1][1] > 0) == (e > 0):
                    if abs(e) > abs(alt[-1][1]):
                        alt[-1] = (x, e)
                else:
                    alt.append((x, e))
            while len(alt) > N:
                if abs(alt[0][1]) < abs(alt[-1][1]):
                    alt.pop(0)
                else:
                    alt.pop()
            if len(alt) < N or emax / abs(E) - 1 < mp.mpf("1e-6"):
                break
            refs = [x for x, _ in alt]
        return best

    def fit_rounded(self, dtype):
        emax, pc, qc, refs = self.remez()
        e0 = emax
        order = []
        for k in range(max(self.m, self.n), -1, -1):
            if k <= self.n and ("q", k) not in self.fixed:
                order.append(("q", k))
            if k <= self.m:
                order.append(("p", k))
        for key in order:
            w, k = key
            v = (pc if w == "p" else qc)[k]
            vs = v / self.S ** k                      # in s
            vr = mp.mpf(float(np.array(float(vs), dtype)))
            self.fixed[key] = vr * self.S ** k
            if len(self.fixed) < self.m + self.n + 2:
                emax, pc, qc, refs = self.remez(refs[:-1] if len(refs) > 1 else None)
        pc, qc = self.coeffs({})
        emax = max(abs(e) for _, e in self.extrema(pc, qc))
        ps = [float(c / self.S ** k) for k, c in enumerate(pc)]
        qs = [float(c / self.S ** k) for k, c in enumerate(qc)]
        return e0, emax, ps, qs


def report(name, f, s_lo, s_hi, m, n, dtype):
    e0, e1, ps, qs = Fit(f, s_lo, s_hi, m, n).fit_rounded(dtype)
    eps = float(np.finfo(dtype).eps)
    fmt = "%.9ef" if dtype == np.float32 else "%.17g"
    print(f"{name} on s in [{s_lo}, {s_hi}] deg ({m},{n}) {np.dtype(dtype).name}: minimax "
          f"{mp.nstr(e0 / eps, 4)} eps, with the coefficients rounded {mp.nstr(e1 / eps, 4)} eps")
    print("   P:", ", ".join(fmt % c for c in ps))
    print("   Q:", ", ".join(fmt % c for c in qs))
    return ps, qs


def main():
    which = sys.argv[1] if len(sys.argv) > 1 else "f32"
    if len(sys.argv) > 2:            # explore: f32|f64 A|B m n [s_hi]
        dt = {"f32": np.float32, "f64": np.float64}[which]
        part, m, n = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
        if part == "A":
            report("A: c(s)", f_small, 0, sys.argv[5], m, n, dt)
        else:
            report("B: tanh(u/2)/u", f_half, sys.argv[5], sys.argv[6], m, n, dt)
        return
    report("A: c(s)", f_small, 0, "1.5625", 2, 2, np.float32)                # T = 1.25
    report("B: tanh(u/2)/u", f_half, "1.5625", "82.81", 3, 4, np.float32)    # U0 = 9.1


if __name__ == "__main__":
    main()
