"""Every ```sql example of README.md runs, as written, against the real services (issue 24.1).

The README is the test's input, so an example edited there is tested as edited. The convention
(also in README "Tests"):

- Each section (a `#` heading) runs in a new database, its runnable ```sql blocks in order, each
  through psql as the superuser (`ON_ERROR_STOP`: any error fails the test). The database has the
  extension unless the section's blocks run `CREATE EXTENSION pipeline_ingest` themselves, a broker
  entry for the test broker unless they call `add_broker`, and a Kinesis endpoint `'local'` unless
  they call `add_endpoint`.
- Topics and streams the blocks name (the first argument of `consume_begin`, `preview`, `seek`,
  `topic_watermarks`, `produce_message`, `emit_tuple`, `consume_begin_stream_partitioned`; the
  stream of `pipeline_kinesis.consume_begin` / `preview`) are created anew, empty, with one
  partition or shard, before the section runs.
- The demo's addresses in a block (`localhost:9092`, `127.0.0.1:29092`, `http://127.0.0.1:24567`)
  are replaced by the test stack's.
- After the section: no dead letter (Kafka, Kinesis) and no consumer with a `last_error`.
- An HTML comment right before a block (the reader does not see it) adds to that, one directive a
  line (`<!-- doctest: skip (reason) -->` on one line works too). Lines starting with `after ` run
  after the block, the others before it:

      skip (reason)                      do not run the block (a signature, needs credentials, ...)
      fresh                              a new database for this block and the rest of the section
      topic NAME [PARTITIONS]            create the topic with that many partitions
      stream NAME [SHARDS]               create the Kinesis stream with that many shards
      sql STATEMENTS                     hidden SQL (e.g. a table the text assumes exists)
      produce TOPIC [xN] [key=K] [partition=P] MSG   produce MSG (Python escapes: \\xff, \\t) N times
      put STREAM [xN] MSG                put a Kinesis record N times
      expect QUERY => VALUE              wait (30 s at most) until the query's one value is VALUE
      allow dead letters                 this database (until the next `fresh`) may keep dead letters
"""
from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import pytest

import pihelpers

README = Path(__file__).resolve().parents[2] / "README.md"

DIRECTIVES = ("skip", "fresh", "topic", "stream", "sql", "produce", "put", "expect", "allow dead letters")


@dataclass
class Block:
    line: int                      # line of the opening fence in README.md
    sql: str
    directives: list[str] = field(default_factory=list)

    def skip_reason(self) -> Optional[str]:
        for d in self.directives:
            if d.startswith("skip"):
                return d[4:].strip(" :") or "no reason given"
        return None


@dataclass
class Section:
    heading: str
    line: int
    blocks: list[Block] = field(default_factory=list)

    def runnable(self) -> list[Block]:
        return [b for b in self.blocks if b.skip_reason() is None]


def parse_readme(text: str) -> list[Section]:
    """Sections with their ```sql blocks and the doctest directives right before each."""
    sections: list[Section] = [Section("(top)", 1)]
    lines = text.split("\n")
    i = 0
    pending: list[str] = []          # directives of a comment not yet followed by a block
    pending_line = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("```"):
            lang = line[3:].strip()
            j = i + 1
            while j < len(lines) and not lines[j].startswith("```"):
                j += 1
            if lang == "sql":
                sections[-1].blocks.append(Block(i + 1, "\n".join(lines[i + 1:j]) + "\n", pending))
            elif pending:
                raise AssertionError(f"README.md:{pending_line}: a doctest comment before a ```{lang} block")
            pending = []
            i = j + 1
            continue
        m = re.match(r"\s*<!--\s*doctest:(.*)", line)
        if m:
            body = m.group(1)
            start = i
            while "-->" not in body:
                i += 1
                body += "\n" + lines[i]
            body = body.split("-->", 1)[0]
            pending = [d.strip() for d in body.split("\n") if d.strip()]
            pending_line = start + 1
            for d in pending:
                word = d[6:] if d.startswith("after ") else d
                assert word.startswith(DIRECTIVES), f"README.md:{start + 1}: unknown doctest directive {d!r}"
            i += 1
            continue
        if line.startswith("#"):
            sections.append(Section(line.lstrip("#").strip(), i + 1))
        elif line.strip() and pending:
            raise AssertionError(f"README.md:{pending_line}: a doctest comment not right before a ```sql block")
        i += 1
    return [s for s in sections if s.blocks]


SECTIONS = parse_readme(README.read_text())

SUBSTITUTIONS = [("http://127.0.0.1:24567", pihelpers.KINESIS_ENDPOINT),
                 ("localhost:9092", pihelpers.KAFKA_BOOTSTRAP),
                 ("127.0.0.1:29092", pihelpers.KAFKA_BOOTSTRAP)]

KAFKA_TOPIC_RE = re.compile(r"pipeline_kafka\.(?:consume_begin|consume_begin_stream_partitioned|preview|seek|"
                            r"topic_watermarks|produce_message|emit_tuple)\(\s*'([^']+)'")
