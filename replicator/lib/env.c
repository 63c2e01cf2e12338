/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Object-store options from the environment for ferry, ferry-agent and
 * ferry-replicator: the core's ferry_blobs_options_from() reads the names
 * (AZURE_STORAGE_*, AWS_*, FERRY_CA_BUNDLE, FERRY_INSECURE_HTTP) through
 * getenv, and this file adds the sleep used between retries and the
 * --insecure-http flag, since the programs own policy.
 */
#include "env.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ferry/fault.h"
#include "ferry/log.h"

static void sleep_ns(uint64_t ns)
{
	struct timespec ts = { .tv_sec = (time_t)(ns / 1000000000u),
			       .tv_nsec = (long)(ns % 1000000000u) };
	/* Signals (SIGTERM handlers that set a flag) cut a sleep short; the
	 * remaining time is still slept so backoff stays backoff. */
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

static const char *env_lookup(const char *name)
{
	return getenv(name);
}

/* Set by --insecure-http: program state, like the environment itself. */
static int insecure_http_flag;

int env_blobs_options(struct ferry_blobs_options *ret)
{
	int r = ferry_blobs_options_from(env_lookup, ret);
	if (r < 0)
		return r;
	ret->sleep = sleep_ns;
	ret->insecure_http |= insecure_http_flag;
	return 0;
}

int env_blobs_allow_insecure_http(void)
{
	insecure_http_flag = 1;
	return env_blobs_setup();
}

int env_blobs_setup(void)
{
	struct ferry_blobs_options o;
	int r = env_blobs_options(&o);
	if (r < 0)
		return r;
	return ferry_blobs_set_options(&o);
}

const char *env_blobs_strerror(int err)
{
	switch (err) {
	case -EACCES:
	case -EPERM:
		return "access denied (wrong key, or a SAS token or policy that has expired or "
		       "lacks a permission)";
	case -ENOENT:
		return "the container or bucket does not exist";
	case -ENOKEY:
		return "no credentials: set AZURE_STORAGE_CONNECTION_STRING (or AZURE_STORAGE_ACCOUNT "
		       "with AZURE_STORAGE_KEY or AZURE_STORAGE_SAS_TOKEN) for azblob://, "
		       "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY for s3://";
	case -EINVAL:
		return "malformed URL or credentials";
	case -EPROTONOSUPPORT:
		return "unknown URL scheme (file://, azblob:// and s3:// are known)";
	case -EAGAIN:
	case -ETIMEDOUT:
		return "the service did not answer in time, retries exhausted";
	case -EPROTO:
		return "protocol or TLS error (a private CA needs FERRY_CA_BUNDLE)";
	case -ENOPROTOOPT:
		return "refusing plain http:// to a host other than this machine: keys and data "
		       "would travel in the clear; use https://, or allow it with --insecure-http "
		       "or FERRY_INSECURE_HTTP=1";
	default:
		return strerror(-err);
	}
}

int env_faults_setup(void)
{
	const char *spec = getenv("FERRY_FAULTS");
	if (!spec || !*spec)
		return 0;
	int r = ferry_fault_plan(spec);
	if (r == -EOPNOTSUPP)
		return log_error_errno(r, "FERRY_FAULTS is set, but this build cannot inject "
					  "faults (meson setup -Dfault_injection=true)");
	if (r < 0)
		return log_error_errno(r, "FERRY_FAULTS='%s' does not parse (docs/reliability.md)",
				       spec);
	log_warning("injecting faults: FERRY_FAULTS=%s", spec);
	return 0;
}
