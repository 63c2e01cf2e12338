#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# The S3 blobs backend against moto's S3 server on loopback, with SigV4
# enforced: moto starts open, an IAM user with an access key and an s3:*
# policy is made through moto's IAM API, then moto is told to check every
# further request's signature against IAM (/moto-api/reset-auth). The C
# program test-s3-live then runs the blobs API (objects, ranges, paginated
# listings, exclusive puts, locks, wrong secret, missing bucket). Skipped
# where moto is not installed.
. "$(dirname "$0")/lib.sh"
cd "$T"

python3 -c 'import moto, boto3' 2>/dev/null ||
	skip "moto not available: S3 tests need moto's server (python3 -m moto.server)"
LIVE=$BUILD/tests/test-s3-live
[ -x "$LIVE" ] || fail "$LIVE not built"

PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
ENDPOINT=http://127.0.0.1:$PORT
python3 -m moto.server -H 127.0.0.1 -p "$PORT" > moto.log 2>&1 &
PIDS+=($!)
disown $! # killed by lib.sh's cleanup, without bash reporting it
for _ in $(seq 100); do
	curl -fs "$ENDPOINT/moto-api/" >/dev/null 2>&1 && break
	sleep 0.1
done
curl -fs "$ENDPOINT/moto-api/" >/dev/null || fail "moto did not start: $(tail -5 moto.log)"

# While moto is still open, make a user whose key it will check.
python3 - "$ENDPOINT" > creds.txt <<'PY' || fail "IAM setup in moto failed"
import json, sys, boto3
iam = boto3.client("iam", endpoint_url=sys.argv[1], region_name="us-east-1",
                   aws_access_key_id="setup", aws_secret_access_key="setup")
iam.create_user(UserName="ferry")
iam.put_user_policy(UserName="ferry", PolicyName="s3", PolicyDocument=json.dumps({
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
k = iam.create_access_key(UserName="ferry")["AccessKey"]
print(k["AccessKeyId"], k["SecretAccessKey"])
PY
read -r KEY_ID SECRET < creds.txt
curl -fs -X POST -H 'Content-Type: text/plain' --data-binary 0 "$ENDPOINT/moto-api/reset-auth" >/dev/null || fail "moto reset-auth failed"

# Check that moto now refuses what it should: a key it does not know
# (curl's own signer is good enough for a request that must fail).
code=$(curl -s -o /dev/null -w '%{http_code}' --aws-sigv4 aws:amz:us-east-1:s3 \
	-u AKIAUNKNOWN:nope "$ENDPOINT/ferry-test")
[ "$code" = 403 ] || fail "moto does not enforce authentication (HTTP $code for an unknown key)"

FERRY_S3_ENDPOINT=$ENDPOINT FERRY_S3_AUTH=1 FERRY_S3_BUCKET=ferry-test \
	AWS_ACCESS_KEY_ID=$KEY_ID AWS_SECRET_ACCESS_KEY=$SECRET AWS_REGION=us-east-1 \
	"$LIVE" > live.tap 2>&1 || { cat live.tap; fail "test-s3-live failed"; }
cat live.tap
grep -q '^not ok' live.tap && fail "test-s3-live reported failures"
note "S3 backend against moto with SigV4 enforced: $(grep -c '^ok' live.tap) checks passed"
