"""The soak (issue 19): many inference calls over gRPC (fluxion-bench serve,
closed loop, in segments) and HTTP (threads on keep-alive connections),
with create / import / promote / delete-version / delete, dataset upload /
delete and ONNX import / delete cycles in parallel; fluxiond's RSS, thread
count and open fds (/proc/PID) and its data directory's size are sampled
every few seconds and printed as a table.

Fails (exit 1) when
  - any call or cycle step fails (errors must be 0);
  - RSS after the warm-up goes beyond the warm-up's highest sample + 10%;
  - once the load stops, the thread count (less gRPC core's own pools,
    which grow and shrink with load on their own clock: "own" in the
    table) or the open fds are above what they were before it started (+0:
    a leak of either is a thread or fd held by something that ended), or the data directory is larger than
    before the cycles started: every object the cycles made is deleted,
    so its files must be gone too (SQLite's -wal and -shm files are left
    out: the log is reused in place after a checkpoint and bounded by it).

    python3 tests/integration/soak.py [--calls N] [--seconds S]
    scripts/soak.sh [CALLS] [SECONDS]                    (README, "Soak")
"""
import argparse
import http.client
import json
import os
import sqlite3
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import fxtest  # noqa: E402
from fxtest import Daemon, mlp_spec, np, randn  # noqa: E402

BENCH = os.environ.get("FLUXION_BENCH") or os.path.join(os.path.dirname(fxtest.FLUXIOND),
                                                        "fluxion-bench")
RSS_BOUND = 1.10
GRPC_POOLS = {"event_engine", "grpc_global_tim", "default-executo", "resolver-execut",
              "timer_manager"}
# Rows that may stay: SQLite's own counters, and the alias moves of the
# served model the cycles promote (kept up to FXDB_HISTORY_KEPT, store.h).
ROWS_ALLOWED = {"sqlite_sequence": 1 << 30, "alias_history": 1000}
DB_SLACK = 192 << 10   # the served model's alias history (<= 1000 rows) and B-tree slack


def own_threads(pid):
    """fluxiond's threads less gRPC core's pools (GRPC_POOLS), which grow
    with load and shrink when idle by design, on their own clock."""
    n = 0
    for t in os.listdir("/proc/%d/task" % pid):
        try:
            with open("/proc/%d/task/%s/comm" % (pid, t)) as f:
                n += f.read().strip() not in GRPC_POOLS
        except FileNotFoundError:
            pass
    return n


def proc_sample(pid):
    """(RSS kB, threads, fds, own threads)."""
    with open("/proc/%d/status" % pid) as f:
        st = dict(line.split(":", 1) for line in f if ":" in line)
    rss_kb = int(st["VmRSS"].split()[0])
    threads = int(st["Threads"])
    fds = len(os.listdir("/proc/%d/fd" % pid))
    return rss_kb, threads, fds, own_threads(pid)


def db_live(path):
    """(bytes in use, {table: rows}) of the store's SQLite file, read on a
    read-only connection of our own (WAL: it sees the last commit)."""
    db = sqlite3.connect("file:%s?mode=ro" % os.path.join(path, "fluxion.db"), uri=True,
                         timeout=10)
    try:
        q = lambda sql: db.execute(sql).fetchone()[0]  # noqa: E731
        live = (q("PRAGMA page_count") - q("PRAGMA freelist_count")) * q("PRAGMA page_size")
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return live, {t: q('SELECT count(*) FROM "%s"' % t) for t in tables}
    finally:
        db.close()


def dir_bytes(path):
    """The data dir's size: its files' apparent sizes, the SQLite files
    counted by the pages in use (the file keeps freed pages for reuse and
    the -wal file is reused in place after a checkpoint)."""
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            if root == path and f.startswith("fluxion.db"):
                continue
            try:
                total += os.lstat(os.path.join(root, f)).st_size
            except FileNotFoundError:
                pass
    return total + db_live(path)[0]


