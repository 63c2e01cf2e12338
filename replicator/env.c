/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Object-store options from the environment for ferry, ferry-agent and
 * ferry-replicator: Azure (AZURE_STORAGE_CONNECTION_STRING, or
 * AZURE_STORAGE_ACCOUNT with AZURE_STORAGE_KEY or AZURE_STORAGE_SAS_TOKEN),
 * AWS (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN,
 * AWS_REGION or AWS_DEFAULT_REGION, AWS_ENDPOINT_URL) and FERRY_CA_BUNDLE.
 * The programs own policy, so the sleep used between retries lives here.
 */
#include "env.h"

#include <errno.h>
#include <stdlib.h>
#include <time.h>

#define MAX_RETRIES 6

static const char *env(const char *name)
{
	const char *v = getenv(name);
	return v && *v ? v : NULL;
}

static void sleep_ns(uint64_t ns)
{
	struct timespec ts = { .tv_sec = (time_t)(ns / 1000000000u),
			       .tv_nsec = (long)(ns % 1000000000u) };
	/* Signals (SIGTERM handlers that set a flag) cut a sleep short; the
	 * remaining time is still slept so backoff stays backoff. */
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

int env_blobs_options(struct ferry_blobs_options *ret)
{
	*ret = (struct ferry_blobs_options){
		.azure_connection_string = env("AZURE_STORAGE_CONNECTION_STRING"),
		.azure_account = env("AZURE_STORAGE_ACCOUNT"),
		.azure_key = env("AZURE_STORAGE_KEY"),
		.azure_sas = env("AZURE_STORAGE_SAS_TOKEN"),
		.aws_access_key_id = env("AWS_ACCESS_KEY_ID"),
		.aws_secret_access_key = env("AWS_SECRET_ACCESS_KEY"),
		.aws_session_token = env("AWS_SESSION_TOKEN"),
		.aws_region = env("AWS_REGION") ?: env("AWS_DEFAULT_REGION"),
		.aws_endpoint_url = env("AWS_ENDPOINT_URL"),
		.ca_bundle = env("FERRY_CA_BUNDLE"),
		.max_retries = MAX_RETRIES,
		.sleep = sleep_ns,
	};
	/* Custom endpoints (moto, MinIO, private clouds) rarely have
	 * wildcard DNS for virtual-host buckets. */
	ret->s3_path_style = ret->aws_endpoint_url != NULL;
	return 0;
}

int env_blobs_setup(void)
{
	struct ferry_blobs_options o;
	int r = env_blobs_options(&o);
	if (r < 0)
		return r;
	return ferry_blobs_set_options(&o);
}
