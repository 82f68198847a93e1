"""What the webhook benchmarks share: pinned server processes, the load generator, CPU meters, phases.

A benchmark script (``bench/wechat_bench.py``, ``bench/alipay_bench.py``) builds its own requests and
servers and judges its own answers; this module runs a server as a child process pinned to one core
(the script itself, started with ``--serve``), drives it from the parent pinned to another core in a
closed loop (maximum throughput) and an open loop (latency at a fixed arrival rate), and measures the CPU
both sides used and how busy their cores were. Linux only (it pins processes and reads ``/proc``).
Scripts import it as ``harness`` (they run from ``bench/``, which is then first on ``sys.path``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import json
import math
import os
import platform
import pstats
import resource
import signal
import socket
import statistics
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from yarl import URL

GIVES_UP = 5.0  # seconds: the platform (WeChat; Alipay alike here) drops the connection after this
# Reading a server's own figures is not a measurement: on a loaded machine the answer may wait behind the
# backlog of a phase (and the database the worker is writing to), so it is given ample time and retried.
SCRAPE_PATIENCE = 180.0
# The full-stack servers serve /metrics only to a bearer of this (VAXBOT_METRICS_TOKEN); a bench value.
METRICS_TOKEN = "bench-metrics-token-not-a-secret"


def log(message: str) -> None:
    """Progress goes to stderr, so ``--json`` output stays clean."""
    print(message, file=sys.stderr, flush=True)


# --- the server side (a child process) --------------------------------------------------------


def listening_socket() -> socket.socket:
    """A socket bound to a free loopback port (the server says which with ``READY <port>``)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


async def serve_app(app: web.Application, sock: socket.socket, profile_out: str | None = None) -> None:
    """Serve ``app`` on ``sock`` (listen backlog 1024), say ``READY <port>``, serve until SIGTERM.

    With ``profile_out``, cProfile runs from ``READY`` to SIGTERM and its stats are written there.
    """
    port = sock.getsockname()[1]
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()  # the full stack migrates its database here
    site = web.SockSite(runner, sock, backlog=1024)
    await site.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    profiler = None
    if profile_out:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    print(f"READY {port}", flush=True)
    await stop.wait()
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(profile_out)
    await runner.cleanup()


# --- the load generator (the parent process) --------------------------------------------------


@dataclasses.dataclass(slots=True)
class Prepared:
    """One signed (and, on WeChat, encrypted) request, ready to send."""

    url: URL
    body: bytes
    content_type: str
    user: str
    expected: str  # what the answer must carry (the reply text on WeChat)


@dataclasses.dataclass(slots=True)
class Result:
    """What came back for one request."""

    request: Prepared
    status: int  # 0: connection error, -1: no answer within the platform's 5 seconds
    body: bytes
    latency: float  # seconds

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")


class Requests:
    """Distinct requests, built ahead of time so the client stays light.

    ``make(index, base)`` builds the ``index``-th request for the server at ``base``; ``sim`` is whatever
    the benchmark opens answers with (kept here for its checker).
    """

    def __init__(self, make: Callable[[int, str], Prepared], sim: Any = None) -> None:
        self.make = make
        self.sim = sim
        self.base = ""
        self.made = 0
        self.inline = 0  # built while a phase was running (ran out of prepared ones)
        self._ready: list[Prepared] = []
        self._next = 0

    def _make(self) -> Prepared:
        index = self.made
        self.made += 1
        return self.make(index, self.base)

    def prepare(self, count: int, base: str) -> None:
        """Have ``count`` fresh requests ready for ``base`` (timestamps must stay within 5 minutes)."""
        self.base = base
        self._ready = [self._make() for _ in range(count)]
        self._next = 0

    def take(self) -> Prepared:
        """The next request (built now if the prepared ones ran out)."""
        if self._next < len(self._ready):
            item = self._ready[self._next]
            self._next += 1
            return item
        self.inline += 1
        return self._make()


