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

/* ferry_parse_u64 over a NUL-terminated string. */
static int parse(const char *s, uint64_t max, uint64_t *ret)
{
	return ferry_parse_u64(s, strlen(s), max, ret);
}

static void test_parse_u64(void)
{
	static const struct {
		const char *s;
		uint64_t max, want;
	} good[] = {
		{ "0", UINT64_MAX, 0 },
		{ "7", 7, 7 },
		{ "007", UINT64_MAX, 7 }, /* leading zeros: the caller's rule */
		{ "4096", 65536, 4096 },
		{ "18446744073709551615", UINT64_MAX, UINT64_MAX },
		{ "18446744073709551610", UINT64_MAX, UINT64_C(18446744073709551610) },
		{ "000000000000000000000000001", UINT64_MAX, 1 },
	};
	static const char *const invalid[] = { "",    " 1",  "1 ",  "+1",  "-1", "-0", "0x10",
					       "1e3", "1.0", "12a", "\t1", "\n", "１" };
	static const char *const range[] = { "18446744073709551616", "99999999999999999999",
					     "184467440737095516150" };
	uint64_t v;

	for (size_t i = 0; i < ARRAY_SIZE(good); i++) {
		v = 12345;
		ok(parse(good[i].s, good[i].max, &v) == 0 && v == good[i].want, "'%s' parses",
		   good[i].s);
	}
	for (size_t i = 0; i < ARRAY_SIZE(invalid); i++) {
		v = 12345;
		ok(parse(invalid[i], UINT64_MAX, &v) == -EINVAL && v == 12345,
		   "bad number #%zu is -EINVAL, *ret untouched", i);
	}
	for (size_t i = 0; i < ARRAY_SIZE(range); i++) {
		v = 12345;
		ok(parse(range[i], UINT64_MAX, &v) == -ERANGE && v == 12345,
		   "'%s' overflows: -ERANGE", range[i]);
	}
	ok(parse("8", 7, &v) == -ERANGE, "above max is -ERANGE");
	ok(parse("0", 0, &v) == 0 && v == 0, "max 0 takes 0");
	ok(parse("99999999999999999999x", UINT64_MAX, &v) == -EINVAL,
	   "garbage after an overflow is -EINVAL");
	/* Not NUL-terminated: only len bytes count. */
	ok(ferry_parse_u64("12345", 3, UINT64_MAX, &v) == 0 && v == 123,
	   "length bounds the digits");
	static const char inner_nul[] = { '1', '2', 0, '3' };
	ok(ferry_parse_u64(inner_nul, sizeof(inner_nul), UINT64_MAX, &v) == -EINVAL,
	   "an inner NUL is a non-digit");
	ok(ferry_parse_u64(NULL, 0, UINT64_MAX, &v) == -EINVAL, "NULL with length 0 is empty");
}

static void test_format_time(void)
{
	char buf[FERRY_TIME_STRING_SIZE], small[FERRY_TIME_STRING_SIZE - 1];

	ferry_format_time(0, buf, sizeof(buf));
	ok(strcmp(buf, "1970-01-01T00:00:00Z") == 0, "the epoch");
	ferry_format_time(INT64_C(1769903999999999999), buf, sizeof(buf));
	ok(strcmp(buf, "2026-01-31T23:59:59Z") == 0, "truncated to the second: %s", buf);
	ferry_format_time(INT64_MAX, buf, sizeof(buf));
	ok(strcmp(buf, "2262-04-11T23:47:16Z") == 0, "the largest time: %s", buf);
	ferry_format_time(-1, buf, sizeof(buf));
	ok(strcmp(buf, "unknown") == 0, "a negative time is unknown");
	ferry_format_time(INT64_MIN, buf, sizeof(buf));
	ok(strcmp(buf, "unknown") == 0, "the smallest time is unknown");
	ferry_format_time(0, small, sizeof(small));
	ok(strcmp(small, "unknown") == 0, "too small a buffer says unknown");
}