KINESIS_STREAM_RE = re.compile(r"pipeline_kinesis\.(?:consume_begin|preview)\(\s*'[^']*'\s*,\s*'([^']+)'")


def substitute(sql: str) -> str:
    for demo, real in SUBSTITUTIONS:
        sql = sql.replace(demo, real)
    return sql


def psql(db: str, sql: str, where: str) -> str:
    env = dict(os.environ, PGOPTIONS="-c client_min_messages=warning")
    proc = subprocess.run([f"{pihelpers.PG_BIN}/psql", "-X", "-q", "-v", "ON_ERROR_STOP=1",
                           "-h", pihelpers.PGHOST, "-p", str(pihelpers.PGPORT), "-U", pihelpers.PGUSER,
                           "-d", db, "-f", "-"], input=substitute(sql), capture_output=True, text=True,
                          env=env, timeout=120)
    assert proc.returncode == 0, (f"{where} failed (psql exit {proc.returncode}):\n{proc.stderr}\n"
                                  f"--- SQL ---\n{substitute(sql)}")
    return proc.stdout


def recreate_topic(name: str, partitions: int) -> None:
    if name in pihelpers.admin_client().list_topics(timeout=10).topics:
        pihelpers.delete_topic(name)
    pihelpers.create_topic(name, partitions)


def recreate_stream(name: str, shards: int) -> None:
    k = pihelpers.kinesis_client()
    try:
        k.delete_stream(StreamName=name)
    except k.exceptions.ResourceNotFoundException:
        pass
    else:
        def gone() -> bool:
            try:
                k.describe_stream_summary(StreamName=name)
                return False
            except k.exceptions.ResourceNotFoundException:
                return True
        pihelpers.wait_until(gone, timeout=30, what=f"stream {name} deleted")
    pihelpers.kinesis_create_stream(name, shards)


def parse_message(words: list[str]) -> tuple[int, Optional[str], Optional[int], bytes]:
    """[xN] [key=K] [partition=P] MESSAGE -> (N, K, P, bytes of MESSAGE with Python escapes)."""
    count, key, partition = 1, None, None
    while words and (re.fullmatch(r"x\d+", words[0]) or words[0].startswith(("key=", "partition="))):
        w = words.pop(0)
        if w.startswith("key="):
            key = w[4:]
        elif w.startswith("partition="):
            partition = int(w[10:])
        else:
            count = int(w[1:])
    msg = " ".join(words).encode("latin-1").decode("unicode_escape").encode("latin-1")
    return count, key, partition, msg