async def _send(session: aiohttp.ClientSession, request: Prepared, started: float) -> Result:
    try:
        async with session.post(
            request.url, data=request.body, headers={"Content-Type": request.content_type}
        ) as response:
            body = await response.read()
            status = response.status
    except TimeoutError:
        body, status = b"timeout", -1
    except aiohttp.ClientError as exc:
        body, status = f"{type(exc).__name__}: {exc}".encode(), 0
    return Result(request, status, body, time.perf_counter() - started)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _core_busy_seconds(cpu: int) -> float:
    """Time one core spent on anything (any process, interrupts, hypervisor steal) since boot."""
    with open("/proc/stat", encoding="ascii") as handle:
        for line in handle:
            if line.startswith(f"cpu{cpu} "):
                ticks = [int(value) for value in line.split()[1:]]
                idle = ticks[3] + ticks[4]  # idle + iowait
                return (sum(ticks[:8]) - idle) / os.sysconf("SC_CLK_TCK")
    return 0.0


class Meter:
    """CPU used by the server process and by the client, and how busy each one's core was."""

    def __init__(self, pid: int, core: int) -> None:
        self.pid = pid
        self.core = core
        own = os.sched_getaffinity(0)
        self.client_core = next(iter(own)) if len(own) == 1 else None
        self.started = time.perf_counter()
        self._server = cpu_seconds(pid)
        self._client = _own_cpu_seconds()
        self._core = _core_busy_seconds(core)
        self._client_core = _core_busy_seconds(self.client_core) if self.client_core is not None else 0.0

    def read(self) -> dict[str, float]:
        """Seconds of wall time, server CPU, client CPU and busy time of both cores, since creation."""
        return {
            "wall": time.perf_counter() - self.started,
            "server_cpu": cpu_seconds(self.pid) - self._server,
            "client_cpu": _own_cpu_seconds() - self._client,
            "core_busy": _core_busy_seconds(self.core) - self._core,
            "client_core_busy": _core_busy_seconds(self.client_core) - self._client_core
            if self.client_core is not None
            else 0.0,
        }


async def settle(pid: int, limit: float = 30.0) -> None:
    """Wait until the server is idle (it may still be working through requests the client gave up on)."""
    deadline = time.perf_counter() + limit
    while time.perf_counter() < deadline:
        before = cpu_seconds(pid)
        await asyncio.sleep(0.3)
        if cpu_seconds(pid) - before < 0.03:
            return


@dataclasses.dataclass
class Phase:
    """One measured phase: what was sent, what came back, and the CPU both sides used."""

    name: str
    results: list[Result]
    wall: float
    server_cpu: float
    client_cpu: float
    core_busy: float
    client_core_busy: float
    offered_rate: float | None = None
    unsent: int = 0  # open loop: not sent because the server was already overloaded

    @classmethod
    def measured(cls, name: str, results: list[Result], meter: Meter, offered_rate: float | None = None) -> Phase:
        used = meter.read()
        return cls(
            name,
            results,
            wall=used["wall"],
            server_cpu=used["server_cpu"],
            client_cpu=used["client_cpu"],
            core_busy=used["core_busy"],
            client_core_busy=used["client_core_busy"],
            offered_rate=offered_rate,
        )

    @property
    def rate(self) -> float:
        return len(self.results) / self.wall if self.wall > 0 else 0.0

    def latency_ms(self, quantile: float) -> float:
        values = sorted([result.latency for result in self.results] + [GIVES_UP] * self.unsent)
        if not values:
            return math.nan
        return 1000 * values[min(len(values) - 1, max(0, math.ceil(quantile * len(values)) - 1))]

    def summary(self) -> dict[str, Any]:
        figures: dict[str, Any] = {
            "requests": len(self.results),
            "seconds": round(self.wall, 3),
            "requests_per_second": round(self.rate, 1),
            "p50_ms": round(self.latency_ms(0.50), 2),
            "p99_ms": round(self.latency_ms(0.99), 2),
            "max_ms": round(self.latency_ms(1.0), 2),
            "server_cpu": round(self.server_cpu / self.wall, 3),
            "client_cpu": round(self.client_cpu / self.wall, 3),
            # Work on the server's core that was not the server: other processes on a shared machine.
            "other_load_on_server_core": round(max(0.0, self.core_busy - self.server_cpu) / self.wall, 3),
            "other_load_on_client_core": round(max(0.0, self.client_core_busy - self.client_cpu) / self.wall, 3),
            "server_cpu_ms_per_request": round(1000 * self.server_cpu / len(self.results), 3) if self.results else None,
        }
        if self.offered_rate is not None:
            figures["offered_rate"] = round(self.offered_rate, 1)
            figures["not_sent"] = self.unsent
        return figures


