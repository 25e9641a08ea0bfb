#!/usr/bin/env python3
"""Rewrites tests/e2e/durations.txt (the seconds per e2e file that conftest.py --shard balances the
parts with) from the JUnit reports of a `make test` run: .run/test-logs/<version>-<part>.xml.

    python3 scripts/durations.py [VERSION...]   (default: every version with reports; a file's
                                                figure is its longest over the versions, so files
                                                skipped on one version, e.g. the Citus tests on 15,
                                                weigh what they take on the other)
"""
from __future__ import annotations

import collections
import pathlib
import sys
import xml.etree.ElementTree as ET

ROOT = pathlib.Path(__file__).resolve().parents[1]
logs = ROOT / ".run" / "test-logs"
versions = sys.argv[1:] or sorted({p.name.split("-")[0] for p in logs.glob("*-*.xml")})
seconds: dict[str, float] = collections.defaultdict(float)
for version in versions:
    reports = sorted(logs.glob(f"{version}-*.xml"))
    if not reports:
        sys.exit(f"no JUnit reports .run/test-logs/{version}-*.xml: run make test first")
    of_version: dict[str, float] = collections.defaultdict(float)
    for report in reports:
        for case in ET.parse(report).getroot().iter("testcase"):
            # classname "tests.e2e.test_x" -> test_x.py; the time includes setup and teardown
            name = case.get("classname", "").split(".")[-1] + ".py"
            of_version[name] += float(case.get("time", "0"))
    for name, secs in of_version.items():
        seconds[name] = max(seconds[name], secs)
if not seconds:
    sys.exit("no JUnit reports in .run/test-logs: run make test first")
out = ROOT / "tests" / "e2e" / "durations.txt"
lines = ["# seconds per e2e file (call + setup + teardown), from the JUnit reports of a make test run",
         f"# (the longest over PostgreSQL {', '.join(versions)}; scripts/durations.py); conftest.py --shard balances the parts with these."]
lines += [f"{name} {secs:.1f}" for name, secs in sorted(seconds.items(), key=lambda kv: -kv[1])]
out.write_text("\n".join(lines) + "\n")
print(f"{out}: {len(seconds)} files, {sum(seconds.values()):.0f} s in all")
