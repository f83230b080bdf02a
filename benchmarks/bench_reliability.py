"""Reliability: what galexplore does with bad input, damaged data and killed writers.

    python benchmarks/bench_reliability.py [--skip-sample-kill]

Runs the corpus of ``tests/reliability.py`` (bad FITS files, uploads, damaged datasets read
with ``galexplore info --verify`` and by a plain read, damaged checkpoints) and its writer
cases (concurrent appends, writers killed with ``kill -9``), and prints per group: cases
tried, clear errors, handled (valid input read right), good input refused, tracebacks, silent
garbage, data lost. The README's "Reliability" section reports these counts.

Baselines measured in the same run:

* the same bad FITS files read with plain ``astropy.io.fits.getdata``: how many come back as
  an array without any error (silent garbage without galexplore's checks);
* peak memory of reading the 560 KB gzip bomb: `galexplore.data.fits_io.read_map` against
  ``astropy.io.fits.getdata``, each in a fresh process.

Also: ``galexplore sample`` killed with ``kill -9`` while its workers run: the worker processes
still alive 10 s later, and whether the next ``galexplore sample`` to the same place sweeps the
``.partial`` folder the killed one left.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from collections import Counter
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import reliability as r  # noqa: E402  (tests/reliability.py: the corpus)

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO)}


def run_corpus(cases: list[r.Case]) -> tuple[Counter, list[tuple[str, str, str, str]]]:
    counts: Counter = Counter()
    notes = []
    for case in cases:
        with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            outcome, detail = r.judge(case, Path(tmp))
        counts[(case.group, outcome)] += 1
        if outcome not in (r.CLEAR, r.HANDLED):
            notes.append((case.group, case.name, outcome, detail))
    return counts, notes


def print_table(counts: Counter, groups: list[str]) -> None:
    columns = ["cases", *r.OUTCOMES]
    print(f"{'group':<30}" + "".join(f"{c:>20}" for c in columns))
    total = Counter()
    for group in groups:
        row = {o: counts[(group, o)] for o in r.OUTCOMES}
        row["cases"] = sum(row.values())
        total.update(row)
        print(f"{group:<30}" + "".join(f"{row[c]:>20}" for c in columns))
    print(f"{'all':<30}" + "".join(f"{total[c]:>20}" for c in columns))


def astropy_baseline(cases: list[r.Case]) -> Counter:
    """Plain astropy on the bad FITS map files: array returned (garbage) or an exception."""
    from astropy.io import fits

    result: Counter = Counter()
    for case in cases:
        if case.make is None or case.check is not None:
            continue
        with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            path = case.make(Path(tmp))
            try:
                data = None
                with fits.open(path) as hdul:
                    for hdu in hdul:
                        if hdu.data is not None and getattr(hdu.data, "ndim", 0) >= 1:
                            data = hdu.data
                            break
                result["array returned" if data is not None else "no image, no error"] += 1
            except Exception:  # noqa: BLE001 - the baseline counts what it raises
                result["raised"] += 1
    return result


PEAK = """
import re, sys, warnings
warnings.simplefilter("ignore")
path = sys.argv[2]
try:
    if sys.argv[1] == "galexplore":
        from galexplore.data.fits_io import read_map
        read_map(path)
    else:
        from astropy.io import fits
        fits.getdata(path)
    outcome = "read"
except Exception as err:
    outcome = type(err).__name__
with open("/proc/self/status") as fh:  # VmHWM: this process's peak resident memory (kB)
    peak = int(re.search(r"VmHWM:\\s+(\\d+)", fh.read()).group(1))
print(outcome, peak / 1024)
"""


def bomb_memory() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bomb.fits.gz"
        path.write_bytes(r._gzip_bomb())
        rows = {}
        for reader in ("galexplore", "astropy"):
            start = time.perf_counter()
            out = subprocess.run([sys.executable, "-c", PEAK, reader, str(path)], capture_output=True,
                                 text=True, env=ENV, timeout=600).stdout.split()
            rows[reader] = (out[0], float(out[1]), time.perf_counter() - start)
    size_kb = len(r._gzip_bomb()) / 1e3
    print(f"\ngzip bomb ({size_kb:.0f} KB, 576 MB inflated), peak RSS of a fresh process:")
    for reader, (outcome, mb, seconds) in rows.items():
        print(f"  {reader:<11} {outcome:<12} {mb:8.0f} MB  {seconds:5.1f} s")
    print(f"  ratio galexplore / astropy: {rows['galexplore'][1] / rows['astropy'][1]:.2f}x")


def children_of(pid: int) -> list[int]:
    """Processes whose parent is ``pid``."""
    try:
        return [child.pid for child in psutil.Process(pid).children()]
    except psutil.NoSuchProcess:
        return []


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def sample_kill() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "universe"
        command = [sys.executable, "-m", "galexplore", "sample", str(out), "--n-galaxies", "400", "--views", "1",
                   "--workers", "2"]
        proc = subprocess.Popen(command, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None and not (
                list(Path(tmp).glob(".universe.partial-*")) and len(children_of(proc.pid)) >= 2):
            time.sleep(0.2)
        time.sleep(3)  # the workers are making galaxies now
        workers = children_of(proc.pid)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        time.sleep(10)
        left = [pid for pid in workers if alive(pid)]
        partials = list(Path(tmp).glob(".universe.partial-*"))
        for pid in left:  # clean up the processes this benchmark started
            os.kill(pid, signal.SIGKILL)
        rerun = subprocess.run([sys.executable, "-m", "galexplore", "sample", str(out), "--n-galaxies", "4",
                                "--views", "1", "--workers", "1", "--overwrite"], env=ENV, capture_output=True,
                               text=True)
        after = list(Path(tmp).glob(".universe.partial-*"))
        print(f"\n`galexplore sample` killed with kill -9 while writing: {len(workers)} worker process(es); "
              f"{len(left)} still alive 10 s later; {len(partials)} .partial folder(s) left; the next "
              f"`galexplore sample` to the same place exited {rerun.returncode} and left {len(after)}.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-sample-kill", action="store_true")
    args = parser.parse_args()

    cases = r.all_cases() + r.writer_cases()
    start = time.perf_counter()
    counts, notes = run_corpus(cases)
    elapsed = time.perf_counter() - start
    groups = list(dict.fromkeys(c.group for c in cases))
    print(f"reliability corpus: {len(cases)} cases in {elapsed:.0f} s\n")
    print_table(counts, groups)
    if notes:
        print("\nnot a clear error or a right result:")
        for group, name, outcome, detail in notes:
            known = " (by design: only --verify hashes raw chunks)" if name in r.FOUND_BY_VERIFY_ONLY \
                and group == "damaged dataset, plain read" else ""
            print(f"  [{group}] {name}: {outcome}{known}: {detail[:160]}")
    baseline = astropy_baseline(r.fits_cases())
    n_bad = sum(baseline.values())
    galexplore_garbage = sum(counts[("FITS file", o)] for o in (r.GARBAGE, r.TRACEBACK))
    print(f"\nbaseline, the same {n_bad} bad FITS map files read with astropy.io.fits alone: "
          f"{baseline['array returned']} return an array without error, {baseline['raised']} raise, "
          f"{baseline['no image, no error']} return no image; galexplore: {galexplore_garbage} tracebacks "
          f"or garbage among all {sum(v for (g, _), v in counts.items() if g == 'FITS file')} FITS cases")
    bomb_memory()
    if not args.skip_sample_kill:
        sample_kill()


if __name__ == "__main__":
    main()