async def closed_loop(
    session: aiohttp.ClientSession,
    requests: Requests,
    pid: int,
    core: int,
    connections: int,
    seconds: float,
    name: str,
) -> Phase:
    """``connections`` clients, each sending its next request as soon as the previous one is answered."""
    results: list[Result] = []
    meter = Meter(pid, core)
    until = meter.started + seconds

    async def client() -> None:
        while time.perf_counter() < until:
            request = requests.take()
            results.append(await _send(session, request, time.perf_counter()))

    await asyncio.gather(*(client() for _ in range(connections)))
    return Phase.measured(name, results, meter)


async def open_loop(
    session: aiohttp.ClientSession, requests: Requests, pid: int, core: int, rate: float, seconds: float, name: str
) -> Phase:
    """Requests at a fixed arrival rate whatever the server does; latency counts from the planned send time.

    A server that cannot keep up leaves requests unanswered past the platform's 5 s. Once more than 2% of them
    have, the rest of the phase is not sent (the server would only pile up work it does after the phase);
    those count as unanswered, at 5 s, in the latency figures.
    """
    count = max(1, int(rate * seconds))
    tasks: list[asyncio.Task[Result]] = []
    timeouts = 0

    def note(task: asyncio.Task[Result]) -> None:
        nonlocal timeouts
        if task.result().status == -1:
            timeouts += 1

    meter = Meter(pid, core)
    started = time.perf_counter() + 0.01
    for index in range(count):
        if timeouts > max(20, count // 50):
            break
        planned = started + index / rate
        delay = planned - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(_send(session, requests.take(), planned))
        task.add_done_callback(note)
        tasks.append(task)
    results = list(await asyncio.gather(*tasks))
    phase = Phase.measured(name, results, meter, offered_rate=rate)
    phase.unsent = count - len(tasks)
    return phase


# --- orchestration --------------------------------------------------------------------------


@dataclasses.dataclass
class Plan:
    """Durations and load shape."""

    warmup: float
    duration: float
    connections: int
    open_connections: int
    quick: bool


class ServerProcess:
    """A server child process pinned to one core: ``script --serve kind --cpu N --scratch DIR [--option value]``.

    The script must answer with a line ``READY <port>`` on stdout once it listens (see :func:`serve_app`).
    """

    def __init__(self, script: str, label: str, kind: str, cpu: int, scratch: Path, **options: str) -> None:
        self.script = script
        self.label = label
        self.kind = kind
        self.cpu = cpu
        self.scratch = scratch
        self.options = options
        self.log_path = scratch / f"{label}.log"
        self.proc: asyncio.subprocess.Process | None = None
        self.port = 0

    async def start(self) -> None:
        command = [sys.executable, self.script, "--serve", self.kind, "--cpu", str(self.cpu)]
        command += ["--scratch", str(self.scratch)]
        for name, value in self.options.items():
            command += [f"--{name.replace('_', '-')}", value]
        log_file = self.log_path.open("wb")
        try:
            self.proc = await asyncio.create_subprocess_exec(
                *command, stdout=asyncio.subprocess.PIPE, stderr=log_file, stdin=asyncio.subprocess.DEVNULL
            )
        finally:
            log_file.close()
        assert self.proc.stdout is not None
        try:
            line = await asyncio.wait_for(self.proc.stdout.readline(), timeout=SCRAPE_PATIENCE)
        except TimeoutError:
            line = b""
        if not line.startswith(b"READY "):
            await self.stop()
            raise RuntimeError(f"the {self.label} server did not start:\n{self.log_tail()}")
        self.port = int(line.split()[1])

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def stop(self) -> None:
        if self.proc is None or self.proc.returncode is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.proc.wait(), timeout=60)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def log_levels(self) -> dict[str, int]:
        """How many log lines the server wrote, by level (a healthy run writes none)."""
        levels: Counter[str] = Counter()
        with contextlib.suppress(OSError):
            for line in self.log_path.read_text(encoding="utf-8", errors="replace").splitlines():
                try:
                    levels[str(json.loads(line).get("level", "?"))] += 1
                except (ValueError, AttributeError):
                    levels["unstructured"] += 1
        return dict(levels)