class Runner:
    """Runs one section: its databases, its blocks, their directives."""

    def __init__(self, section: Section, stack: list):
        self.section = section
        self.stack = stack            # databases made (dropped by the test's finally)
        blocks = section.runnable()
        text = "\n".join(b.sql for b in blocks)
        self.own_extension = re.search(r"CREATE\s+EXTENSION\s+(IF\s+NOT\s+EXISTS\s+)?pipeline_ingest", text, re.I)
        self.own_broker = "add_broker(" in text
        self.own_endpoint = "add_endpoint(" in text
        self.allow_dead_letters = False   # set by a block's directive, until the next database
        self.db = ""

    def new_database(self) -> None:
        name = pihelpers.unique_name("pi_readme")
        pihelpers.create_database(name, extension=not self.own_extension)
        self.stack.append(name)
        self.db = name
        if not self.own_extension:
            if not self.own_broker:
                pihelpers.query(name, "SELECT pipeline_kafka.add_broker(%s)", (pihelpers.KAFKA_BOOTSTRAP,))
            if not self.own_endpoint:
                pihelpers.query(name, "SELECT pipeline_kinesis.add_endpoint('local', %s, url := %s)",
                                (pihelpers.AWS_REGION, pihelpers.KINESIS_ENDPOINT))

    def sources(self) -> None:
        """Create every topic and stream the section's blocks and directives name, empty."""
        topics: dict[str, int] = {}
        streams: dict[str, int] = {}
        for b in self.section.runnable():
            for t in KAFKA_TOPIC_RE.findall(b.sql):
                topics.setdefault(t, 1)
            for s in KINESIS_STREAM_RE.findall(b.sql):
                streams.setdefault(s, 1)
            for d in b.directives:
                d = d[6:] if d.startswith("after ") else d
                w = d.split()
                if w[0] in ("topic", "stream"):
                    (topics if w[0] == "topic" else streams)[w[1]] = int(w[2]) if len(w) > 2 else 1
                elif w[0] == "produce":
                    topics.setdefault(w[1], 1)
                elif w[0] == "put":
                    streams.setdefault(w[1], 1)
        for t, n in topics.items():
            recreate_topic(t, n)
        for s, n in streams.items():
            recreate_stream(s, n)

    def directive(self, d: str, where: str) -> None:
        word, _, rest = d.partition(" ")
        if word == "sql":
            psql(self.db, rest, f"{where}: `sql` directive")
        elif word == "produce":
            w = rest.split(" ")
            topic = w.pop(0)
            count, key, partition, msg = parse_message(w)
            pihelpers.produce(topic, [msg] * count, key=key, partition=partition)
        elif word == "put":
            w = rest.split(" ")
            stream = w.pop(0)
            count, key, _, msg = parse_message(w)
            pihelpers.kinesis_put_records(stream, [(key or "k", msg)] * count)
        elif word == "expect":
            q, _, want = rest.rpartition("=>")
            q, want = q.strip(), want.strip()

            def value():
                rows = pihelpers.query(self.db, substitute(q))
                return None if not rows else ("NULL" if rows[0][0] is None else str(rows[0][0]))
            got = []
            try:
                pihelpers.wait_until(lambda: got.append(value()) or got[-1] == want, timeout=30,
                                     what=f"{where}: {q} => {want}")
            except pihelpers.WaitTimeout as e:
                status = pihelpers.query(self.db, "SELECT topic, state, rows, dead_letters, last_error "
                                                  "FROM pipeline_kafka.consumer_status")
                raise AssertionError(f"{where}: expected {q} => {want}, last got {got[-1] if got else None}; "
                                     f"consumer_status {status}") from e

    def run(self) -> None:
        self.sources()
        self.new_database()
        for b in self.section.runnable():
            where = f"README.md:{b.line} ({self.section.heading})"
            before = [d for d in b.directives if not d.startswith("after ")]
            after = [d[6:] for d in b.directives if d.startswith("after ")]
            if "fresh" in before:
                self.end_checks()
                self.new_database()
                self.allow_dead_letters = False
            if "allow dead letters" in before:
                self.allow_dead_letters = True
            for d in before:
                if d not in ("fresh", "allow dead letters") and not d.startswith(("topic", "stream")):
                    self.directive(d, where)
            psql(self.db, b.sql, where)
            for d in after:
                self.directive(d, where)
        self.end_checks()

    def end_checks(self) -> None:
        if self.own_extension and not pihelpers.scalar(
                self.db, "SELECT count(*) FROM pg_extension WHERE extname = 'pipeline_ingest'"):
            return
        where = f"README.md:{self.section.line} ({self.section.heading})"
        if not self.allow_dead_letters:
            dl = pihelpers.query(self.db, "SELECT topic, sqlstate, error FROM pipeline_kafka.dead_letters "
                                          "UNION ALL SELECT stream, sqlstate, error FROM pipeline_kinesis.dead_letters")
            assert not dl, f"{where}: the examples left dead letters: {dl[:5]}"
        errors = pihelpers.query(self.db, "SELECT topic, last_error FROM pipeline_kafka.consumers "
                                          "WHERE last_error IS NOT NULL UNION ALL "
                                          "SELECT stream, last_error FROM pipeline_kinesis.consumers "
                                          "WHERE last_error IS NOT NULL")
        assert not errors, f"{where}: consumers with an error: {errors}"


def _section_id(s: Section) -> str:
    return f"L{s.line}-" + re.sub(r"[^a-z0-9]+", "_", s.heading.lower()).strip("_")[:40]


RUNNABLE = [s for s in SECTIONS if s.runnable()]


@pytest.mark.parametrize("section", RUNNABLE, ids=[_section_id(s) for s in RUNNABLE])
def test_readme_section_examples_run(section):
    made: list[str] = []
    try:
        Runner(section, made).run()
    finally:
        for db in made:
            with pihelpers.pg_connect("postgres") as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


def test_every_skipped_example_says_why():
    """A skip is a decision a reader of the README source can check: it names its reason."""
    for s in SECTIONS:
        for b in s.blocks:
            for d in b.directives:
                if d.startswith("skip"):
                    assert re.fullmatch(r"skip:?\s*\(?.{5,}\)?", d), f"README.md:{b.line}: {d!r} gives no reason"


def test_the_quick_start_is_run():
    """The first example a user copies is among those run (not skipped, not lost by the parser)."""
    qs = [s for s in SECTIONS if s.heading == "Quick start"]
    assert qs and qs[0].runnable(), "the Quick start's SQL is not run by this test"
    assert any("expect" in " ".join(b.directives) for b in qs[0].runnable()), \
        "the Quick start's example checks no outcome (add an `expect` directive)"


def test_the_parser_refuses_misplaced_or_unknown_directives():
    """A directive that would silently not apply is an error: a typo, or a comment that does not
    stand right before a ```sql block."""
    ok = parse_readme("# A\n\n<!-- doctest:\nfresh\nafter expect SELECT 1 => 1\n-->\n```sql\nSELECT 1;\n```\n")
    assert [b.directives for b in ok[0].blocks] == [["fresh", "after expect SELECT 1 => 1"]]
    with pytest.raises(AssertionError, match="unknown doctest directive"):
        parse_readme("# A\n<!-- doctest: expcet SELECT 1 => 1 -->\n```sql\nSELECT 1;\n```\n")
    with pytest.raises(AssertionError, match="not right before"):
        parse_readme("# A\n<!-- doctest: fresh -->\nsome text\n```sql\nSELECT 1;\n```\n")
    with pytest.raises(AssertionError, match="before a ```sh block"):
        parse_readme("# A\n<!-- doctest: fresh -->\n```sh\nls\n```\n")
