/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * SHA-256 through OpenSSL's EVP interface and XXH3-128 fingerprints; the
 * only file that includes OpenSSL headers.
 */
#include "ferry/crypto.h"

#include <errno.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "ferry/util.h"

struct ferry_sha256_ctx {
	EVP_MD_CTX *md;
};

void ferry_sha256(const void *buf, size_t len, struct ferry_id *ret)
{
	unsigned int n = FERRY_ID_SIZE;
	/* EVP_Digest only fails on allocation failure; treat that as fatal
	 * programmer-visible state rather than return a wrong id. */
	if (!EVP_Digest(buf, len, ret->b, &n, EVP_sha256(), NULL))
		abort();
}

int ferry_sha256_new(struct ferry_sha256_ctx **ret)
{
	struct ferry_sha256_ctx *c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->md = EVP_MD_CTX_new();
	if (!c->md || !EVP_DigestInit_ex(c->md, EVP_sha256(), NULL)) {
		ferry_sha256_free(c);
		return -ENOMEM;
	}
	*ret = c;
	return 0;
}

void ferry_sha256_update(struct ferry_sha256_ctx *c, const void *buf, size_t len)
{
	if (!EVP_DigestUpdate(c->md, buf, len))
		abort();
}

void ferry_sha256_final(struct ferry_sha256_ctx *c, struct ferry_id *ret)
{
	unsigned int n = FERRY_ID_SIZE;
	if (!EVP_DigestFinal_ex(c->md, ret->b, &n))
		abort();
}

struct ferry_sha256_ctx *ferry_sha256_free(struct ferry_sha256_ctx *c)
{
	if (c) {
		EVP_MD_CTX_free(c->md);
		free(c);
	}
	return NULL;
}

int ferry_id_is_null(const struct ferry_id *id)
{
	static const struct ferry_id null;
	return memcmp(id, &null, sizeof(null)) == 0;
}

int ferry_id_equal(const struct ferry_id *a, const struct ferry_id *b)
{
	return memcmp(a, b, sizeof(*a)) == 0;
}

char *ferry_id_to_hex(const struct ferry_id *id, char buf[FERRY_ID_HEX_SIZE])
{
	static const char digits[] = "0123456789abcdef";
	for (size_t i = 0; i < FERRY_ID_SIZE; i++) {
		buf[2 * i] = digits[id->b[i] >> 4];
		buf[2 * i + 1] = digits[id->b[i] & 15];
	}
	buf[2 * FERRY_ID_SIZE] = 0;
	return buf;
}

int ferry_id_from_hex(const char *hex, struct ferry_id *ret)
{
	struct ferry_id id;
	if (strlen(hex) != 2 * FERRY_ID_SIZE)
		return -EINVAL;
	for (size_t i = 0; i < FERRY_ID_SIZE; i++) {
		int hi = ferry_hex_digit(hex[2 * i]), lo = ferry_hex_digit(hex[2 * i + 1]);
		if (hi < 0 || lo < 0)
			return -EINVAL;
		id.b[i] = (uint8_t)(hi << 4 | lo);
	}
	*ret = id;
	return 0;
}

void ferry_fingerprint(const void *buf, size_t len, struct ferry_fp *ret)
{
	XXH128_hash_t h = XXH3_128bits(buf, len);
	ret->lo = h.low64;
	ret->hi = h.high64;
}

void ferry_hmac_sha256(const void *key, size_t keylen, const void *data, size_t len,
		       uint8_t out[32])
{
	unsigned int n = 32;
	if (!HMAC(EVP_sha256(), key, (int)keylen, data, len, out, &n))
		abort();
}

int ferry_base64_encode(const void *buf, size_t len, char **ret)
{
	if (len > (SIZE_MAX / 4) * 3 - 3)
		return -E2BIG;
	char *out = malloc(4 * ((len + 2) / 3) + 1);
	if (!out)
		return -ENOMEM;
	EVP_EncodeBlock((unsigned char *)out, buf, (int)len);
	*ret = out;
	return 0;
}

int ferry_base64_decode(const char *s, void **ret_buf, size_t *ret_len)
{
	size_t n = strlen(s);
	if (n % 4 != 0 || n > INT32_MAX)
		return -EINVAL;
	unsigned char *out = malloc(n / 4 * 3 + 1);
	if (!out)
		return -ENOMEM;
	int m = EVP_DecodeBlock(out, (const unsigned char *)s, (int)n);
	if (m < 0) {
		free(out);
		return -EINVAL;
	}
	/* EVP_DecodeBlock counts padding as zero bytes. */
	size_t len = (size_t)m;
	if (n >= 1 && s[n - 1] == '=')
		len--;
	if (n >= 2 && s[n - 2] == '=')
		len--;
	*ret_buf = out;
	*ret_len = len;
	return 0;
}