@contextlib.asynccontextmanager
async def running(server: ServerProcess) -> AsyncIterator[ServerProcess]:
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def scrape(
    session: aiohttp.ClientSession,
    url: str,
    params: Mapping[str, str] | None = None,
    headers: Mapping[str, str] | None = None,
) -> str:
    """GET ``url`` until it answers 200, for up to :data:`SCRAPE_PATIENCE` seconds; its text."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + SCRAPE_PATIENCE
    while True:
        remaining = deadline - loop.time()
        try:
            timeout = aiohttp.ClientTimeout(total=max(remaining, 1.0))
            async with session.get(url, params=params, headers=headers, timeout=timeout) as response:
                if response.status == 200:
                    return await response.text()
                problem = f"status {response.status}"
        except (aiohttp.ClientError, TimeoutError) as exc:
            problem = repr(exc)
        if loop.time() >= deadline:
            raise RuntimeError(f"{url} did not answer within {SCRAPE_PATIENCE:.0f} s: {problem}")
        await asyncio.sleep(0.5)


async def scrape_metrics(session: aiohttp.ClientSession, base: str) -> str:
    """The server's ``/metrics`` text, asked with the bench's bearer token."""
    return await scrape(session, f"{base}/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})


async def outbox_figures(session: aiohttp.ClientSession, base: str) -> dict[str, Any]:
    """Outbox rows by status and webhook outcomes, from the server's own /metrics."""
    text = await scrape_metrics(session, base)
    outbox: dict[str, int] = {}
    outcomes: dict[str, int] = {}
    handler_errors = 0
    for line in text.splitlines():
        if line.startswith("#") or " " not in line:
            continue
        name, value = line.rsplit(" ", 1)
        if name.startswith("vaxbot_outbox_messages{"):
            outbox[name.split('status="')[1].split('"')[0]] = int(float(value))
        elif name.startswith("vaxbot_webhook_requests_total{"):
            outcomes[name.split('outcome="')[1].split('"')[0]] = int(float(value))
        elif name.startswith("vaxbot_handler_errors_total"):
            handler_errors += int(float(value))
    return {"outbox": outbox, "webhook_outcomes": outcomes, "handler_errors": handler_errors}


Checker = Callable[[list[Result]], tuple[Counter[str], list[str]]]
# Called right after each measured phase, before the server is left to settle: extra figures about it.
AfterPhase = Callable[[aiohttp.ClientSession, "ServerProcess", "Phase"], Awaitable[dict[str, Any]]]
# The report's key of each measured phase.
PHASE_KEYS = {"closed": "closed_loop", "open_half_own_max": "open_loop_half_own_max", "open": "open_loop"}
# Called after the server has gone idle between phases: wait for whatever else must be finished first.
Quiesce = Callable[[aiohttp.ClientSession, "ServerProcess"], Awaitable[None]]


