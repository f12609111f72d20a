#!/bin/sh
# The application's tests, run inside the built image (the seed's `npm test` step).
set -eu
fail=0
check() {
    got=$(sh /app/app.sh "$1")
    name="${1:-(no name)}"
    if [ "$got" = "$2" ]; then echo "ok   - $name"; else echo "FAIL - $name: got '$got', want '$2'"; fail=1; fi
}
check "" "hello, world"
check "ci" "hello, ci"
[ "$fail" -eq 0 ] && echo "tests passed"
exit "$fail"
