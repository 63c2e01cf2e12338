# SPDX-License-Identifier: LGPL-2.1-or-later
# Object-store servers for the integration tests, on loopback: Azurite (the
# Azure Storage emulator, a pinned npm package installed once into a cache
# outside the repository, blob service only, telemetry off) and moto's S3
# server (where the machine has it; it is not installable here). Source it
# after nothing else: it sources lib.sh, whose cleanup kills the servers
# started here (their pids go into PIDS).

. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

AZURITE_VERSION=3.35.0
AZURITE_CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/ferry-test/azurite
# ferryfs keeps a disk cache for remote stores under XDG_CACHE_HOME: the
# tests' mounts keep theirs in the scratch directory, not the user's.
export XDG_CACHE_HOME=$T/xdg-cache
# The well-known development account of Azurite and the Azure SDKs; not a
# secret, but the tests treat it as one (it must never show in messages).
AZURITE_ACCOUNT=devstoreaccount1
AZURITE_KEY=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==

# A free port: the kernel picks one for a socket we close right away.
free_port() {
	python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null ||
		echo $((20000 + RANDOM % 20000))
}

# Installs azurite@AZURITE_VERSION unless the cache has it; skips (77) with
# the reason where node, npm or the install is missing.
azurite_install() {
	command -v node >/dev/null || skip "node missing (Debian package nodejs)"
	local installed
	installed=$(sed -n 's/^  "version": "\(.*\)",$/\1/p' \
		"$AZURITE_CACHE/node_modules/azurite/package.json" 2>/dev/null || true)
	if [ "$installed" != "$AZURITE_VERSION" ] || [ ! -x "$AZURITE_CACHE/node_modules/.bin/azurite-blob" ]; then
		command -v npm >/dev/null || skip "npm missing (Debian package npm)"
		mkdir -p "$AZURITE_CACHE"
		npm install --prefix "$AZURITE_CACHE" --no-audit --no-fund "azurite@$AZURITE_VERSION" \
			>"$AZURITE_CACHE/install.log" 2>&1 ||
			skip "npm install azurite@$AZURITE_VERSION failed (see $AZURITE_CACHE/install.log)"
	fi
}

# Starts Azurite's blob service; sets AZ_PORT, AZ_PID, AZ_ENDPOINT (the
# account's blob endpoint) and exports AZURE_STORAGE_CONNECTION_STRING.
azurite_start() {
	azurite_install
	AZ_PORT=$(free_port)
	"$AZURITE_CACHE/node_modules/.bin/azurite-blob" --blobHost 127.0.0.1 --blobPort "$AZ_PORT" \
		--inMemoryPersistence --disableTelemetry --silent >"$T/azurite.log" 2>&1 &
	AZ_PID=$!
	PIDS+=("$AZ_PID")
	disown "$AZ_PID" # killed by lib.sh's cleanup, without bash reporting it
	AZ_ENDPOINT=http://127.0.0.1:$AZ_PORT/$AZURITE_ACCOUNT
	local _
	for _ in $(seq 100); do
		curl -s -o /dev/null "$AZ_ENDPOINT?comp=list" && break
		kill -0 "$AZ_PID" 2>/dev/null || { cat "$T/azurite.log" >&2; fail "azurite died"; }
		sleep 0.1
	done
	curl -s -o /dev/null "$AZ_ENDPOINT?comp=list" || fail "azurite did not start"
	export AZURE_STORAGE_CONNECTION_STRING
	AZURE_STORAGE_CONNECTION_STRING=$(azurite_connection_string "$AZ_ENDPOINT")
}

# The connection string for a blob endpoint (Azurite's, or a proxy's).
azurite_connection_string() { # ENDPOINT [KEY]
	echo "DefaultEndpointsProtocol=http;AccountName=$AZURITE_ACCOUNT;AccountKey=${2:-$AZURITE_KEY};BlobEndpoint=$1;"
}

