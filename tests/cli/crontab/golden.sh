#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Golden tests of `qfctl import crontab`: each case of cases.txt is run in this directory and
# its standard output, standard error and exit status are compared with expected/<name>.*.
# Usage: golden.sh QFCTL [--update]   (--update rewrites the expected files)
set -uo pipefail

QFCTL=$1
UPDATE=${2:-}
cd "$(dirname "$0")"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failed=0
cases=0
while IFS='|' read -r name args; do
  name=${name%%[[:space:]]*}
  [[ -z $name || $name == \#* ]] && continue
  cases=$((cases + 1))
  status=0
  eval "\"\$QFCTL\" import crontab $args" >"$work/$name.yaml" 2>"$work/$name.stderr" || status=$?
  echo "exit status: $status" >>"$work/$name.stderr"
  if [[ $UPDATE == --update ]]; then
    mkdir -p expected
    cp "$work/$name.yaml" "$work/$name.stderr" expected/
    continue
  fi
  for kind in yaml stderr; do
    if ! diff -u "expected/$name.$kind" "$work/$name.$kind"; then
      echo "FAIL: $name: the $kind differs from expected/$name.$kind (above)" >&2
      failed=1
    fi
  done
done <cases.txt
[[ $cases -gt 0 ]] || { echo "FAIL: no cases in cases.txt" >&2; exit 1; }
[[ $failed == 0 ]] && echo "crontab golden tests: $cases cases match"
exit $failed
