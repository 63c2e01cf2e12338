/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Fuzz target for the readers of ferry-agent's state files (agent-scan.c,
 * docs/format/agent-state.md): the progress file and the fingerprint file
 * header. Both are files a crash or a full disk may have damaged; they must
 * be refused cleanly, never half-read. Each input is tried as a progress
 * file (as it is, and with its checksum line recomputed so that mutations
 * reach the key/value checks behind the SHA-256) and as a fingerprint file
 * (as it is, and with its header checksum recomputed).
 */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent-scan-internal.h"
#include "ferry/crypto.h"
#include "ferry/util.h"

#define VM "vm1"
#define DISKS "os,data"
/* The fingerprint header: its size and where its checksum sits. */
#define FP_HDR 64u
#define FP_HDRSUM 56u

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void progress_one(const char *data, size_t size)
{
	/* The parser wants a NUL after the text and writes into it. */
	_cleanup_free_ char *text = malloc(size + 1);
	if (!text)
		return;
	memcpy(text, data, size);
	text[size] = 0;
	struct progress pr;
	int r = agent_progress_parse(text, size, VM, DISKS, &pr);
	if (r < 0) {
		if (r != -EBADMSG && r != -EPROTONOSUPPORT && r != -EXDEV && r != -ECHILD)
			abort();
		return;
	}
	if (pr.cycle == 0 || pr.next_seq == 0 || (unsigned)pr.state > P_COMMITTING ||
	    (pr.next_seq == 1) != !!ferry_id_is_null(&pr.prev))
		abort();
}

/* The input with its last line, when it is a checksum line, replaced by
 * the right one. */
static void progress_fixed(const uint8_t *data, size_t size)
{
	size_t body = size;
	const uint8_t *nl = size > 1 ? memrchr(data, '\n', size - 1) : NULL;
	size_t last = nl ? (size_t)(nl + 1 - data) : 0;
	if (size - last >= 9 && memcmp(data + last, "checksum=", 9) == 0)
		body = last;
	struct ferry_id sum;
	ferry_sha256(data, body, &sum);
	char hex[FERRY_ID_HEX_SIZE];
	ferry_id_to_hex(&sum, hex);
	size_t n = body + 9 + strlen(hex) + 1;
	_cleanup_free_ char *fixed = malloc(n);
	if (!fixed)
		return;
	memcpy(fixed, data, body);
	memcpy(fixed + body, "checksum=", 9);
	memcpy(fixed + body + 9, hex, strlen(hex));
	fixed[n - 1] = '\n';
	progress_one(fixed, n);
}

static void fp_one(const uint8_t *data, size_t size)
{
	_cleanup_close_ int fd = memfd_create("fuzz-fp", MFD_CLOEXEC);
	if (fd < 0 || (size && ferry_pwrite_all(fd, data, size, 0) < 0))
		return;
	uint64_t disk_size;
	uint32_t flags;
	uint8_t sum[16];
	int r = agent_fp_header_read(fd, &disk_size, &flags, sum);
	if (r < 0) {
		if (r != -EBADMSG && r != -EPROTONOSUPPORT)
			abort();
		return;
	}
	if (size < FP_HDR || memcmp(data, "FERRY-FP", 8) != 0 || memcmp(sum, data + 40, 16) != 0 ||
	    disk_size > (UINT64_C(1) << 62) || size != FP_HDR + DIV_ROUND_UP(disk_size, 4096) * 16)
		abort();
}

static void fp_fixed(const uint8_t *data, size_t size)
{
	if (size < FP_HDR)
		return;
	_cleanup_free_ uint8_t *fixed = malloc(size);
	if (!fixed)
		return;
	memcpy(fixed, data, size);
	struct ferry_fp fp;
	ferry_fingerprint(fixed, FP_HDRSUM, &fp);
	put_le64(fixed + FP_HDRSUM, fp.lo);
	fp_one(fixed, size);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	progress_one((const char *)data, size);
	progress_fixed(data, size);
	fp_one(data, size);
	fp_fixed(data, size);
	return 0;
}