# A service SAS for a container (signed version 2020-12-06), made with the
# account key: PERMS like "racwdl", EXPIRY like 2030-01-01T00:00:00Z.
azurite_sas() { # CONTAINER PERMS EXPIRY
	python3 - "$AZURITE_ACCOUNT" "$AZURITE_KEY" "$1" "$2" "$3" <<'PY'
import base64, hashlib, hmac, sys, urllib.parse
account, key, container, perms, expiry = sys.argv[1:6]
start, version, resource = "2020-01-01T00:00:00Z", "2020-12-06", "c"
# Service SAS string-to-sign for 2020-12-06 and later (16 fields).
fields = [perms, start, expiry, f"/blob/{account}/{container}", "", "", "http",
          version, resource, "", "", "", "", "", "", ""]
sig = base64.b64encode(hmac.new(base64.b64decode(key), "\n".join(fields).encode(),
                                hashlib.sha256).digest()).decode()
q = {"sv": version, "st": start, "se": expiry, "sr": resource, "sp": perms,
     "spr": "http", "sig": sig}
print(urllib.parse.urlencode(q))
PY
}

# Creates (PUT) or deletes (DELETE) a container, signed with SharedKey by
# the test's own python, independent of Ferry's signer.
azurite_container() { # PUT|DELETE CONTAINER
	python3 - "$1" "$AZ_ENDPOINT" "$AZURITE_ACCOUNT" "$AZURITE_KEY" "$2" <<'PY'
import base64, hashlib, hmac, sys, urllib.request
from email.utils import formatdate
method, ep, acct, key, cont = sys.argv[1:6]
h = {"x-ms-date": formatdate(usegmt=True), "x-ms-version": "2021-08-06"}
canon_h = "".join(f"{k}:{v}\n" for k, v in sorted(h.items()))
# Content-Length is empty for a zero-length body (version 2015-02-21 on).
sts = method + "\n" * 12 + canon_h + f"/{acct}/{acct}/{cont}\nrestype:container"
sig = base64.b64encode(hmac.new(base64.b64decode(key), sts.encode(), hashlib.sha256).digest())
h["Authorization"] = f"SharedKey {acct}:{sig.decode()}"
urllib.request.urlopen(urllib.request.Request(f"{ep}/{cont}?restype=container",
                                              method=method, headers=h))
PY
}

# Lists the blob names of a container (SharedKey via the test's python), one
# per line; empty for a missing container.
azurite_list() { # CONTAINER
	local sas
	sas=$(azurite_sas "$1" rl 2099-01-01T00:00:00Z)
	curl -s "$AZ_ENDPOINT/$1?restype=container&comp=list&$sas" |
		python3 -c 'import re,sys; [print(n) for n in re.findall(r"<Name>([^<]*)</Name>", sys.stdin.read())]'
}

# Whether moto's S3 server can run here.
moto_available() {
	python3 -c 'import moto, boto3' 2>/dev/null
}

# Starts moto on a free port; sets MOTO_ENDPOINT and MOTO_PID.
moto_start() {
	local port _
	port=$(free_port)
	MOTO_ENDPOINT=http://127.0.0.1:$port
	python3 -m moto.server -H 127.0.0.1 -p "$port" >"$T/moto.log" 2>&1 &
	MOTO_PID=$!
	PIDS+=("$MOTO_PID")
	disown "$MOTO_PID"
	for _ in $(seq 100); do
		curl -fs "$MOTO_ENDPOINT/moto-api/" >/dev/null 2>&1 && break
		sleep 0.1
	done
	curl -fs "$MOTO_ENDPOINT/moto-api/" >/dev/null || fail "moto did not start: $(tail -5 "$T/moto.log")"
}

# Makes an IAM user with an s3:* policy while moto is still open, then tells
# moto to check every further signature; sets MOTO_KEY_ID and MOTO_SECRET.
moto_enforce_auth() {
	python3 - "$MOTO_ENDPOINT" >"$T/moto-creds.txt" <<'PY' || fail "IAM setup in moto failed"
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
	read -r MOTO_KEY_ID MOTO_SECRET <"$T/moto-creds.txt"
	curl -fs -X POST -H 'Content-Type: text/plain' --data-binary 0 \
		"$MOTO_ENDPOINT/moto-api/reset-auth" >/dev/null || fail "moto reset-auth failed"
}

# Makes a bucket with the given credentials (S3 buckets are not created by
# ferry: the bucket is the administrator's, with its policy).
moto_make_bucket() { # BUCKET
	python3 - "$MOTO_ENDPOINT" "$MOTO_KEY_ID" "$MOTO_SECRET" "$1" <<'PY' || fail "cannot create bucket $1"
import sys, boto3
s3 = boto3.client("s3", endpoint_url=sys.argv[1], region_name="us-east-1",
                  aws_access_key_id=sys.argv[2], aws_secret_access_key=sys.argv[3])
s3.create_bucket(Bucket=sys.argv[4])
PY
}
