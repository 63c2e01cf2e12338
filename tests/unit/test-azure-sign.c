/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Azure SharedKey signing against fixed vectors, no server: the exact string
 * to sign for a path-style emulator request (the account twice in the
 * canonicalized resource, decoded sorted query) and for a virtual-host
 * ranged GET with repeated query names, and the Authorization values. The
 * expected signatures were computed independently with
 * `openssl dgst -sha256 -mac HMAC -macopt hexkey:KEY -binary | base64`
 * over the same strings.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "blobs-internal.h"
#include "ferry/crypto.h"
#include "ferry/util.h"
#include "tap.h"

#define DEV_KEY \
	"Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
#define DATE "Fri, 27 Nov 2026 08:00:00 GMT"

int main(void)
{
	/* 1: Put Block on the emulator, path-style */
	const char *url1 = "http://127.0.0.1:10000/devstoreaccount1/ferry/pre/a/b"
			   "?comp=block&blockid=ZmVycnk%3D";
	const struct ferry_http_header h1[] = {
		{ "x-ms-version", "2021-08-06" },
		{ "If-None-Match", "*" },
		{ "x-ms-date", DATE },
		{ "X-MS-Blob-Type", " BlockBlob " },
	};
	_cleanup_free_ char *sts = NULL, *auth = NULL;
	ok_r(azure_string_to_sign("devstoreaccount1", "PUT", url1, h1, ARRAY_SIZE(h1), 5, &sts),
	     "string to sign 1");
	ok(sts && strcmp(sts, "PUT\n\n\n5\n\n\n\n\n\n*\n\n\n"
			      "x-ms-blob-type:BlockBlob\n"
			      "x-ms-date:" DATE "\n"
			      "x-ms-version:2021-08-06\n"
			      "/devstoreaccount1/devstoreaccount1/ferry/pre/a/b\n"
			      "blockid:ZmVycnk=\n"
			      "comp:block") == 0,
	   "string to sign 1 is canonical");
	void *key = NULL;
	size_t keylen = 0;
	ok_r(ferry_base64_decode(DEV_KEY, &key, &keylen), "decode key");
	ok_r(azure_authorization("devstoreaccount1", key, keylen, "PUT", url1, h1, ARRAY_SIZE(h1),
				 5, &auth),
	     "authorization 1");
	ok(auth && strcmp(auth, "SharedKey devstoreaccount1:"
				"i06XXZ7XcL2TkyTo6OKL3pZHrd40m1n2vzW5ssqiwgE=") == 0,
	   "signature 1: %s", auth ?: "");
	free(key);

	/* 2: ranged GET, virtual host, query names in any case and repeated,
	 * an empty Content-Length for a body-less request */
	const char *url2 = "https://myaccount.blob.core.windows.net/ferry/x"
			   "?restype=container&Marker=c&marker=a%20b";
	const struct ferry_http_header h2[] = {
		{ "Range", "bytes=0-9" },
		{ "x-ms-date", DATE },
		{ "x-ms-version", "2021-08-06" },
	};
	free(sts);
	sts = NULL;
	ok_r(azure_string_to_sign("myaccount", "GET", url2, h2, ARRAY_SIZE(h2), 0, &sts),
	     "string to sign 2");
	ok(sts && strcmp(sts, "GET\n\n\n\n\n\n\n\n\n\n\nbytes=0-9\n"
			      "x-ms-date:" DATE "\n"
			      "x-ms-version:2021-08-06\n"
			      "/myaccount/ferry/x\n"
			      "marker:a b,c\n"
			      "restype:container") == 0,
	   "string to sign 2 is canonical");
	free(auth);
	auth = NULL;
	ok_r(azure_authorization("myaccount", "secret", 6, "GET", url2, h2, ARRAY_SIZE(h2), 0,
				 &auth),
	     "authorization 2");
	ok(auth && strcmp(auth, "SharedKey myaccount:"
				"DYbe5Fn2dxEzhtIVmpTgvskTYKdZ7IzdfafyrEi3dAo=") == 0,
	   "signature 2: %s", auth ?: "");

	/* 3: a URL without a path signs the root; a malformed one is refused */
	free(sts);
	sts = NULL;
	ok_r(azure_string_to_sign("acct", "GET", "https://acct.blob.core.windows.net?comp=list",
				  NULL, 0, 0, &sts),
	     "no path");
	ok(sts && strstr(sts, "\n/acct/\ncomp:list"), "root resource");
	char *none = NULL;
	ok(azure_string_to_sign("acct", "GET", "no-scheme", NULL, 0, 0, &none) == -EINVAL,
	   "no scheme -> EINVAL");
	return tap_done();
}