class Soak:
    def __init__(self, calls, seconds, concurrency=4, http_threads=2, interval=5.0,
                 warmup=None, segment=30.0, out=sys.stdout):
        self.target, self.seconds = calls, seconds
        self.concurrency, self.http_threads = concurrency, http_threads
        self.interval = interval
        self.warmup = warmup if warmup is not None else min(60.0, max(5.0, seconds * 0.4))
        self.segment = segment
        self.out = out
        self.lock = threading.Lock()
        self.grpc_calls = 0          # answered OK, finished segments
        self.http_calls = 0
        self.cycles = 0
        self.errors = []             # (what, detail)
        self.stop = threading.Event()
        self.rows = []

    def say(self, s):
        self.out.write(s + "\n")
        self.out.flush()

    def error(self, what, detail):
        with self.lock:
            if len(self.errors) < 50:
                self.errors.append((what, str(detail)[:300]))
            else:
                self.errors.append((what, ""))

    # --------------------------------------------------------------- load
    def http_loop(self, port, i):
        x = randn(i, 2, 4)
        body = json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 4],
                                       "data": x.ravel().tolist()}]}).encode()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            while not self.stop.is_set():
                try:
                    conn.request("POST", "/v2/models/soak/infer", body,
                                 {"Content-Type": "application/json"})
                    r = conn.getresponse()
                    data = r.read()
                    if r.status != 200:
                        self.error("http", "%d %s" % (r.status, data[:200]))
                        continue
                    if r.getheader("Connection", "").lower() == "close":
                        conn.close()
                    with self.lock:
                        self.http_calls += 1
                except (OSError, http.client.HTTPException) as e:
                    self.error("http", repr(e))
                    conn.close()
                    time.sleep(0.1)
        finally:
            conn.close()

    def cycle_loop(self, address):
        """Objects made and deleted again, and the served model's versions
        turned over under the load (import, promote, delete the old one)."""
        c = fxtest.Client(address, timeout=30)
        k = 0
        try:
            while not self.stop.is_set():
                k += 1
                try:
                    self.one_cycle(c, k)
                    with self.lock:
                        self.cycles += 1
                except fxtest.FluxionError as e:
                    self.error("cycle", "%s: %s" % (e.code, e.message))
                    time.sleep(0.5)
        finally:
            c.close()

    def one_cycle(self, c, k):
        name = "tmp-%d" % k
        c.create_model(name, mlp_spec(n_in=16, hidden=64, n_out=4), seed=k)
        w = c.export_arrays(name)
        c.import_weights(name, {n: a * 0.5 for n, a in w.items()})
        v3 = c.import_weights(name, {n: a * 2 for n, a in w.items()}, no_promote=True).version
        c.promote(name, v3)
        c.infer(name, {"x": randn(k, 2, 16)})
        c.rollback(name)
        c.delete_version(name, v3)
        c.unload_model(name)
        if k % 2:
            c.load_model(name)
        c.delete_model(name)
        # the served model: a new version promoted under the load, the old
        # one deleted while requests may still hold it
        m = c.get_model("soak")
        old = [v.version for v in m.versions]
        ws = c.export_arrays("soak")
        nv = c.import_weights("soak", {n: a * (1 + 1e-3) for n, a in ws.items()},
                              no_promote=True).version
        c.promote("soak", nv)
        for v in old:
            c.delete_version("soak", v)
        ds = "tmpds-%d" % k
        c.upload_dataset(ds, {"x": randn(k, 256, 8), "y": np.arange(256, dtype=np.int64)})
        c.delete_dataset(ds)
        if k % 3 == 0:
            x = "tmpx-%d" % k
            c.import_onnx(x, fxtest.onnx_relu_model(4))
            c.delete_model(x)

    def sampler(self, pid, data_dir, t0):
        next_t = t0
        while not self.stop.is_set():
            next_t += self.interval
            self.stop.wait(max(0, next_t - time.monotonic()))
            self.sample(pid, data_dir, t0)

    def sample(self, pid, data_dir, t0, note=""):
        rss, threads, fds, own = proc_sample(pid)
        with self.lock:
            calls = self.grpc_calls + self.http_calls   # a bench segment counts when it ends
            row = (time.monotonic() - t0, calls, rss, threads, fds, dir_bytes(data_dir),
                   len(self.errors), self.cycles, os.getloadavg()[0], note, own)
        self.rows.append(row)
        prev = self.rows[-2] if len(self.rows) > 1 else None
        rate = ((row[1] - prev[1]) / (row[0] - prev[0])) if prev and row[0] > prev[0] else 0
        self.say("%7.1f %11d %8.0f %8.1f %3d/%-3d %4d %9d %6d %6d %5.2f %s"
                 % (row[0], row[1], rate, rss / 1024, threads, own, fds, row[5] // 1024, row[6],
                    row[7], row[8], note))
        return row

    # ---------------------------------------------------------------- run
    def run(self):
        if not os.access(BENCH, os.X_OK):
            raise FileNotFoundError("no fluxion-bench at %s (set FLUXION_BENCH)" % BENCH)
        port_file = os.path.join(fxtest._WORK, "http-port")
        d = Daemon(["--http-listen", "127.0.0.1:0", "--http-port-file", port_file,
                    "--log-level", "info"], name="soak").start()
        with open(port_file) as f:
            http_port = int(f.read().strip())
        pid = d.proc.pid
        c = d.client()
        c.create_model("soak", mlp_spec(), seed=1)
        c.infer("soak", {"x": randn(0, 1, 4)})
        time.sleep(0.5)
        idle_before = proc_sample(pid)
        dir_before = dir_bytes(d.data_dir)
        rows_before = db_live(d.data_dir)[1]
        t0 = time.monotonic()
        self.say("fluxiond pid %d, %s, HTTP port %d; gRPC: fluxion-bench serve --concurrency %d;"
                 " HTTP: %d keep-alive threads; warm-up %.0f s"
                 % (pid, d.address, http_port, self.concurrency, self.http_threads,
                    self.warmup))
        self.say("%7s %11s %8s %8s %7s %4s %9s %6s %6s %5s" % (
            "t_s", "calls", "calls/s", "rss_MB", "thr/own", "fds", "datadir_K", "errors",
            "cycles", "load1"))
        self.sample(pid, d.data_dir, t0, "idle, before")
        workers = [threading.Thread(target=self.http_loop, args=(http_port, i))
                   for i in range(self.http_threads)]
        workers.append(threading.Thread(target=self.cycle_loop, args=(d.address,)))
        workers.append(threading.Thread(target=self.sampler, args=(pid, d.data_dir, t0)))
        for t in workers:
            t.start()
        try:
            while True:
                left = self.seconds - (time.monotonic() - t0)
                with self.lock:
                    done = self.grpc_calls + self.http_calls
                if left < 1 or done >= self.target:
                    break
                self.bench_segment(d.address, min(self.segment, left))
        finally:
            self.stop.set()
            for t in workers:
                t.join(60)
        c.close()
        # the load is over: threads and fds back where they were, the data
        # dir too (connections close, objects deleted; give it a moment)
        deadline = time.monotonic() + 15
        while True:
            idle_after = proc_sample(pid)
            dir_after = dir_bytes(d.data_dir)
            if (idle_after[3] <= idle_before[3] and idle_after[2] <= idle_before[2]
                    and dir_after <= dir_before + DB_SLACK) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        self.sample(pid, d.data_dir, t0, "idle, after")
        rows_after = db_live(d.data_dir)[1]
        d.stop()
        return self.verdict(idle_before, idle_after, dir_before, dir_after,
                            time.monotonic() - t0, rows_before, rows_after)

    def bench_segment(self, address, seconds):
        p = subprocess.run([BENCH, "serve", "--server", address, "--model", "soak",
                            "--concurrency", str(self.concurrency), "--duration",
                            "%.2f" % max(seconds, 0.5), "--warmup", "0"],
                           capture_output=True, text=True, timeout=seconds + 60)
        try:
            r = json.loads(p.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            self.error("grpc", "fluxion-bench exit %d: %s" % (p.returncode, p.stderr[-300:]))
            return
        with self.lock:
            self.grpc_calls += r.get("ok", 0)
        for code, n in (r.get("errors") or {}).items():
            for _ in range(min(n, 5)):
                self.error("grpc", code)
            with self.lock:
                self.errors.extend([("grpc", code)] * max(0, n - 5))
        if p.returncode != 0:
            self.error("grpc", "fluxion-bench exit %d: %s" % (p.returncode, p.stderr[-300:]))

    def verdict(self, idle_before, idle_after, dir_before, dir_after, elapsed, rows_before,
                rows_after):
        fails = []
        grown = {t: (rows_before.get(t, 0), n) for t, n in rows_after.items()
                 if n > max(rows_before.get(t, 0), ROWS_ALLOWED.get(t, 0))}
        if grown:
            fails.append("store rows left after the deletes (table: before, after): %s" % grown)
        # the warm-up's samples include the one due at its end (taken a
        # little after it: the sampler is late by the time it takes)
        end = self.warmup + self.interval / 2
        warm = [r for r in self.rows if r[9] == "" and r[0] <= end]
        after = [r for r in self.rows if r[9] == "" and r[0] > end]
        rss_warm = max(r[2] for r in warm) if warm else idle_before[0]
        rss_max = max(r[2] for r in after) if after else rss_warm
        if rss_max > rss_warm * RSS_BOUND:
            fails.append("RSS grew after the warm-up: %.1f MB, bound %.1f MB (+%d%% of %.1f MB)"
                         % (rss_max / 1024, rss_warm * RSS_BOUND / 1024,
                            round((RSS_BOUND - 1) * 100), rss_warm / 1024))
        if idle_after[3] > idle_before[3]:
            fails.append("threads (less gRPC core's pools): %d after the load, %d before"
                         % (idle_after[3], idle_before[3]))
        if idle_after[2] > idle_before[2]:
            fails.append("open fds: %d after the load, %d before" % (idle_after[2],
                                                                   idle_before[2]))
        if dir_after > dir_before + DB_SLACK:
            fails.append("data dir: %d bytes after the cycles' deletes, %d before (+%d allowed)"
                         % (dir_after, dir_before, DB_SLACK))
        if self.errors:
            kinds = {}
            for what, detail in self.errors:
                kinds.setdefault(what, []).append(detail)
            fails.append("%d errors: %s" % (len(self.errors), "; ".join(
                "%s x%d (%s)" % (k, len(v), v[0]) for k, v in kinds.items())))
        if self.cycles == 0:
            fails.append("no create/delete cycle completed")
        calls = self.grpc_calls + self.http_calls
        summary = {"calls": calls, "grpc_calls": self.grpc_calls, "http_calls": self.http_calls,
                   "seconds": round(elapsed, 1), "calls_per_s": round(calls / elapsed),
                   "cycles": self.cycles, "errors": len(self.errors),
                   "rss_mb_warm": round(rss_warm / 1024, 1),
                   "rss_mb_max_after_warmup": round(rss_max / 1024, 1),
                   "threads_before_after": [idle_before[1], idle_after[1]],
                   "own_threads_before_after": [idle_before[3], idle_after[3]],
                   "alias_history_rows": rows_after.get("alias_history"),
                   "fds_before_after": [idle_before[2], idle_after[2]],
                   "datadir_bytes_before_after": [dir_before, dir_after],
                   "loadavg": [round(x, 2) for x in os.getloadavg()]}
        self.say("summary: " + json.dumps(summary))
        for f in fails:
            self.say("FAIL: " + f)
        if not fails:
            self.say("PASS")
        return summary, fails


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calls", type=int, default=10 ** 7, help="stop after this many calls")
    ap.add_argument("--seconds", type=float, default=900, help="or after this long")
    ap.add_argument("--concurrency", type=int, default=4, help="gRPC client threads")
    ap.add_argument("--http-threads", type=int, default=2)
    ap.add_argument("--interval", type=float, default=5, help="seconds between samples")
    ap.add_argument("--warmup", type=float, default=None,
                    help="seconds before the RSS bound applies (default: 40%% of --seconds, 5..60)")
    a = ap.parse_args()
    s = Soak(a.calls, a.seconds, a.concurrency, a.http_threads, a.interval, a.warmup,
             segment=min(30.0, max(5.0, a.seconds / 10)))
    summary, fails = s.run()
    if fails:
        for d in fxtest._DAEMONS:
            sys.stderr.write("\n" + d.log_tail(30) + "\n")
        sys.exit(1)
    fxtest.shutil.rmtree(fxtest._WORK, ignore_errors=True)


if __name__ == "__main__":
    main()
