#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# The S3 blobs backend against moto's S3 server on loopback, with SigV4
# enforced: moto starts open, an IAM user with an access key and an s3:*
# policy is made through moto's IAM API, then moto is told to check every
# further request's signature against IAM (/moto-api/reset-auth; both in
# objstore-lib.sh). The C program test-s3-live then runs the blobs API
# (objects, ranges, paginated listings, exclusive puts, locks, wrong secret,
# missing bucket). Skipped where moto is not installed.
. "$(dirname "$0")/objstore-lib.sh"
cd "$T"

moto_available || skip "moto not available: S3 tests need moto's server (python3 -m moto.server)"
LIVE=$BUILD/tests/test-s3-live
[ -x "$LIVE" ] || fail "$LIVE not built"

moto_start
moto_enforce_auth

# Check that moto now refuses what it should: a key it does not know
# (curl's own signer is good enough for a request that must fail).
code=$(curl -s -o /dev/null -w '%{http_code}' --aws-sigv4 aws:amz:us-east-1:s3 \
	-u AKIAUNKNOWN:nope "$MOTO_ENDPOINT/ferry-test")
[ "$code" = 403 ] || fail "moto does not enforce authentication (HTTP $code for an unknown key)"

FERRY_S3_ENDPOINT=$MOTO_ENDPOINT FERRY_S3_AUTH=1 FERRY_S3_BUCKET=ferry-test \
	AWS_ACCESS_KEY_ID=$MOTO_KEY_ID AWS_SECRET_ACCESS_KEY=$MOTO_SECRET AWS_REGION=us-east-1 \
	"$LIVE" > live.tap 2>&1 || { cat live.tap; fail "test-s3-live failed"; }
cat live.tap
grep -q '^not ok' live.tap && fail "test-s3-live reported failures"
note "S3 backend against moto with SigV4 enforced: $(grep -c '^ok' live.tap) checks passed"
