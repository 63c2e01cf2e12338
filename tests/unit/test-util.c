/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The shared helpers: name validation (names become paths, object names and
 * SQL values), little-endian codecs, atomic whole-file writes, exact reads,
 * and hex ids.
 */
#include "ferry/util.h"

#include <fcntl.h>
#include <sys/stat.h>

#include "ferry/crypto.h"
#include "tap.h"

int main(void)
{
	static const char *const good[] = { "web1", "a", "db-01.prod", "A_b-c.d", "0" };
	static const char *const bad[] = {
		"",
		".",
		"..",
		".hidden",
		"-rf",
		"a/b",
		"a b",
		"x\n",
		"semi;colon",
		"quote'",
		"\xc3\xa9",
		"0123456789012345678901234567890123456789012345678901234567890123456789"
	};
	for (size_t i = 0; i < ARRAY_SIZE(good); i++)
		ok(ferry_name_valid(good[i]), "name '%s' is valid", good[i]);
	for (size_t i = 0; i < ARRAY_SIZE(bad); i++)
		ok(!ferry_name_valid(bad[i]), "hostile name #%zu is refused", i);
	ok(!ferry_name_valid(NULL), "NULL name is refused");

	uint8_t b[8];
	put_le16(b, 0x1234);
	ok(b[0] == 0x34 && b[1] == 0x12 && get_le16(b) == 0x1234, "le16");
	put_le32(b, 0xdeadbeef);
	ok(b[0] == 0xef && get_le32(b) == 0xdeadbeef, "le32");
	put_le64(b, UINT64_C(0x0102030405060708));
	ok(b[0] == 8 && b[7] == 1 && get_le64(b) == UINT64_C(0x0102030405060708), "le64");

	char dir[] = "/tmp/ferry-test-util-XXXXXX";
	ok(mkdtemp(dir) != NULL, "mkdtemp");
	char path[128], deep[160];
	snprintf(path, sizeof(path), "%s/file", dir);
	snprintf(deep, sizeof(deep), "%s/a/b/c", dir);
	ok_r(ferry_mkdir_p(deep, 0755), "mkdir -p");
	ok_r(ferry_mkdir_p(deep, 0755), "mkdir -p of an existing path");

	ok_r(ferry_write_file_atomic(path, "hello", 5), "atomic write");
	ok_r(ferry_write_file_atomic(path, "bye", 3), "atomic replace");
	void *buf;
	size_t len;
	ok_r(ferry_read_file(path, &buf, &len), "read file");
	ok(len == 3 && memcmp(buf, "bye", 3) == 0 && ((char *)buf)[3] == 0,
	   "replaced whole, NUL-terminated");
	free(buf);

	int fd = open(path, O_RDONLY);
	char tmp[8];
	ok(ferry_pread_all(fd, tmp, 3, 0) == 0, "exact read");
	ok(ferry_pread_all(fd, tmp, 4, 0) == -EBADMSG, "read past the end is -EBADMSG");
	close(fd);
	ok(ferry_read_file("/nonexistent/ferry", &buf, &len) == -ENOENT, "missing file is -ENOENT");

	struct ferry_id id, back;
	ferry_sha256("abc", 3, &id);
	char hex[FERRY_ID_HEX_SIZE];
	ok(strcmp(ferry_id_to_hex(&id, hex),
		  "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad") == 0,
	   "SHA-256 of 'abc' matches the FIPS 180-2 vector");
	ok_r(ferry_id_from_hex(hex, &back), "hex round trip");
	ok(ferry_id_equal(&id, &back), "hex round trip equal");
	ok(ferry_id_from_hex("zz", &back) == -EINVAL, "short hex refused");
	hex[10] = 'g';
	ok(ferry_id_from_hex(hex, &back) == -EINVAL, "non-hex digit refused");

	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	ok(system(cmd) == 0, "cleanup");
	return tap_done();
}
