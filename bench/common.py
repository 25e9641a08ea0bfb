"""Shared pieces of the benchmark harness (bench/run.py, bench/kinesis_vs_copy.py): the rows every
case ingests, process measurements (/proc), statistics, the machine description and the
BENCHMARKS.md block the harness rewrites. Nothing here measures anything by itself.
"""
from __future__ import annotations

import os
import platform
import re
import statistics
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
import pihelpers as ph  # noqa: E402

# --------------------------------------------------------------------------- rows

# The seed's message (neo4j-kafka-1M-updates: `userId,amount,timestamp`, ~30 bytes of csv), the
# workload issue 10's targets are stated in. Values are deterministic, so every case and every
# run ingests exactly the same rows, and user_id is unique (the primary-key variant).
NARROW_COLUMNS = "user_id bigint, amount numeric(10,2), ts double precision"
NARROW_KEY = "user_id"


def narrow_csv(i: int) -> str:
    return f"{1000000 + i},{(i * 37) % 5000 / 100},{1767225600 + i / 1000:.6f}"


def narrow_json(i: int) -> str:
    return f'{{"user_id": {1000000 + i}, "amount": {(i * 37) % 5000 / 100}, "ts": {1767225600 + i / 1000:.6f}}}'


# The narrow row in Avro (user_id long, amount decimal(10,2) as bytes, ts double), framed for a
# schema registry with the id `narrow_avro` is given (issue 21).
NARROW_AVRO_SCHEMA = {"type": "record", "name": "Narrow", "fields": [
    {"name": "user_id", "type": "long"},
    {"name": "amount", "type": {"type": "bytes", "logicalType": "decimal", "precision": 10, "scale": 2}},
    {"name": "ts", "type": "double"}]}


def _zigzag(v: int) -> bytes:
    z, out = (v << 1) ^ (v >> 63), bytearray()
    while True:
        b, z = z & 0x7F, z >> 7
        if not z:
            out.append(b)
            return bytes(out)
        out.append(b | 0x80)


