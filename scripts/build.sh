#!/usr/bin/env bash
# Builds and installs the extension into Debian's PostgreSQL 15 (needs root: writes to /usr/lib/postgresql and /usr/share/postgresql).
set -euo pipefail
# shellcheck source=env.sh
. "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$PI_ROOT"
cargo pgrx install --pg-config "$PG_CONFIG" "$@"
