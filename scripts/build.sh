#!/usr/bin/env bash
# Builds and installs the extension into Debian's PostgreSQL 15 (needs root: writes to
# /usr/lib/postgresql and /usr/share/postgresql). Extra arguments go to `cargo pgrx install`
# (e.g. --release).
#
# `cargo pgrx install` overwrites the library in place, which would corrupt it under a server
# that has it mapped (SIGBUS). Renaming the old file aside first keeps running servers on the old
# inode; they pick up the new library at their next restart.
set -euo pipefail
# shellcheck source=env.sh
. "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$PI_ROOT"
so="$("$PG_CONFIG" --pkglibdir)/pipeline_ingest.so"
if [ -f "$so" ]; then
  mv -f "$so" "$so.old"
fi
if ! cargo pgrx install --pg-config "$PG_CONFIG" "$@"; then
  [ -f "$so" ] || { [ -f "$so.old" ] && mv -f "$so.old" "$so"; }
  exit 1
fi
rm -f "$so.old"
# The install script of every earlier release and the upgrade scripts between releases (cargo pgrx
# install writes only the current version's script).
cp sql/pipeline_ingest--*.sql "$("$PG_CONFIG" --sharedir)/extension/"