def narrow_avro(schema_id: int) -> Callable[[int], bytes]:
    import struct
    head = b"\x00" + schema_id.to_bytes(4, "big")

    def line(i: int) -> bytes:
        cents = (i * 37) % 5000  # amount * 100, as narrow_csv's amount
        unscaled = cents.to_bytes((cents.bit_length() + 8) // 8, "big", signed=True)
        ts = float(f"{1767225600 + i / 1000:.6f}")
        return head + _zigzag(1000000 + i) + _zigzag(len(unscaled)) + unscaled + struct.pack("<d", ts)
    return line


def narrow_bad(i: int) -> str:
    """A message of the narrow shape that cannot become a row (numeric input error, 22P02)."""
    return f"{1000000 + i},not-a-number,{1767225600 + i / 1000:.6f}"


# The wider row: 20 columns of common types, about 300 bytes of csv.
WIDE_COLUMNS = ("id bigint, account_id integer, session_id uuid, user_name text, email text, country text, "
                "city text, device text, os_version text, amount numeric(12,2), price double precision, "
                "quantity integer, discount real, is_member boolean, created_at timestamptz, "
                "updated_at timestamptz, status text, referrer text, note text, score smallint")
WIDE_KEY = "id"
_CITIES = ["Amsterdam", "Berlin", "Lisbon", "Montreal", "Nairobi", "Osaka", "Santiago", "Wellington"]
_DEVICES = ["phone", "tablet", "desktop", "tv"]
_STATUS = ["new", "paid", "shipped", "returned"]


def wide_csv(i: int) -> str:
    sec = i % 86400
    ts = f"2026-01-{1 + i % 28:02d} {sec // 3600:02d}:{sec // 60 % 60:02d}:{sec % 60:02d}.{i % 1000:03d}+00"
    return ",".join([
        str(i), str(i % 100000), f"{i:08x}-{i % 65536:04x}-4{i % 4096:03x}-8{i % 4096:03x}-{i * 7919 % 16**12:012x}",
        f"user_{i % 50000}", f"user_{i % 50000}@example.com", "NL" if i % 3 else "DE", _CITIES[i % 8],
        _DEVICES[i % 4], f"{14 + i % 4}.{i % 10}.{i % 7}", f"{(i * 37) % 100000 / 100:.2f}",
        f"{(i * 13) % 10000 / 7:.6f}", str(1 + i % 9), f"{i % 50 / 100}", "true" if i % 2 else "false", ts, ts,
        _STATUS[i % 4], f"https://shop.example.com/campaign/{i % 977}?src=newsletter",
        f'"order {i}, packed by team {i % 13}; gift wrap {"yes" if i % 5 == 0 else "no"}"', str(i % 1000),
    ])


# --------------------------------------------------------------------------- processes


def _status_kb(pids: Iterable[int], field: str) -> int:
    """Sum of one kB field of /proc/PID/status over the processes still alive."""
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith(field + ":"):
                    total += int(line.split()[1])
        except (FileNotFoundError, ProcessLookupError):
            pass
    return total


def peak_rss_kb(pids: Iterable[int]) -> int:
    """Sum of the peak resident set (VmHWM) of the processes still alive."""
    return _status_kb(pids, "VmHWM")


def private_rss_kb(pids: Iterable[int]) -> int:
    """Sum of the private resident memory (RssAnon) of the processes still alive, now: the resident
    set without shared memory (PostgreSQL's shared buffers a worker touched count in VmHWM, though
    they belong to the server, not to the worker) and without mapped files."""
    return _status_kb(pids, "RssAnon")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (FileNotFoundError, IndexError, ValueError):
        return 0.0


def backend_pids(conn: Any, backend_type: str) -> list[int]:
    return [r[0] for r in conn.execute("SELECT pid FROM pg_stat_activity WHERE backend_type = %s "
                                       "AND datname = current_database()", (backend_type,)).fetchall()]


def wait_no_backends(conn: Any, backend_type: str, timeout: float = 60.0) -> None:
    """Wait until the workers of a stopped consumer have exited, so they take no CPU from the next
    measurement."""
    ph.wait_until(lambda: not backend_pids(conn, backend_type), timeout=timeout, interval=0.05,
                  what=f"no '{backend_type}' left in the benchmark database")


def write_rows_file(name: str, n: int, line: Callable[[int], str]) -> Path:
    """A server-readable csv file of rows 0..n-1 in /tmp (PostgreSQL's COPY FROM reads it)."""
    path = Path(f"/tmp/pi_bench_{os.getpid()}_{name}.csv")
    with open(path, "w") as f:
        for i in range(n):
            f.write(line(i))
            f.write("\n")
    path.chmod(0o644)
    return path


# --------------------------------------------------------------------------- statistics


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def spread(xs: list[float], fmt: Callable[[float], str]) -> str:
    """min–max of the runs and the half-range as a share of the median ("—" for one run)."""
    if len(xs) < 2:
        return "—"
    med = median(xs)
    pm = (max(xs) - min(xs)) / 2 / med * 100 if med else 0.0
    return f"{fmt(min(xs))}–{fmt(max(xs))} (±{pm:.0f}%)"


def rate(x: float) -> str:
    return f"{x:,.0f}"


# --------------------------------------------------------------------------- machine description


def _elf_section_names(path: Path) -> set[str]:
    """Section names of a 64-bit little-endian ELF file (enough to see whether it has DWARF)."""
    with open(path, "rb") as f:
        head = f.read(64)
        if head[:4] != b"\x7fELF" or head[4] != 2 or head[5] != 1:
            return set()
        shoff, = struct.unpack_from("<Q", head, 0x28)
        shentsize, shnum, shstrndx = struct.unpack_from("<HHH", head, 0x3A)
        f.seek(shoff)
        table = f.read(shentsize * shnum)
        headers = [struct.unpack_from("<IIQQQQ", table, k * shentsize) for k in range(shnum)]
        _, _, _, _, str_off, str_size = headers[shstrndx]
        f.seek(str_off)
        strtab = f.read(str_size)
    return {strtab[h[0]:strtab.index(b"\0", h[0])].decode(errors="replace") for h in headers}


def extension_library() -> tuple[Optional[Path], bool]:
    """The pipeline_ingest.so the running postmaster has mapped (it is preloaded), and whether that
    file has since been replaced on disk (a build installed without a restart: the server still
    runs the old one)."""
    pid = ph.postmaster_pid()
    if pid:
        try:
            for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
                if line.endswith("pipeline_ingest.so") or line.endswith("pipeline_ingest.so (deleted)"):
                    deleted = line.endswith(" (deleted)")
                    return Path(line.split(None, 5)[5].removesuffix(" (deleted)")), deleted
        except (PermissionError, FileNotFoundError):
            pass
    try:
        libdir = subprocess.run([os.environ.get("PG_CONFIG", "pg_config"), "--pkglibdir"], text=True,
                                stdout=subprocess.PIPE, check=True).stdout.strip()
        return Path(libdir) / "pipeline_ingest.so", False
    except (OSError, subprocess.CalledProcessError):
        return None, False


def build_profile(lib: Optional[Path]) -> str:
    """'debug' when the library carries DWARF (.debug_info: cargo's dev profile, what
    scripts/build.sh installs by default), 'release' when it does not (the release profile has
    no debug info; cargo strips it)."""
    if lib is None or not lib.exists():
        return "unknown"
    return "debug" if ".debug_info" in _elf_section_names(lib) else "release"


def _read(path: Path, default: str = "?") -> str:
    try:
        return path.read_text()
    except OSError:
        return default


def machine(conn: Any) -> dict[str, str]:
    """What the figures depend on, for the BENCHMARKS.md block."""
    cpu = re.search(r"^model name\s*:\s*(.*)$", _read(Path("/proc/cpuinfo"), ""), re.M)
    mem = re.search(r"^MemTotal:\s*(\d+) kB", _read(Path("/proc/meminfo"), ""), re.M)
    osrel = re.search(r'^PRETTY_NAME="?([^"\n]*)', _read(Path("/etc/os-release"), ""), re.M)
    kafka = sorted(p.name for p in Path(os.environ.get("KAFKA_LIBS", ROOT / "tests/kafka/target/kafka-libs"))
                   .glob("kafka-clients-*.jar"))
    kinesalite = re.search(r'"version":\s*"([^"]+)"',
                           _read(ROOT / "tests/kinesis/node_modules/kinesalite/package.json", ""))
    rdkafka = re.search(r'name = "rdkafka-sys"\nversion = "[^+"]*\+([^"]+)"', _read(ROOT / "Cargo.lock", ""))
    lib, replaced = extension_library()
    try:
        commit = subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"], text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL).stdout.strip() or "?"
    except OSError:
        commit = "?"
    import confluent_kafka
    import psycopg
    return {
        "cpu": f"{os.cpu_count()} cores ({cpu.group(1).strip() if cpu else platform.machine()})",
        "ram": f"{int(mem.group(1)) / 1024 / 1024:.1f} GiB" if mem else "?",
        "os": f"{osrel.group(1) if osrel else platform.system()}, kernel {platform.release()}",
        "postgresql": conn.execute("SHOW server_version").fetchone()[0],
        "extension": (conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'pipeline_ingest'")
                      .fetchone()[0] + f" (git {commit})"),
        "build": build_profile(lib) + (" — the server still runs a replaced library; restart it"
                                       if replaced else ""),
        "kafka": (kafka[0].removeprefix("kafka-clients-").removesuffix(".jar") if kafka else "?")
        + f" (KRaft, one node); librdkafka {rdkafka.group(1) if rdkafka else '?'} in the extension",
        "kinesalite": kinesalite.group(1) if kinesalite else "?",
        "python clients": f"Python {platform.python_version()}, confluent-kafka {confluent_kafka.__version__} "
                          f"(librdkafka {confluent_kafka.libversion()[0]}), psycopg {psycopg.__version__}",
        "load": "load average {:.2f} {:.2f} {:.2f} at the start".format(*os.getloadavg()),
    }


# --------------------------------------------------------------------------- BENCHMARKS.md

BEGIN = "<!-- bench:begin -->"
END = "<!-- bench:end -->"


def replace_block(path: Path, block: str) -> None:
    """Put `block` between the bench markers of `path` (the previous run's block goes)."""
    text = path.read_text()
    a, b = text.find(BEGIN), text.find(END)
    if a < 0 or b < a:
        raise SystemExit(f"{path}: markers {BEGIN} ... {END} not found; add them where the table belongs")
    path.write_text(text[:a + len(BEGIN)] + "\n" + block.rstrip("\n") + "\n" + text[b:])


def now_utc() -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
