/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Hashing: the only module that talks to OpenSSL. Object ids are SHA-256 of
 * the plain bytes; the change tracker's block fingerprints are XXH3-128 (fast,
 * never used as an identity in the vault).
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

#define FERRY_ID_SIZE 32
#define FERRY_ID_HEX_SIZE (FERRY_ID_SIZE * 2 + 1)

struct ferry_id {
	uint8_t b[FERRY_ID_SIZE];
};

void ferry_sha256(const void *buf, size_t len, struct ferry_id *ret);

/* Incremental SHA-256 for checksums over data written in pieces. */
struct ferry_sha256_ctx;
int ferry_sha256_new(struct ferry_sha256_ctx **ret);
void ferry_sha256_update(struct ferry_sha256_ctx *c, const void *buf, size_t len);
void ferry_sha256_final(struct ferry_sha256_ctx *c, struct ferry_id *ret);
struct ferry_sha256_ctx *ferry_sha256_free(struct ferry_sha256_ctx *c);

int ferry_id_is_null(const struct ferry_id *id);
int ferry_id_equal(const struct ferry_id *a, const struct ferry_id *b);
/* Lower-case hex, NUL-terminated; buf must hold FERRY_ID_HEX_SIZE bytes. */
char *ferry_id_to_hex(const struct ferry_id *id, char buf[FERRY_ID_HEX_SIZE]);
/* -EINVAL unless hex is exactly 64 hex digits. */
int ferry_id_from_hex(const char *hex, struct ferry_id *ret);

/* 128-bit block fingerprint for change tracking (not an identity). */
struct ferry_fp {
	uint64_t lo, hi;
};
void ferry_fingerprint(const void *buf, size_t len, struct ferry_fp *ret);

/* HMAC-SHA-256 (request signing: Azure SharedKey, SAS, AWS SigV4). */
void ferry_hmac_sha256(const void *key, size_t keylen, const void *data, size_t len,
		       uint8_t out[32]);
/* Standard base64 with padding; *ret is NUL-terminated, caller frees. */
int ferry_base64_encode(const void *buf, size_t len, char **ret);
/* -EINVAL on anything but canonical padded base64. */
int ferry_base64_decode(const char *s, void **ret_buf, size_t *ret_len);
