/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Object-store credentials and network policy from the environment, the way
 * the Azure and AWS tools read them, for the programs (the core reads no
 * environment). The strings point into the environment and stay valid for
 * the life of the process.
 */
#pragma once

#include "ferry/blobs.h"

/* Fills ret from AZURE_STORAGE_*, AWS_*, FERRY_CA_BUNDLE, with a real
 * sleep and a retry budget. Never fails today; returns 0. */
int env_blobs_options(struct ferry_blobs_options *ret);
/* env_blobs_options + ferry_blobs_set_options: one call at startup. */
int env_blobs_setup(void);
/* --insecure-http: plain http:// to object stores beyond this machine, as
 * FERRY_INSECURE_HTTP=1 allows; kept for every later env_blobs_options and
 * applied at once (env_blobs_setup). */
int env_blobs_allow_insecure_http(void);
/* What a -errno from opening a remote location most likely means, for an
 * error message that names the URL (never a secret): "access denied (wrong
 * key, or a SAS or policy that is expired or lacks a permission)" for
 * -EACCES, and so on; strerror otherwise. */
const char *env_blobs_strerror(int err);

/* The fault plan of a test build from FERRY_FAULTS (fault.h), one call at
 * startup; -errno, logged, when it is set and does not parse or the build
 * has no fault injection. */
int env_faults_setup(void);