async def measure(
    server: ServerProcess,
    requests: Requests,
    plan: Plan,
    open_rate: float | None,
    check: Checker,
    verdicts: Sequence[str],
    after_phase: AfterPhase | None = None,
    quiesce: Quiesce | None = None,
) -> dict[str, Any]:
    """Warm up; closed loop; open loop at ``open_rate`` (default: half this server's own maximum) and, when
    a rate is given, also at half this server's own maximum.

    ``check`` classifies every answer of a phase (counts by verdict, a few problems described); the
    answers are reported for ``verdicts`` (which must include ``not_sent``). ``after_phase``, when
    given, runs right after each measured phase; its figures are reported as ``<phase>_drained``
    (``closed_loop_drained``, ``open_loop_half_own_max_drained``, ``open_loop_drained``);
    ``quiesce``, when given, runs whenever the server has gone idle between phases (an idle server may
    still be waiting on something, such as a platform API its outbox calls).
    """
    timeout = aiohttp.ClientTimeout(total=GIVES_UP)
    connector = aiohttp.TCPConnector(limit=plan.open_connections)
    pid, core = server.pid, server.cpu
    phases: dict[str, Phase] = {}
    drained: dict[str, dict[str, Any]] = {}
    # The client's garbage collector would pause it for tens of milliseconds while it holds tens of
    # thousands of results, and those pauses would be charged to the server's latency: it runs between
    # phases only.
    gc.disable()
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def settle_all() -> None:
            await settle(pid)
            if quiesce is not None:
                await quiesce(session, server)
                await settle(pid)

        requests.prepare(max(500, plan.connections * 20), server.base)
        warm = await closed_loop(session, requests, pid, core, plan.connections, plan.warmup, "warm-up")
        phases["warm-up"] = warm
        await settle_all()
        gc.collect()
        # Prepared requests for twice the warm-up rate; beyond that they are built inline (counted).
        requests.prepare(int(warm.rate * plan.duration * 2) + 500, server.base)
        inline_before = requests.inline
        closed = await closed_loop(session, requests, pid, core, plan.connections, plan.duration, "closed")
        phases["closed"] = closed
        inline = requests.inline - inline_before
        log(
            f"  closed loop: {closed.rate:8.1f} req/s  (server CPU {closed.server_cpu / closed.wall:.0%}, "
            f"{1000 * closed.server_cpu / max(1, len(closed.results)):.2f} ms CPU per request)"
        )
        if after_phase is not None:
            drained[PHASE_KEYS[closed.name] + "_drained"] = await after_phase(session, server, closed)
        # At half its own maximum first: the phase at the common rate may overload this server, and the
        # outbox then delivers the replies of the requests the platform gave up on for a while afterwards.
        rates = {"open_half_own_max": closed.rate / 2} if open_rate is not None else {}
        rates["open"] = open_rate if open_rate is not None else closed.rate / 2
        for name, rate in rates.items():
            await settle_all()
            gc.collect()
            requests.prepare(int(rate * plan.duration) + 10, server.base)
            opened = await open_loop(session, requests, pid, core, rate, plan.duration, name)
            phases[name] = opened
            log(
                f"  open loop at {rate:.0f} req/s: p50 {opened.latency_ms(0.5):.1f} ms, "
                f"p99 {opened.latency_ms(0.99):.1f} ms, max {opened.latency_ms(1.0):.1f} ms"
            )
            if after_phase is not None:
                drained[PHASE_KEYS[name] + "_drained"] = await after_phase(session, server, opened)
        await settle_all()
        extra = await outbox_figures(session, server.base) if server.kind == "full" else {}
    gc.enable()
    answers: Counter[str] = Counter()
    problems: list[str] = []
    by_phase: dict[str, dict[str, int]] = {}
    for name, phase in phases.items():
        counts, samples = check(phase.results)
        if phase.unsent:
            counts["not_sent"] = phase.unsent
        by_phase[name] = dict(counts)
        answers.update(counts)
        problems.extend(samples)
    return {
        "closed_loop": closed.summary(),
        "open_loop": phases["open"].summary(),
        "open_loop_half_own_max": phases["open_half_own_max"].summary() if "open_half_own_max" in phases else None,
        "answers": {key: answers.get(key, 0) for key in verdicts},
        "answers_by_phase": by_phase,
        "problems": problems[:5],
        "inline_built_requests": inline,
        **drained,
        **extra,
    }


async def create_database(admin_url: str, name: str) -> str:
    import asyncpg
    from sqlalchemy.engine import make_url

    url = make_url(admin_url)
    conn = await asyncpg.connect(url.set(drivername="postgresql").render_as_string(hide_password=False))
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return url.set(database=name).render_as_string(hide_password=False)