static mode_t mode_of(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0 ? st.st_mode & 07777 : (mode_t)-1;
}

/* Private by default, whatever the umask: files 0600, directories 0700, an
 * existing directory tightened, a sticky (shared) one left alone. */
static void test_time_arithmetic(void)
{
	ok(ferry_time_since(10, 3) == 7 && ferry_time_since(3, 10) == -7, "since: plain");
	ok(ferry_time_since(INT64_MAX, -1) == INT64_MAX, "since: saturates up");
	ok(ferry_time_since(INT64_MIN, 1) == INT64_MIN, "since: saturates down");
	ok(ferry_seconds_ns(3) == INT64_C(3000000000), "seconds: plain");
	ok(ferry_seconds_ns(INT64_MAX / 1000) == INT64_MAX, "seconds: saturates up");
	ok(ferry_seconds_ns(INT64_MIN / 1000) == INT64_MIN, "seconds: saturates down");
}

static void test_private_modes(void)
{
	char dir[] = "/tmp/ferry-test-modes-XXXXXX";
	char file[64], stale[80], sub[64], deep[80], sticky[64];
	mode_t old = umask(0);

	if (!mkdtemp(dir)) {
		ok(0, "mkdtemp");
		umask(old);
		return;
	}
	snprintf(file, sizeof(file), "%s/f", dir);
	snprintf(stale, sizeof(stale), "%s/f.tmp.%ld", dir, (long)getpid());
	snprintf(sub, sizeof(sub), "%s/d", dir);
	snprintf(deep, sizeof(deep), "%s/d/e/f", dir);
	snprintf(sticky, sizeof(sticky), "%s/t", dir);

	ok_r(ferry_write_file_atomic(file, "x", 1), "atomic write under umask 0");
	ok(mode_of(file) == FERRY_FILE_MODE, "written file is 0600, not 0666 or 0644");
	close(open(stale, O_CREAT | O_WRONLY, 0666));
	chmod(stale, 0666);
	ok_r(ferry_write_file_atomic(file, "y", 1), "atomic write over a stale temp file");
	ok(mode_of(file) == FERRY_FILE_MODE, "a stale 0666 temp file does not lend its mode");

	ok_r(ferry_mkdir_p(deep, FERRY_DIR_MODE), "mkdir -p under umask 0");
	ok(mode_of(sub) == FERRY_DIR_MODE && mode_of(deep) == FERRY_DIR_MODE,
	   "made directories are 0700, parents too");
	chmod(deep, 0777);
	ok_r(ferry_mkdir_p(deep, FERRY_DIR_MODE), "mkdir -p of an existing 0777 directory");
	ok(mode_of(deep) == FERRY_DIR_MODE, "an existing 0777 directory is tightened to 0700");
	chmod(sub, 0755);
	ok(mode_of(sub) == 0755, "an existing parent is not the one asked for: left");

	int fd = open(deep, O_RDONLY | O_DIRECTORY);
	chmod(deep, 02775);
	ok(ferry_dir_restrict(fd, FERRY_DIR_MODE) == 1, "restrict reports a change");
	ok(mode_of(deep) == 02700, "restrict keeps setgid, drops group and other");
	ok(ferry_dir_restrict(fd, FERRY_DIR_MODE) == 0,
	   "restrict of a private directory: no change");
	close(fd);
	ok(mkdir(sticky, 0) == 0 && chmod(sticky, 01777) == 0, "a sticky directory like /tmp");
	ok_r(ferry_mkdir_p(sticky, FERRY_DIR_MODE), "mkdir -p of a sticky directory");
	ok(mode_of(sticky) == 01777, "a sticky (shared) directory is left alone");

	char cmd[80];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	ok(system(cmd) == 0, "cleanup");
	umask(old);
}

int main(void)
{
	test_parse_u64();
	test_format_time();
	test_time_arithmetic();
	test_private_modes();

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
