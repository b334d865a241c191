#!/usr/bin/env bash
# The benchmark's remediation as a plain bash + curl script: the floor for a process-per-step
# approach (no sandbox, no record, no rollback).
set -euo pipefail
host=${1:-127.0.0.1:18088}
version=${2:-v2}
curl -fsS -o /dev/null "http://$host/health"
curl -fsS -o /dev/null -X POST --data "$version" "http://$host/deploy"
[ "$(curl -fsS "http://$host/version")" = "$version" ]
curl -fsS -o /dev/null "http://$host/health"