async def drop_database(admin_url: str, name: str) -> None:
    import asyncpg
    from sqlalchemy.engine import make_url

    url = make_url(admin_url).set(drivername="postgresql").render_as_string(hide_password=False)
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    model = "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as handle:
        for line in handle:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cpu_model": model,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "aiohttp": aiohttp.__version__,
        "kernel": platform.release(),
    }


def pick_cpus() -> tuple[int, int | None]:
    """(server core, client core): the first two cores this process may use."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        log("warning: fewer than two cores available; server and client share one, figures are not comparable")
        return cpus[0], None
    return cpus[0], cpus[1]


def _package(filename: str, function: str) -> str:
    """Where a profiled function lives: a package, the standard library module, or C built-ins."""
    if filename == "~":
        return "built-in: " + function.split(" of ")[0].strip("{}<>")
    parts = Path(filename).parts
    if "site-packages" in parts:
        return parts[parts.index("site-packages") + 1].removesuffix(".py")
    for package in ("bot", "handlers", "models"):
        if package in parts:
            return f"vaxbot ({package})"
    if "bench" in parts:
        return "bench"
    return "stdlib: " + Path(filename).stem


def _short(filename: str) -> str:
    """A module's path from its package root (no machine paths in the output)."""
    parts = Path(filename).parts
    for marker in ("site-packages", "bench", "bot", "handlers", "models"):
        if marker in parts:
            index = parts.index(marker)
            return "/".join(parts[index + (1 if marker == "site-packages" else 0) :])
    for index, part in enumerate(parts):
        if part.startswith("python3"):
            return "/".join(parts[index + 1 :])
    return Path(filename).name


def profile_summary(path: str, top: int) -> dict[str, Any]:
    """Own time (tottime) by package and the top functions, from a pstats file."""
    stats = pstats.Stats(path)
    by_package: Counter[str] = Counter()
    functions: list[tuple[float, int, str]] = []
    total = 0.0
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    for (filename, line, function), (_, calls, own, _, _) in raw.items():
        by_package[_package(filename, function)] += own
        total += own
        functions.append((own, calls, f"{_short(filename)}:{line}({function})" if filename != "~" else function))
    functions.sort(reverse=True)
    return {
        "total_seconds": round(total, 3),
        "by_package": [
            (name, round(seconds, 3), round(seconds / total, 3)) for name, seconds in by_package.most_common(top)
        ],
        "functions": [(name, calls, round(own, 3), round(own / total, 3)) for own, calls, name in functions[:top]],
    }


def print_profiles(report: dict[str, Any], top: int) -> None:
    """The hot spots of each profiled server, on stderr."""
    for label, path in report.get("profiles", {}).items():
        if not Path(path).exists():
            continue
        summary = profile_summary(path, top)
        report.setdefault("profile_summaries", {})[label] = summary
        log(f"\n=== {label}: own time by package ({summary['total_seconds']:.1f} s profiled, idle included) ===")
        for name, seconds, share in summary["by_package"]:
            log(f"  {share:6.1%} {seconds:8.2f} s  {name}")
        log(f"=== {label}: top {top} functions by own time ===")
        for name, calls, seconds, share in summary["functions"]:
            log(f"  {share:6.1%} {seconds:8.2f} s {calls:>9} calls  {name}")
        log(f"(full profile: python -m pstats {path})")


def time_calls(call: Callable[[], object], duration: float) -> dict[str, float]:
    """Per-call microseconds: the median of batches run for about ``duration`` seconds."""
    call()  # warm up (key caches, imports)
    started = time.perf_counter()
    call()
    single = max(time.perf_counter() - started, 1e-7)
    batch = max(1, int(0.05 / single))  # batches of about 50 ms
    per_call: list[float] = []
    calls = 0
    deadline = time.perf_counter() + duration
    while time.perf_counter() < deadline or len(per_call) < 3:
        started = time.perf_counter()
        for _ in range(batch):
            call()
        per_call.append((time.perf_counter() - started) / batch * 1e6)
        calls += batch
    return {
        "us_per_call": round(statistics.median(per_call), 1),
        "min_us": round(min(per_call), 1),
        "calls": calls,
    }
