"""bench_report.py -- reading the runs of scripts/bench*.sh and their medians.

Imported by the report each benchmark prints (scripts/lib/bench-common.sh's
`report` puts this folder on PYTHONPATH).  A run NAME left in the output
folder NAME.json (`rrpc bench --json`) or NAME.txt (a floor client's
"calls=N calls_per_s=R errors=E") and NAME.cpu (the caller's user and system
seconds, the workers' CPU seconds before and after, the broker's before and
after).  A setup run once per round is NAME.r1, NAME.r2, ...; as the
machines are shared and their speed drifts, a setup is summed up by the
median of its rounds, and a ratio between two setups by the median of the
per-round ratios (each run paired with the other setup's run of its round).
"""
import json
import os
import re
import statistics


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def combine(runs):
    """The median of each measure over the rounds; CPU over all their calls."""
    runs = [r for r in runs if r]
    if not runs:
        return None
    c = {k: median(r[k] for r in runs) for k in ("rate", "p50", "p99")}
    c["errors"] = sum(r["errors"] for r in runs)
    with_cpu = [r for r in runs if "cpu" in r]
    if with_cpu:
        calls = sum(r["calls"] for r in with_cpu)
        c["cpu"] = tuple(sum(r["cpu"][k] * r["calls"] for r in with_cpu) / calls for k in range(3))
    return c


class Runs:
    """The runs in folder OUT, of ROUNDS rounds."""

    def __init__(self, out, rounds):
        self.out, self.rounds = out, rounds

    def read(self, name):
        try:
            with open(os.path.join(self.out, name)) as f:
                return f.read()
        except OSError:
            return None

    def run(self, name):
        """calls_per_s, p50_us, p99_us, errors, calls and CPU per call in us
        (caller, worker, broker) of run NAME, or None."""
        text = self.read(name + ".json")
        if text is not None:
            try:
                j = json.loads(text)
            except ValueError:
                return None
            r = dict(rate=j["calls_per_s"], p50=j["p50_us"], p99=j["p99_us"], errors=j["errors"],
                     calls=j["calls"])
        else:
            m = re.search(r"calls=(\d+) calls_per_s=([0-9.]+) errors=(\d+)",
                          self.read(name + ".txt") or "")
            if not m:
                return None
            r = dict(rate=float(m.group(2)), p50=None, p99=None, errors=int(m.group(3)),
                     calls=int(m.group(1)))
        cpu = (self.read(name + ".cpu") or "").split()
        if len(cpu) == 6 and r["calls"]:
            u, s, w0, w1, b0, b1 = map(float, cpu)
            r["cpu"] = ((u + s) * 1e6 / r["calls"], (w1 - w0) * 1e6 / r["calls"],
                        (b1 - b0) * 1e6 / r["calls"])
        return r

    def rounds_of(self, setup):
        return [self.run(f"{setup}.r{i}") for i in range(1, self.rounds + 1)]

    def combined(self, setup):
        return combine(self.rounds_of(setup))

    def paired(self, x, y, key="rate"):
        """Per-round ratios x/y of KEY, and their median."""
        ratios = [a[key] / b[key] for a, b in zip(self.rounds_of(x), self.rounds_of(y))
                  if a and b and a.get(key) and b.get(key)]
        return median(ratios), ratios


def ratio(a, b, key):
    """a/b of KEY for two runs (or combined setups), or None."""
    return a[key] / b[key] if a and b and a.get(key) and b.get(key) else None


def rate(v):
    return "-" if v is None else f"{v:,.0f}"


def lat(us):
    if us is None:
        return "-"
    return f"{us:,.0f} us" if us < 1000 else f"{us / 1000:,.2f} ms"


def cpu(r):
    """CPU us per call: caller / worker / broker."""
    if not r or "cpu" not in r:
        return "-"
    return " / ".join(f"{v:.1f}" for v in r["cpu"])


def x(v, digits=2):
    return "-" if v is None else f"{v:.{digits}f}x"


def listed(values, digits=3):
    return ", ".join(f"{v:.{digits}f}" for v in values) or "-"


def errors(r):
    """The " (N errors)" a row's setup gets when its runs had errors."""
    return f" ({r['errors']} errors)" if r["errors"] else ""


def row(setup, r, *cells):
    """A table row: the setup, calls/s, p50, p99, CELLS, then CPU us per call."""
    if r is None:
        print(f"| {setup} | (failed) |" + " |" * (len(cells) + 3))
        return
    print(f"| {setup}{errors(r)} | {rate(r['rate'])} | {lat(r['p50'])} | {lat(r['p99'])} | " +
          "".join(f"{c} | " for c in cells) + f"{cpu(r)} |")


def padded(n):
    """row() for a table of N cells between p99 and CPU: the cells not given are empty."""
    return lambda setup, r, *cells: row(setup, r, *cells, *[""] * (n - len(cells)))
